"""RtlSession on Verilator and Icarus: whole programs in one running simulator.

Two different GEMMs back to back in one session (bit-exact against the golden model, with
plausible performance counters), DRAM backdoor access at odd addresses, DECERR from an
address beyond the DRAM reaching the accelerator's error path and a clean run after it,
a run that hits its cycle limit, runs stopped at every point of a program then rerun
after the soft reset, the build cache, the Verilator build's public signals,
and a simulator that dies.
"""

from __future__ import annotations

import gc
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden, isa, perf, regs
from llmchip.sw.compile import Schedule, plan_gemm
from llmchip.tb.dram import SYSTEM_PUBLIC_VLT
from llmchip.tb.session import RtlSession, RunTimeout, build_system
from llmchip.tb.sim import SimulationError, cached_build

SIMS = ["verilator", "icarus"]
CFG = AcceleratorConfig(rows=4, cols=4, bus_bits=128, sp_rows=256, acc_rows=64, param_rows=8)
DRAM = 1 << 20


@pytest.fixture(scope="module", params=SIMS)
def session(request):
    with RtlSession(CFG, request.param, dram_bytes=DRAM) as s:
        yield s


def random_plan(rng, m, k, n, **kw):
    x = golden.random_operands(rng, (m, k))
    w = golden.random_operands(rng, (k, n))
    bias = rng.integers(-5000, 5000, size=n)
    mult, shift = golden.quantize_multiplier(rng.uniform(2e-4, 4e-3, size=n))
    return plan_gemm(CFG, x, w, bias, mult, shift, zero_point=int(rng.integers(-20, 20)),
                     relu=bool(rng.integers(2)), **kw)


def program_counters(plan) -> dict:
    """Counters the performance model derives from the program alone (exact for these)."""
    res = perf.simulate(plan.program, CFG)
    return {"PERF_ARRAY_BUSY": res.array_busy, "PERF_MACS": res.macs,
            "PERF_DMA_RD_BYTES": res.dram_read_bytes, "PERF_DMA_WR_BYTES": res.dram_write_bytes}


def check_clean(result) -> None:
    assert result["error"] == 0 and result["done"], hex(result["STATUS"])
    assert result["IRQ_STATUS"] == regs.IRQ_DONE
    assert result["PERF_CYCLES"] >= result["PERF_BUSY"] >= result["PERF_ARRAY_BUSY"] > 0
    # The doorbell-to-interrupt time and the busy counter agree to within the CSR latency.
    assert 0 <= result["cycles"] - result["PERF_BUSY"] < 40
    assert result["wall_s"] > 0 and result["cycles_per_s"] > 0


