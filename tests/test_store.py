"""Store unit with accumulator and post-processor, against a Python DMA-write model."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from test_load import with_check

from llmchip.config import AcceleratorConfig
from llmchip.rtl.accumulator import Accumulator
from llmchip.rtl.dma_if import DmaError
from llmchip.rtl.store import StoreUnit
from llmchip.sw import golden, isa, regs


class StoreHarness(wiring.Component):
    def __init__(self, cfg, bus_bytes, acc_rows=16, param_rows=4, prechecked=False):
        self.acc = Accumulator(cfg.cols, acc_rows, cfg.acc_width)
        self.st = StoreUnit(cfg, acc_rows, param_rows, bus_bytes, prechecked=prechecked)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.acc, m.submodules.st = self.acc, self.st
        wiring.connect(m, self.st.acc_req, self.acc.r_req)
        wiring.connect(m, self.acc.r_resp, self.st.acc_resp)
        return m


def param_row(bias, mult, shift):
    return (np.asarray(bias, dtype="<i4").tobytes() + np.asarray(mult, dtype="<u4").tobytes()
            + np.asarray(shift, dtype="u1").tobytes())


def run(cfg, bus_bytes, acc, params, program, *, rng, dma_error=DmaError.OK, ready_p=0.7,
        acc_rows=16, prechecked=False):
    """Preload accumulator rows and parameter rows, run, return (writes, stats).

    The DMA model takes commands and beats each with probability ``ready_p`` per cycle.
    With ``prechecked``, each instruction carries its operand check in the bit above it,
    as the accelerator's store queue delivers it."""
    dut = StoreHarness(cfg, bus_bytes, acc_rows=acc_rows, prechecked=prechecked)
    st, accm = dut.st, dut.acc
    out = {"cmds": [], "beats": [], "beat_cycles": [], "error": None, "pushes": 0}

    async def bench(ctx):
        for addr, row in acc.items():
            ctx.set(accm.l.valid, 1)
            ctx.set(accm.l.payload, {"addr": addr, "data": [int(v) for v in row],
                                     "accumulate": 0})
            await ctx.tick()
        ctx.set(accm.l.valid, 0)
        for addr, raw in params.items():
            ctx.set(st.param_w.valid, 1)
            ctx.set(st.param_w.payload, {"addr": addr, "data": list(raw)})
            await ctx.tick()
        ctx.set(st.param_w.valid, 0)
        await ctx.tick()
        ctx.set(st.ex_avail, 1)
        i, expect_beats, done_sent = 0, None, 0
        for cycle in range(6000):
            ctx.set(st.insn.valid, i < len(program))
            if i < len(program):
                ctx.set(st.insn.payload, with_check(ctx, st, program[i]))
            took = i < len(program) and ctx.get(st.insn.ready)
            ctx.set(st.wr_cmd.ready, rng.random() < ready_p)
            ctx.set(st.wr_data.ready, rng.random() < ready_p)
            cmd_fire = ctx.get(st.wr_cmd.valid) and ctx.get(st.wr_cmd.ready)
            if cmd_fire:
                c = ctx.get(st.wr_cmd.payload)
                out["cmds"].append((c.addr, c.rows, c.row_bytes, c.stride))
                expect_beats = (len(out["beats"]) + c.rows * -(-c.row_bytes // bus_bytes))
            if ctx.get(st.wr_data.valid) and ctx.get(st.wr_data.ready):
                out["beats"].append(list(ctx.get(st.wr_data.payload.data)))
                out["beat_cycles"].append(cycle)
            pending_done = expect_beats is not None and len(out["beats"]) == expect_beats
            ctx.set(st.wr_done.valid, pending_done and done_sent < len(out["cmds"]))
            ctx.set(st.wr_done.payload, {"error": int(dma_error)})
            if ctx.get(st.wr_done.valid) and ctx.get(st.wr_done.ready):
                done_sent += 1
                expect_beats = None
            out["pushes"] += ctx.get(st.ex_push)
            if ctx.get(st.error_valid):
                out["error"] = regs.ErrorCode(ctx.get(st.error))
            await ctx.tick()
            i += took
            if i == len(program) and not ctx.get(st.busy):
                break
        else:
            raise TimeoutError("store unit did not finish")
        if ctx.get(st.error_valid):
            out["error"] = regs.ErrorCode(ctx.get(st.error))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("prechecked", [False, True])
@pytest.mark.parametrize("cols_arr, bus_bytes, cols, rows, ready_p", [
    (4, 16, 4, 5, 0.7), (4, 16, 3, 5, 0.7), (20, 8, 20, 5, 0.7), (20, 8, 9, 5, 0.7),
    # Slow DMA, many rows: the output queue fills and holds rows back from the
    # post-processor; full speed: rows flow through without a gap.
    (4, 16, 4, 40, 0.15), (20, 8, 20, 30, 0.3), (4, 16, 4, 40, 1.0)])
def test_store_requantizes_rows_to_bytes(cols_arr, bus_bytes, cols, rows, ready_p, prechecked,
                                         rng):
    cfg = AcceleratorConfig(rows=2, cols=cols_arr)
    acc_vals = rng.integers(-(2**31), 2**31, size=(rows, cols_arr))
    bias = rng.integers(-(2**20), 2**20, size=cols_arr)
    mult, shift = golden.quantize_multiplier(rng.uniform(1e-4, 2e-2, size=cols_arr))
    acc = {3 + r: acc_vals[r] for r in range(rows)}
    params = {1: param_row(bias, mult, shift)}
    prog = [isa.encode("config", zero_point=-5, relu=1),
            isa.encode("store", rows=rows, cols=cols, acc_addr=3, param_addr=1,
                       dram_addr=0x100, dram_stride=64, pop_prev=True, push_prev=True)]
    out = run(cfg, bus_bytes, acc, params, prog, rng=rng, ready_p=ready_p, acc_rows=64,
              prechecked=prechecked)
    assert out["error"] is None and out["pushes"] == 1
    assert out["cmds"] == [(0x100, rows, cols, 64)]
    per_row = -(-cols // bus_bytes)
    got = np.array(out["beats"], dtype=np.int64).reshape(rows, per_row * bus_bytes)[:, :cols]
    want = golden.requantize(acc_vals, bias, mult, shift, zero_point=-5, relu=True)
    np.testing.assert_array_equal(golden.wrap(got, 8), want[:, :cols])
    if ready_p == 1.0:
        span = out["beat_cycles"][-1] - out["beat_cycles"][0] + 1
        assert span == len(out["beats"]), f"{len(out['beats'])} beats took {span} cycles"


def test_shift_bytes_above_63_act_as_63(rng):
    """A parameter row's shift byte is clamped to 63 (which the requantizer treats as 62):
    64 or 200 must not wrap to a small shift."""
    cfg = AcceleratorConfig(rows=2, cols=4)
    rows = 6
    acc_vals = rng.integers(-(2**31), 2**31, size=(rows, 4))
    bias = rng.integers(-(2**20), 2**20, size=4)
    mult = rng.integers(2**30, 2**31, size=4)
    shift = np.array([200, 64, 63, 61])
    acc = {r: acc_vals[r] for r in range(rows)}
    prog = [isa.encode("store", rows=rows, cols=4, acc_addr=0, param_addr=2,
                       dram_addr=0x40, dram_stride=16)]
    out = run(cfg, 16, acc, {2: param_row(bias, mult, shift)}, prog, rng=rng, acc_rows=64)
    assert out["error"] is None
    got = np.array(out["beats"], dtype=np.int64).reshape(rows, 16)[:, :4]
    want = golden.requantize(acc_vals, bias, mult, np.minimum(shift, 63))
    np.testing.assert_array_equal(golden.wrap(got, 8), want)
    assert np.any(want[:, 3] != 0), "the unclamped lane should see values"


@pytest.mark.parametrize("insn, code", [
    (isa.encode("store", rows=0, cols=1), regs.ErrorCode.BAD_OPERAND),
    (isa.encode("store", rows=2, cols=1, acc_addr=15), regs.ErrorCode.BAD_OPERAND),
    (isa.encode("store", rows=1, cols=5), regs.ErrorCode.BAD_OPERAND),
    (isa.encode("store", rows=1, cols=1, param_addr=4), regs.ErrorCode.BAD_OPERAND),
    (isa.encode("matmul", rows=1), regs.ErrorCode.ILLEGAL_OPCODE),
])
@pytest.mark.parametrize("prechecked", [False, True])
def test_bad_store_operands(insn, code, prechecked, rng):
    out = run(AcceleratorConfig(rows=2, cols=4), 16, {}, {}, [insn], rng=rng,
              prechecked=prechecked)
    assert out["error"] is code and out["cmds"] == []


@pytest.mark.parametrize("err, code", [(DmaError.SLVERR, regs.ErrorCode.DMA_SLVERR),
                                       (DmaError.DECERR, regs.ErrorCode.DMA_DECERR),
                                       (DmaError.OUT_OF_WINDOW, regs.ErrorCode.DMA_WINDOW)])
def test_dma_errors_are_reported(err, code, rng):
    cfg = AcceleratorConfig(rows=2, cols=4)
    prog = [isa.encode("store", rows=2, cols=4, acc_addr=0, dram_addr=0, dram_stride=4)]
    out = run(cfg, 16, {0: [1, 2, 3, 4], 1: [5, 6, 7, 8]}, {0: param_row([0] * 4, [0] * 4,
                                                                        [0] * 4)},
              prog, rng=rng, dma_error=err)
    assert out["error"] is code
