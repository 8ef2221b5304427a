"""The accelerator's DRAM read path in Amaranth's simulator: LoadUnit, ReadArbiter, AxiDma.

A Python AXI subordinate with a fixed read latency plays DRAM, and a Python client stands
in for instruction fetch on the arbiter's other side. Back-to-back LOADs of one-beat rows
stream at about one beat per cycle; fetch commands in flight among them get their own
data; a DMA error behind good LOADs is reported after their tokens.
"""

from __future__ import annotations

import subprocess
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from llmchip.config import AcceleratorConfig
from llmchip.rtl.accelerator import ReadArbiter
from llmchip.rtl.axi import AxiResp
from llmchip.rtl.dma import AxiDma
from llmchip.rtl.generate import LINT_WAIVERS, component_ports
from llmchip.rtl.load import LoadUnit
from llmchip.rtl.slice import DataDoneSlices, RegisterSlice
from llmchip.sw import isa, regs
from llmchip.tb import toolchain

MEM_BASE = 0x1_0000
MEM_SIZE = 0x4000
SP_ROWS, ACC_ROWS, PARAM_ROWS = 256, 16, 4


class ReadPath(Elaboratable):
    """The accelerator's read path: load unit and a fetch port, arbiter, DMA, with the
    accelerator's register slices (the load unit's commands into the arbiter; the DMA's
    data and completions into the arbiter)."""

    def __init__(self, cfg: AcceleratorConfig):
        self.cfg = cfg
        self.dma = AxiDma(32, cfg.bus_bits, 1, max_outstanding=cfg.dma_outstanding)
        self.arb = ReadArbiter(cfg.bus_bytes, 32, self.dma.config.max_pending)
        self.lu = LoadUnit(cfg, SP_ROWS, ACC_ROWS, PARAM_ROWS, cfg.bus_bytes, 32)
        self.cmd_slice = RegisterSlice(self.arb.load_cmd.payload.shape())
        self.rd_slices = DataDoneSlices(self.dma.rd_data.payload.shape(),
                                        self.dma.rd_done.payload.shape())

    def elaborate(self, platform):
        m = Module()
        m.submodules.dma, m.submodules.arb, m.submodules.lu = dma, arb, lu = \
            self.dma, self.arb, self.lu
        m.submodules.cmd_slice = cmd_slice = self.cmd_slice
        m.submodules.rd_slices = rd_slices = self.rd_slices
        wiring.connect(m, lu.rd_cmd, cmd_slice.i)
        wiring.connect(m, cmd_slice.o, arb.load_cmd)
        wiring.connect(m, arb.load_data, lu.rd_data)
        wiring.connect(m, arb.load_done, lu.rd_done)
        wiring.connect(m, arb.rd_cmd, dma.rd_cmd)
        wiring.connect(m, dma.rd_data, rd_slices.data_i)
        wiring.connect(m, dma.rd_done, rd_slices.done_i)
        wiring.connect(m, rd_slices.data_o, arb.rd_data)
        wiring.connect(m, rd_slices.done_o, arb.rd_done)
        return m


