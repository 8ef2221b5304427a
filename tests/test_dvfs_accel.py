"""The DVFS controller inside the accelerator, on the RTL session (Verilator and Icarus).

The controller's registers answer through the accelerator's AXI4-Lite port; a lower
operating point really slows the core (its clock enable), so the same GEMM gives the same
bit-exact Y and the same event counters in proportionally more cycles; the utilization
governor sees the array's and DMA's work; a hot reading throttles and modulates; a
critical one gates the clock, latches thermtrip and interrupts, and no program runs
afterwards.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmchip.config import AcceleratorConfig
from llmchip.rtl.accelerator import dvfs_params
from llmchip.sw import golden, perf, regs
from llmchip.sw.compile import plan_gemm
from llmchip.sw.dvfs import Governor
from llmchip.tb.session import RtlSession, RunTimeout

CFG = AcceleratorConfig(rows=4, cols=4, bus_bits=128, sp_rows=256, acc_rows=64, param_rows=8,
                        dvfs=True, dvfs_tick_cycles=4)
DRAM = 1 << 20
REG = {r.name: r.offset for r in regs.REGISTERS}
OPPS = dvfs_params(CFG).opps
TOP = len(OPPS) - 1
EVENTS = ("PERF_ARRAY_BUSY", "PERF_MACS", "PERF_DMA_RD_BYTES", "PERF_DMA_WR_BYTES")


def status(session) -> dict:
    return regs.fields_of("DVFS_STATUS", session.csr_read(REG["DVFS_STATUS"]))


def settle(session, index: int, cycles: int = 200_000) -> None:
    """Advance until the applied operating point is ``index`` with no transition in flight."""
    step = 2000
    for _ in range(cycles // step):
        s = status(session)
        if s["index"] == index and s["f_index"] == index and s["seq"] == 0:
            return
        session.advance(step)
    raise AssertionError(f"operating point {index} not reached: {status(session)}")


def plan(rng):
    x = golden.random_operands(rng, (24, 20))
    w = golden.random_operands(rng, (20, 12))
    bias = rng.integers(-5000, 5000, size=12)
    mult, shift = golden.quantize_multiplier(rng.uniform(2e-4, 4e-3, size=12))
    return plan_gemm(CFG, x, w, bias, mult, shift, zero_point=3, relu=False)


def run_exact(session, p) -> dict:
    session.write(p.y_addr, bytes(p.m * p.n))
    y, result = session.run_plan(p, limit_cycles=2_000_000)
    np.testing.assert_array_equal(y, p.expected)
    assert result["error"] == 0 and result["done"]
    model = perf.simulate(p.program, CFG)
    assert [result[k] for k in EVENTS] == [model.array_busy, model.macs,
                                           model.dram_read_bytes, model.dram_write_bytes]
    return result


@pytest.fixture(scope="module")
def verilator():
    with RtlSession(CFG, "verilator", dram_bytes=DRAM) as s:
        yield s


def test_registers_through_the_csr_port(verilator):
    s = verilator
    assert regs.fields_of("CFG_ARRAY", s.csr_read(REG["CFG_ARRAY"]))["dvfs"] == 1
    assert s.csr_read(REG["DVFS_CTRL"]) & 3 == Governor.PERFORMANCE
    assert s.csr_read(REG["DVFS_OPP0"]) == OPPS[0][0] | OPPS[0][1] << 12
    s.csr_write(REG["DVFS_GOV_TUNE"], 70 | 30 << 8)
    assert s.csr_read(REG["DVFS_GOV_TUNE"]) == 70 | 30 << 8
    s.csr_write(REG["DVFS_GOV_TUNE"], 80 | 20 << 8)
    # Unmapped offsets inside the window are bus errors like any other (read as 0).
    assert s.csr_read(0x2FC) == 0
    # The core registers still work next to the window.
    assert s.csr_read(REG["ID"]) == regs.ID_MAGIC
    settle(s, TOP)
    assert status(s)["reason"] == 0


def test_lower_points_cost_wall_clock_cycles(verilator, rng):
    """Same program, bit-exact, same event counts; the core's cycles scale with fmax / f,
    the memory's latency (on the bus side of the clock enable) does not: the performance
    model with that latency in core cycles, times fmax / f, predicts the slow run."""
    s = verilator
    p = plan(rng)
    settle(s, TOP)
    top = run_exact(s, p)["PERF_BUSY"]
    model = perf.simulate(p.program, CFG).cycles
    assert abs(top - model) <= 0.05 * model + 20, (top, model)
    for index in (0, 3):
        s.csr_write(REG["DVFS_PMAX"], index)
        settle(s, index)
        slow = run_exact(s, p)["PERF_BUSY"]
        ratio = OPPS[TOP][0] / OPPS[index][0]
        # The bus port's register slices also run on the bus side: a cycle each way, so
        # two of a read's first-beat cycles and two of a write's response cycles.
        base = perf.Timing()
        core = dataclasses.replace(
            base, rd_first=base.rd_first - 2, wr_done=base.wr_done - 2,
            dram_read_latency=round((base.dram_read_latency + 2) / ratio),
            dram_write_latency=round((base.dram_write_latency + 2) / ratio))
        want = ratio * perf.simulate(p.program, CFG, core).cycles
        assert slow > 0.9 * ratio * top, (index, slow, top, ratio)
        assert abs(slow - want) <= 0.05 * want, (index, slow, want, ratio)
        assert status(s)["index"] == index
    s.csr_write(REG["DVFS_PMAX"], TOP)
    settle(s, TOP)


def test_ondemand_follows_the_array(verilator, rng):
    """Idle: ondemand drops to the lowest point; a long program's load raises it again."""
    s = verilator
    s.csr_write(REG["DVFS_SAMPLE_PERIOD"], 50)
    s.csr_write(REG["DVFS_RATE_LIMIT"], 10)
    s.csr_write(REG["DVFS_CTRL"], (s.csr_read(REG["DVFS_CTRL"]) & ~3) | Governor.ONDEMAND)
    settle(s, 0)
    assert s.csr_read(REG["DVFS_LOAD"]) == 0
    x = golden.random_operands(rng, (256, 64))
    w = golden.random_operands(rng, (64, 16))
    bias = np.zeros(16, dtype=np.int64)
    mult, shift = golden.quantize_multiplier(np.full(16, 1e-3))
    big = plan_gemm(CFG, x, w, bias, mult, shift, zero_point=0, relu=False)
    result = run_exact(s, big)
    # Busy the whole time: the governor went to the top point during the run.
    assert status(s)["index"] == TOP or s.csr_read(REG["DVFS_TRANSITIONS"]) >= 2
    at_top = perf.simulate(big.program, CFG).cycles
    assert at_top < result["PERF_BUSY"] < at_top * OPPS[TOP][0] / OPPS[0][0]
    s.csr_write(REG["DVFS_CTRL"], (s.csr_read(REG["DVFS_CTRL"]) & ~3) | Governor.PERFORMANCE)
    s.csr_write(REG["DVFS_SAMPLE_PERIOD"], 250)
    settle(s, TOP)


