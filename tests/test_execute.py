"""Execute unit with scratchpad and accumulator, in Amaranth's simulator."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from llmchip.config import AcceleratorConfig
from llmchip.rtl.accumulator import Accumulator
from llmchip.rtl.execute import ExecError, ExecuteUnit
from llmchip.rtl.scratchpad import Scratchpad
from llmchip.sw import golden, isa


class ExecHarness(wiring.Component):
    """Scratchpad + execute unit + accumulator, with their free ports exposed."""

    def __init__(self, cfg, sp_rows=64, acc_rows=32):
        self.cfg, self.sp_rows, self.acc_rows = cfg, sp_rows, acc_rows
        self.sp = Scratchpad(max(cfg.rows, cfg.cols), sp_rows, 2)
        self.acc = Accumulator(cfg.cols, acc_rows, cfg.acc_width)
        self.exe = ExecuteUnit(cfg, sp_rows, acc_rows)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.sp, m.submodules.acc, m.submodules.exe = self.sp, self.acc, self.exe
        wiring.connect(m, self.exe.sp_a_req, self.sp.a_req)
        wiring.connect(m, self.sp.a_resp, self.exe.sp_a_resp)
        wiring.connect(m, self.exe.sp_b_req, self.sp.b_req)
        wiring.connect(m, self.sp.b_resp, self.exe.sp_b_resp)
        wiring.connect(m, self.exe.acc_w, self.acc.w)
        return m


def run(cfg, sp_image, program, *, acc_rows=32, sp_rows=64, read_rows=0, tokens=None,
        max_cycles=5000):
    """Load the scratchpad, run the program, return (acc rows, stats)."""
    dut = ExecHarness(cfg, sp_rows, acc_rows)
    exe, sp, acc = dut.exe, dut.sp, dut.acc
    out = {"rows": [], "busy_cycles": 0, "busy_at": [], "cycles": 0, "ld_push": 0, "st_push": 0,
           "error": None}

    async def bench(ctx):
        for addr, row in sp_image.items():
            ctx.set(sp.w.valid, 1)
            ctx.set(sp.w.payload, {"addr": addr, "data": [int(v) & 0xFF for v in row]})
            await ctx.tick()
        ctx.set(sp.w.valid, 0)
        ctx.set(exe.ld_avail, 1 if tokens is None else 0)
        ctx.set(exe.st_avail, 1 if tokens is None else 0)
        i = 0
        for cycle in range(max_cycles):
            if tokens is not None:
                ctx.set(exe.ld_avail, cycle >= tokens.get("ld_at", 0))
                ctx.set(exe.st_avail, cycle >= tokens.get("st_at", 0))
            ctx.set(exe.insn.valid, i < len(program))
            if i < len(program):
                ctx.set(exe.insn.payload, program[i])
            took = i < len(program) and ctx.get(exe.insn.ready)
            if ctx.get(exe.array_busy):
                out["busy_cycles"] += 1
                out["busy_at"].append(cycle)
            out["ld_push"] += ctx.get(exe.ld_push)
            out["st_push"] += ctx.get(exe.st_push)
            if ctx.get(exe.error_valid):
                out["error"] = ExecError(ctx.get(exe.error))
            await ctx.tick()
            i += took
            if i == len(program) and not ctx.get(exe.busy):
                out["cycles"] = cycle + 1
                break
        else:
            raise TimeoutError(f"execute unit busy after {max_cycles} cycles")
        if ctx.get(exe.error_valid):
            out["error"] = ExecError(ctx.get(exe.error))
        for r in range(read_rows):
            ctx.set(acc.r_req.valid, 1)
            ctx.set(acc.r_req.payload, r)
            await ctx.tick()
            out["rows"].append(list(ctx.get(acc.r_resp.payload)))
        ctx.set(acc.r_req.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array(out["rows"], dtype=np.int64).reshape(-1, cfg.cols), out


def matmul_program(cfg, x, w, *, m_stride=1, acc=0):
    """Scratchpad image and program for x @ w with K split over weight tiles."""
    R, C = cfg.rows, cfg.cols
    m, k = x.shape
    kb = -(-k // R)
    xp = np.zeros((m, kb * R), dtype=np.int64)
    xp[:, :k] = x
    wp = np.zeros((kb * R, C), dtype=np.int64)
    wp[:k, : w.shape[1]] = w
    image, prog = {}, []
    w_base = 32
    for b in range(kb):
        for r in range(R):
            image[w_base + b * R + r] = wp[b * R + r]
        for i in range(m):
            image[b * m + i] = xp[i, b * R:(b + 1) * R]
        prog.append(isa.encode("load_w", sp_addr=w_base + b * R, sp_stride=1))
        prog.append(isa.encode("matmul", sp_addr=b * m, sp_stride=m_stride, rows=m,
                               acc_addr=acc, accumulate=int(b > 0)))
    return image, prog


@pytest.mark.parametrize("rows, cols, m, k", [(2, 3, 5, 6), (4, 4, 3, 11), (1, 1, 1, 3),
                                              (3, 2, 7, 3)])
def test_matmul_over_k_tiles_is_exact(rows, cols, m, k, rng):
    cfg = AcceleratorConfig(rows=rows, cols=cols)
    x = golden.random_operands(rng, (m, k))
    w = golden.random_operands(rng, (k, cols))
    image, prog = matmul_program(cfg, x, w)
    got, stats = run(cfg, image, prog, read_rows=m)
    np.testing.assert_array_equal(got, golden.matmul(x, w))
    assert stats["busy_cycles"] == m * len(prog) // 2
    assert stats["error"] is None


def test_tiles_stream_back_to_back(rng):
    """With T >= rows, the weight loads hide behind the matmuls: the array is busy nearly
    every cycle after the first weight tile."""
    cfg = AcceleratorConfig(rows=2, cols=2)
    x = golden.random_operands(rng, (8, 8))
    w = golden.random_operands(rng, (8, 2))
    image, prog = matmul_program(cfg, x, w)
    got, stats = run(cfg, image, prog, read_rows=8)
    np.testing.assert_array_equal(got, golden.matmul(x, w))
    assert stats["busy_cycles"] == 32
    # Every cycle from the first row to the last carries a row: no bubble between tiles.
    assert stats["busy_at"] == list(range(stats["busy_at"][0], stats["busy_at"][0] + 32))
    # Fill (dispatch, scratchpad and FIFO latency, the first R weight rows) before the first
    # row, and drain (array latency plus the accumulator write) after the last.
    assert stats["busy_at"][0] <= cfg.rows + 6
    assert stats["cycles"] - stats["busy_at"][-1] - 1 <= cfg.latency + 4


@pytest.mark.parametrize("insn, err", [
    (isa.encode("matmul", sp_addr=0, rows=0, acc_addr=0), ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=60, sp_stride=2, rows=3, acc_addr=0), ExecError.BAD_OPERAND),
    (isa.encode("matmul", sp_addr=0, rows=4, acc_addr=30), ExecError.BAD_OPERAND),
    (isa.encode("load_w", sp_addr=63, sp_stride=1), ExecError.BAD_OPERAND),
    (isa.encode("store", rows=1, cols=1), ExecError.BAD_OPCODE),
])
def test_bad_instructions_are_refused(insn, err):
    cfg = AcceleratorConfig(rows=2, cols=2)
    _, stats = run(cfg, {}, [insn])
    assert stats["error"] is err
    assert stats["busy_cycles"] == 0


def test_tokens_gate_start_and_are_pushed_on_completion(rng):
    cfg = AcceleratorConfig(rows=2, cols=2)
    x = golden.random_operands(rng, (3, 2))
    w = golden.random_operands(rng, (2, 2))
    image = {0: x[0], 1: x[1], 2: x[2], 8: w[0], 9: w[1]}
    prog = [isa.encode("load_w", sp_addr=8, sp_stride=1, pop_prev=True),
            isa.encode("matmul", sp_addr=0, sp_stride=1, rows=3, acc_addr=4, pop_next=True,
                       push_prev=True, push_next=True)]
    got, stats = run(cfg, image, prog, read_rows=7, tokens={"ld_at": 40, "st_at": 60})
    np.testing.assert_array_equal(got[4:7], golden.matmul(x, w))
    assert stats["ld_push"] == 1 and stats["st_push"] == 1
    assert stats["cycles"] > 60  # nothing could start before the store token arrived


def test_os_dataflow_rejected():
    with pytest.raises(ValueError, match="dataflow must be 'ws', not 'os'"):
        ExecuteUnit(AcceleratorConfig(dataflow="os"), 16, 16)