def run(top: ReadPath, mem: bytes, program, *, rng, latency=0, slverr=(), bus_p=1.0,
        acc_p=1.0, fetches=(), fetch_p=0.0, window=(MEM_BASE, MEM_SIZE), max_cycles=20000):
    """Run ``program`` (LOAD words) and the fetch commands ``fetches`` (``(addr, rows)``,
    16-byte rows); return the writes, tokens, fetched beats and timing seen.

    Each burst's first R beat may go out ``latency + 1`` cycles after its AR was accepted;
    ``bus_p`` is the chance that AR and R are ready/valid in a cycle, ``fetch_p`` that a
    fetch command or fetch beat moves.
    """
    dma, arb, lu, B = top.dma, top.arb, top.lu, top.cfg.bus_bytes
    out = {"sp": {}, "acc": {}, "params": {}, "pushes": [], "takes": [], "error": None,
           "error_at": None, "fetched": [], "fetch_done": [], "idle": None, "overlap": 0,
           "written_at": []}
    r_queue: deque = deque()      # (first cycle it may go out, data, resp, last)
    fetches = deque(fetches)

    async def bench(ctx):
        ctx.set(dma.window_base, window[0])
        ctx.set(dma.window_size, window[1])
        ctx.set(lu.ex_avail, 1)
        i, cur_fetch, beats = 0, None, []
        in_flight = {"fetch": 0, "load": 0}     # commands accepted, not completed
        for cycle in range(max_cycles):
            ctx.set(lu.insn.valid, i < len(program))
            if i < len(program):
                ctx.set(lu.insn.payload, program[i])
            if cur_fetch is None and fetches and rng.random() < fetch_p:
                cur_fetch = fetches.popleft()
            ctx.set(arb.fetch_cmd.valid, cur_fetch is not None)
            if cur_fetch is not None:
                ctx.set(arb.fetch_cmd.payload, {"addr": cur_fetch[0], "rows": cur_fetch[1],
                                                "row_bytes": 16, "stride": 16})
            ctx.set(arb.fetch_data.ready, fetch_p == 0 or rng.random() < fetch_p)
            ctx.set(arb.fetch_done.ready, fetch_p == 0 or rng.random() < fetch_p)
            ctx.set(dma.bus.arready, rng.random() < bus_p)
            ctx.set(lu.acc_l.ready, rng.random() < acc_p)
            r_now = r_queue[0] if r_queue and r_queue[0][0] <= cycle else None
            r_now = r_now if rng.random() < bus_p else None
            ctx.set(dma.bus.rvalid, r_now is not None)
            if r_now is not None:
                ctx.set(dma.bus.rdata, r_now[1])
                ctx.set(dma.bus.rresp, r_now[2])
                ctx.set(dma.bus.rlast, r_now[3])

            g = ctx.get
            took = i < len(program) and g(lu.insn.ready)
            fetch_took = cur_fetch is not None and g(arb.fetch_cmd.ready)
            ar = (g(dma.bus.araddr), g(dma.bus.arlen)) \
                if g(dma.bus.arvalid) and g(dma.bus.arready) else None
            r_fire = r_now is not None and g(dma.bus.rready)
            for port, key in ((lu.sp_w, "sp"), (lu.acc_l, "acc"), (lu.param_w, "params")):
                ready = g(lu.acc_l.ready) if port is lu.acc_l else 1
                if g(port.valid) and ready:
                    p = g(port.payload)
                    out[key][p.addr] = [int(v) for v in p.data]
                    out["written_at"].append(cycle)
            if g(arb.fetch_data.valid) and g(arb.fetch_data.ready):
                p = g(arb.fetch_data.payload)
                beats.append(bytes(int(v) for v in p.data))
                if p.last:
                    out["fetched"].append(b"".join(b[:16] for b in beats))
                    beats = []
            if g(arb.fetch_done.valid) and g(arb.fetch_done.ready):
                out["fetch_done"].append(g(arb.fetch_done.payload.error))
            if g(lu.ex_push):
                out["pushes"].append(cycle)
            for name in in_flight:
                cmd, done = getattr(arb, f"{name}_cmd"), getattr(arb, f"{name}_done")
                in_flight[name] += (g(cmd.valid) and g(cmd.ready)) - (g(done.valid)
                                                                       and g(done.ready))
            out["overlap"] += in_flight["fetch"] > 0 and in_flight["load"] > 0
            busy = g(lu.busy) or g(top.cmd_slice.holding) or g(top.rd_slices.holding)
            idle = g(dma.idle)
            await ctx.tick()

            if took:
                out["takes"].append(cycle)
                i += 1
            if fetch_took:
                cur_fetch = None
            if r_fire:
                r_queue.popleft()
            if ar is not None:
                addr, length = ar
                for k in range(length + 1):
                    a = addr + k * B
                    bad = any(lo <= a < hi for lo, hi in slverr)
                    data = int.from_bytes(mem[a - MEM_BASE:a - MEM_BASE + B], "little")
                    r_queue.append((cycle + 1 + latency, 0 if bad else data,
                                    AxiResp.SLVERR if bad else AxiResp.OKAY, k == length))
            if g(lu.error_valid) and out["error_at"] is None:
                out["error_at"] = cycle + 1
                out["error"] = regs.ErrorCode(g(lu.error))
            stopped = i == len(program) or out["error"] is not None
            if stopped and not fetches and cur_fetch is None and not busy and idle:
                out["idle"] = cycle
                return
        raise TimeoutError(f"not idle after {max_cycles} cycles: {len(out['pushes'])} tokens")

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def loads(n, rows, row_bytes, *, dram=MEM_BASE, sram=0):
    """``n`` scratchpad LOADs of ``rows`` contiguous rows, one after the other in DRAM and
    in the scratchpad, each pushing a token."""
    return [isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=rows, row_bytes=row_bytes,
                       dram_addr=dram + k * rows * row_bytes, dram_stride=row_bytes,
                       sram_addr=sram + k * rows, push_next=True) for k in range(n)]