def test_hot_then_critical(verilator, rng):
    """Hot: lowest point and clock modulation; critical: clocks gated, thermtrip latched,
    the DVFS interrupt raised, and a program no longer finishes."""
    s = verilator
    p = plan(rng)
    settle(s, TOP)
    top = run_exact(s, p)["PERF_BUSY"]
    s.set_sensor(90_000)                     # t_hot 89 C
    settle(s, 0)
    st = status(s)
    assert st["hot"] and st["modulating"] and st["reason"] != 0
    hot = run_exact(s, p)["PERF_BUSY"]
    duty = ((s.csr_read(REG["DVFS_CTRL"]) >> 4 & 0xF) + 1) / 16
    expect = top * OPPS[TOP][0] / OPPS[0][0] / duty
    assert abs(hot - expect) < 0.1 * expect, (hot, expect)
    s.set_sensor(93_000)                     # t_crit 92 C
    pins = s.advance(2000)
    assert pins["thermtrip"] == 1
    assert status(s)["tripped"]
    assert s.csr_read(REG["IRQ_STATUS"]) & regs.IRQ_DVFS
    events = regs.fields_of("DVFS_EVENTS", s.csr_read(REG["DVFS_EVENTS"]))
    assert events["critical"]
    s.set_sensor(45_000)                     # cooling down does not clear the trip
    assert s.advance(2000)["thermtrip"] == 1
    with pytest.raises(RunTimeout):
        s.run_plan(p, limit_cycles=20_000)


def test_icarus_low_point(rng):
    """The same clock-enable path on Icarus: a GEMM at the lowest point, bit-exact."""
    with RtlSession(CFG, "icarus", dram_bytes=DRAM) as s:
        p = plan(rng)
        s.csr_write(REG["DVFS_PMAX"], 0)
        settle(s, 0, cycles=20_000)
        result = run_exact(s, p)
        model = perf.simulate(p.program, CFG).cycles
        ratio = OPPS[TOP][0] / OPPS[0][0]
        assert abs(result["PERF_BUSY"] / model - ratio) < 0.1 * ratio