def test_two_gemms_back_to_back(session, rng):
    plans = [random_plan(rng, 9, 13, 11, schedule=Schedule(9, 1, 4095, 9)),
             random_plan(rng, 12, 10, 7, m_tile=5, base=DRAM // 2)]
    assert {p.schedule for p in plans} == {"resident", "streaming"}
    for plan in plans:
        y, result = session.run_plan(plan)
        np.testing.assert_array_equal(y, plan.expected)
        check_clean(result)
        for name, value in program_counters(plan).items():
            assert result[name] == value, name
        assert result["IQ_HEAD"] == len(plan.program)
    # The first program again, from its own ring base, with its Y cleared beforehand.
    session.write(plans[0].y_addr, bytes(plans[0].m * plans[0].n))
    y, result = session.run_plan(plans[0])
    np.testing.assert_array_equal(y, plans[0].expected)


def test_backdoor_roundtrip_at_odd_addresses(session, rng):
    data = rng.bytes(1000)
    for addr in (0x1_0003, 0x2_000F, 0x3_0010):
        session.write(addr, data)
        assert session.read(addr, len(data)) == data
        assert session.read(addr - 3, 3) == bytes(3)          # neighbours untouched
        assert session.read(addr + len(data), 5) == bytes(5)
    session.write(DRAM - 7, b"tail!!!")
    assert session.read(DRAM - 7, 7) == b"tail!!!"
    assert session.read(0, 0) == b""
    with pytest.raises(ValueError, match="past the end"):
        session.write(DRAM - 2, b"abc")
    with pytest.raises(ValueError, match="past the end"):
        session.read(DRAM, 1)


def test_bulk_writes_go_through_the_loader(session, rng):
    """Writes of 256 words or more are loaded from a file at the next clock edge: odd
    ends merge with their neighbours, and a GEMM reads what was loaded."""
    data = rng.bytes(50_000)
    for addr in (0x4_0005, 0x6_0000):
        session.write(addr - 4, b"keep")
        session.write(addr + len(data), b"also")
        session.write(addr, data)
        assert session.read(addr, len(data)) == data
        assert session.read(addr - 4, 4) == b"keep"
        assert session.read(addr + len(data), 4) == b"also"
    assert (session.work / "llmchip_dram_load.hex").stat().st_size > 50_000 * 2
    test_two_gemms_back_to_back(session, rng)


def test_decerr_beyond_dram_then_clean_run(session, rng):
    """A LOAD from just past the DRAM (inside the DMA window) gets DECERR from SimDram."""
    prog = [isa.encode("config", zero_point=0, relu=0),
            isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=2, row_bytes=4, dram_addr=DRAM + 64,
                       dram_stride=4, sram_addr=0),
            isa.encode("end")]
    base = DRAM - 4096
    session.write(base, isa.assemble(prog))
    result = session.run(base, len(prog), limit_cycles=5000, window=(0, 2 * DRAM))
    assert result["error"] == regs.ErrorCode.DMA_DECERR, hex(result["STATUS"])
    assert result["ERROR_INFO"] == 1
    # END right behind the failing LOAD must not report the program done.
    assert result["IRQ_STATUS"] == regs.IRQ_ERROR, hex(result["IRQ_STATUS"])
    assert not result["STATUS"] & 0b100, hex(result["STATUS"])
    # The next run soft-resets first: no error left over, results correct.
    plan = random_plan(rng, 3, 5, 6)
    y, result = session.run_plan(plan)
    np.testing.assert_array_equal(y, plan.expected)
    check_clean(result)


def test_cycle_limit_raises_with_registers_then_recovers(session, rng):
    plan = random_plan(rng, 6, 9, 10)
    for addr, data in plan.image.regions.items():
        session.write(addr, data)
    with pytest.raises(RunTimeout, match="no interrupt within 60 cycles.*STATUS=") as info:
        session.run(plan.prog_addr, len(plan.program), limit_cycles=60)
    assert info.value.state["STATUS"] & 1          # still busy
    assert 0 < info.value.state["IQ_HEAD"] <= len(plan.program)
    y, result = session.run_plan(plan)
    np.testing.assert_array_equal(y, plan.expected)
    check_clean(result)


def test_soft_reset_at_every_point_of_a_program_then_clean_run(session, rng):
    """A run stopped every few cycles of a program, during its LOADs, MATMULs and STOREs
    (an aborted STORE never takes its DMA completion itself): the next run's soft reset
    reaches idle and the program then runs bit-exact."""
    plan = random_plan(rng, 6, 9, 10)
    for addr, data in plan.image.regions.items():
        session.write(addr, data)
    y, result = session.run_plan(plan)
    np.testing.assert_array_equal(y, plan.expected)
    for limit in range(5, result["cycles"] - 5, 5):
        with pytest.raises(RunTimeout):
            session.run(plan.prog_addr, len(plan.program), limit_cycles=limit)
        y, result_after = session.run_plan(plan)
        np.testing.assert_array_equal(y, plan.expected, err_msg=f"stopped at {limit}")
        check_clean(result_after)


def test_run_arguments_are_checked(session):
    with pytest.raises(ValueError, match="aligned"):
        session.run(8, 1)
    with pytest.raises(ValueError, match="n_insns"):
        session.run(0, 0)


def test_second_session_reuses_the_build(session):
    sim = session.sim
    assert build_system(CFG, sim, dram_bytes=DRAM).cached
    t0 = time.perf_counter()
    s = RtlSession(CFG, sim, dram_bytes=DRAM)
    assert s.build.cached and s.build.directory == session.build.directory
    assert time.perf_counter() - t0 < 60
    s.write(16, b"\x01\x02")
    assert s.read(15, 4) == b"\x00\x01\x02\x00"
    proc, work = s._proc, s.work
    del s                          # garbage collection closes the session
    gc.collect()
    assert proc.poll() == 0
    assert not Path(work).exists()


def test_verilator_system_is_built_without_public_flat_rw(session):
    """Only the ports and the DRAM array are public; the model's command line shows it."""
    if session.sim != "verilator":
        assert not (session.build.directory / "src" / "public.vlt").exists()
        return
    vlt = session.build.directory / "src" / "public.vlt"
    assert vlt.read_text() == SYSTEM_PUBLIC_VLT
    dat = (session.build.directory / "obj" / "Vtop__verFiles.dat").read_text().splitlines()
    (command,) = [line for line in dat if line.startswith("C ")]
    assert str(vlt) in command and "--vpi" in command and "--public-flat-rw" not in command


def test_public_is_verilator_only(tmp_path):
    with pytest.raises(ValueError, match="Verilator builds only"):
        cached_build(text="", sidecar={}, module="m", label="m", sim="icarus",
                     write_sources=None, root=tmp_path, public=SYSTEM_PUBLIC_VLT)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_simulator_death_is_reported():
    s = RtlSession(CFG, "verilator", dram_bytes=DRAM)
    sims = _children(s._proc.pid)
    assert len(sims) == 1
    os.kill(sims[0], signal.SIGKILL)
    with pytest.raises(SimulationError, match="lost the simulator.*exited with code 1"):
        s.read(0, 16)
    assert s.closed
    s.close()                      # nothing left to do
    with pytest.raises(SimulationError, match="closed"):
        s.read(0, 16)
    shutil.rmtree(s.work)          # kept for post-mortems; nothing to see here