def random_mem(rng) -> bytes:
    return bytes(rng.integers(0, 256, size=MEM_SIZE, dtype=np.uint8))


def expected_rows(cfg: AcceleratorConfig, mem: bytes, program) -> dict:
    """On-chip rows after ``program``, applied in order (zero-padded, as the unit writes)."""
    width = {isa.Mem.SCRATCHPAD: cfg.sp_row_bytes, isa.Mem.ACCUMULATOR: 4 * cfg.cols,
             isa.Mem.PARAMS: 9 * cfg.cols}
    key = {isa.Mem.SCRATCHPAD: "sp", isa.Mem.ACCUMULATOR: "acc", isa.Mem.PARAMS: "params"}
    want = {"sp": {}, "acc": {}, "params": {}}
    for word in program:
        f = isa.decode(word).fields
        memory = isa.Mem(f["mem"])
        for r in range(f["rows"]):
            a = f["dram_addr"] + r * f["dram_stride"] - MEM_BASE
            row = mem[a:a + f["row_bytes"]].ljust(width[memory], b"\0")
            if memory is isa.Mem.ACCUMULATOR:
                value = [int(v) for v in np.frombuffer(row, dtype="<i4")]
            else:
                value = list(row)
            want[key[memory]][f["sram_addr"] + r] = value
    return want


@pytest.mark.parametrize("latency", [0, 8])
def test_back_to_back_loads_stream(latency, rng):
    """8 LOADs of 16 one-beat rows: one row per cycle once started, except for the one
    idle cycle the DMA's address channel takes between two commands."""
    cfg = AcceleratorConfig(rows=16, cols=4)
    mem = random_mem(rng)
    n, rows = 8, 16
    prog = loads(n, rows, 16)
    out = run(ReadPath(cfg), mem, prog, rng=rng, latency=latency)
    assert out["error"] is None and len(out["pushes"]) == n
    assert out["sp"] == expected_rows(cfg, mem, prog)["sp"]
    gaps = np.diff(out["pushes"])
    total = out["pushes"][-1] - out["takes"][0] + 1
    print(f"latency {latency}: {total} cycles for {n} LOADs of {rows} rows, "
          f"token gaps {gaps.tolist()}")
    assert max(gaps) <= rows + 1, gaps
    # The first LOAD pays the round trip once: command check (six stages), burst issue,
    # memory latency, the read buffer and its register stages, the load unit's input
    # slice, the row write register.
    assert total <= n * (rows + 1) + 18 + latency, total


def test_fetch_and_loads_share_the_read_engine(rng):
    """Fetch commands in flight among LOADs of every memory, with random delays everywhere:
    each side gets exactly its own data and completions."""
    cfg = AcceleratorConfig(rows=16, cols=4, bus_bits=64, dma_outstanding=3)
    mem = random_mem(rng)
    prog = []
    for _ in range(24):
        memory = isa.Mem(int(rng.integers(0, 3)))
        width = {isa.Mem.SCRATCHPAD: 16, isa.Mem.ACCUMULATOR: 16, isa.Mem.PARAMS: 36}[memory]
        rows_avail = {isa.Mem.SCRATCHPAD: SP_ROWS, isa.Mem.ACCUMULATOR: ACC_ROWS,
                      isa.Mem.PARAMS: PARAM_ROWS}[memory]
        rows = int(rng.integers(1, min(6, rows_avail) + 1))
        row_bytes = int(rng.integers(1, width + 1))
        prog.append(isa.encode(
            "load", mem=memory, rows=rows, row_bytes=row_bytes,
            dram_addr=MEM_BASE + int(rng.integers(0, MEM_SIZE - 64 * rows)),
            dram_stride=int(rng.integers(0, 64)),
            sram_addr=int(rng.integers(0, rows_avail - rows + 1)), push_next=True))
    fetches = [(MEM_BASE + 16 * int(rng.integers(0, MEM_SIZE // 16 - 8)),
                int(rng.integers(1, 9))) for _ in range(12)]
    out = run(ReadPath(cfg), mem, prog, rng=rng, latency=int(rng.integers(0, 6)),
              bus_p=0.7, acc_p=0.5, fetches=fetches, fetch_p=0.5)
    assert out["error"] is None and len(out["pushes"]) == len(prog)
    want = expected_rows(cfg, mem, prog)
    for key in ("sp", "acc", "params"):
        assert out[key] == want[key], key
    assert out["overlap"] > 50, "fetch and load commands were hardly ever in flight together"
    assert out["fetch_done"] == [0] * len(fetches)
    assert out["fetched"] == [mem[a - MEM_BASE:a - MEM_BASE + 16 * n] for a, n in fetches]


@pytest.mark.parametrize("fault", ["slverr", "window"])
def test_dma_error_behind_good_loads(fault, rng):
    """The earlier LOADs' rows are written and their tokens pushed before the error is
    reported; the LOADs sent after the failing one drain, and the DMA goes idle."""
    cfg = AcceleratorConfig(rows=16, cols=4)
    mem = random_mem(rng)
    n, rows = 8, 4
    prog = loads(n, rows, 16)
    bad = MEM_BASE + 3 * rows * 16       # LOAD 3 reads here
    kwargs = ({"slverr": [(bad + 16, bad + 32)]} if fault == "slverr"
              else {"window": (MEM_BASE, bad - MEM_BASE + 8)})
    out = run(ReadPath(cfg), mem, prog, rng=rng, latency=4, **kwargs)
    code = regs.ErrorCode.DMA_SLVERR if fault == "slverr" else regs.ErrorCode.DMA_WINDOW
    assert out["error"] is code
    assert len(out["pushes"]) >= 4 and out["pushes"][2] < out["error_at"]
    want = expected_rows(cfg, mem, prog[:3])["sp"]
    assert {r: out["sp"][r] for r in want} == want
    assert out["idle"] is not None


def test_arbiter_lint_clean(tmp_path):
    """The arbiter's Verilog passes `verilator -Wall` with the project's waivers."""
    from amaranth.back import verilog

    arb = ReadArbiter(16, 32, 21)
    path = tmp_path / "arb.v"
    path.write_text(verilog.convert(arb, name="arb", ports=component_ports(arb),
                                    emit_src=False))
    proc = subprocess.run([toolchain.require("verilator"), "--lint-only", "-Wall",
                           str(LINT_WAIVERS), str(path), "--top-module", "arb"],
                          capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "%Warning" not in report, report[:3000]


@pytest.mark.parametrize("acc_p", [0.15, 0.4])
def test_completions_follow_data_through_the_slices(acc_p, rng):
    """Multi-beat accumulator rows that the accumulator often refuses: the load unit's data
    slice fills up, and a command's completion must not reach the unit before the command's
    last beat (taken early, it would end the LOAD and hand its last rows to the next one)."""
    cfg = AcceleratorConfig(rows=16, cols=4, bus_bits=64)
    mem = random_mem(rng)
    prog = []
    for _ in range(40):
        rows = int(rng.integers(1, 4))
        prog.append(isa.encode(
            "load", mem=isa.Mem.ACCUMULATOR, rows=rows, row_bytes=int(rng.integers(9, 17)),
            dram_addr=MEM_BASE + int(rng.integers(0, MEM_SIZE - 64 * rows)),
            dram_stride=int(rng.integers(16, 64)),
            sram_addr=int(rng.integers(0, ACC_ROWS - rows + 1)), push_next=True))
    out = run(ReadPath(cfg), mem, prog, rng=rng, latency=int(rng.integers(0, 4)), acc_p=acc_p)
    assert out["error"] is None and len(out["pushes"]) == len(prog)
    assert out["acc"] == expected_rows(cfg, mem, prog)["acc"]
    # Rows are written in program order; a LOAD's token goes out only after the cycle its
    # last row was written.
    last_row = np.cumsum([isa.decode(w).fields["rows"] for w in prog]) - 1
    written = np.array(out["written_at"])[last_row]
    early = [k for k, (push, w) in enumerate(zip(out["pushes"], written, strict=True))
             if push <= w]
    assert not early, f"LOADs {early} completed before their last row was written"
