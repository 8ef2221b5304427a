"""Load unit against a Python DMA-read model: rows into scratchpad, accumulator, params."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from llmchip.config import AcceleratorConfig
from llmchip.rtl.dma_if import DmaError
from llmchip.rtl.load import LoadUnit
from llmchip.sw import isa, regs


def run(cfg, bus_bytes, dram, program, *, rng, dma_error=DmaError.OK, acc_ready=0.6):
    """Run LOADs; return the writes seen on each destination port and the stats."""
    dut = LoadUnit(cfg, 64, 16, 4, bus_bytes)
    out = {"sp": {}, "acc": {}, "params": {}, "error": None, "pushes": 0, "cmds": []}
    B = bus_bytes

    async def bench(ctx):
        ctx.set(dut.ex_avail, 1)
        i, beats, done_due = 0, [], 0
        for _ in range(4000):
            ctx.set(dut.insn.valid, i < len(program))
            if i < len(program):
                ctx.set(dut.insn.payload, program[i])
            took = i < len(program) and ctx.get(dut.insn.ready)
            ctx.set(dut.rd_cmd.ready, rng.random() < 0.7)
            if ctx.get(dut.rd_cmd.valid) and ctx.get(dut.rd_cmd.ready):
                c = ctx.get(dut.rd_cmd.payload)
                out["cmds"].append((c.addr, c.rows, c.row_bytes, c.stride))
                for r in range(c.rows):
                    row = dram[c.addr + r * c.stride: c.addr + r * c.stride + c.row_bytes]
                    nb = -(-c.row_bytes // B)
                    padded = row + bytes(nb * B - len(row))
                    if dma_error != DmaError.OK:
                        padded = bytes(len(padded))
                    for k in range(nb):
                        beats.append((padded[k * B:(k + 1) * B],
                                      r == c.rows - 1 and k == nb - 1))
                done_due += 1
            offer = bool(beats) and rng.random() < 0.8
            ctx.set(dut.rd_data.valid, offer)
            if offer:
                ctx.set(dut.rd_data.payload, {"data": list(beats[0][0]), "last": beats[0][1]})
            ctx.set(dut.acc_l.ready, rng.random() < acc_ready)
            for port, key in ((dut.sp_w, "sp"), (dut.acc_l, "acc"), (dut.param_w, "params")):
                ready = 1 if port is not dut.acc_l else ctx.get(dut.acc_l.ready)
                if ctx.get(port.valid) and ready:
                    p = ctx.get(port.payload)
                    out[key][p.addr] = [int(v) for v in p.data]
            if offer and ctx.get(dut.rd_data.ready):
                beats.pop(0)
            ctx.set(dut.rd_done.valid, done_due > 0 and not beats)
            ctx.set(dut.rd_done.payload, {"error": int(dma_error)})
            if ctx.get(dut.rd_done.valid) and ctx.get(dut.rd_done.ready):
                done_due -= 1
            out["pushes"] += ctx.get(dut.ex_push)
            await ctx.tick()
            i += took
            if i == len(program) and not ctx.get(dut.busy):
                break
        else:
            raise TimeoutError("load unit did not finish")
        if ctx.get(dut.error_valid):
            out["error"] = regs.ErrorCode(ctx.get(dut.error))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("cols, bus_bytes", [(4, 16), (4, 8), (3, 4)])
def test_loads_into_each_memory(cols, bus_bytes, rng):
    cfg = AcceleratorConfig(rows=6, cols=cols)
    dram = bytes(rng.integers(0, 256, size=4096, dtype=np.uint8))
    spw = max(6, cols)
    prog = [
        isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=3, row_bytes=5, dram_addr=7,
                   dram_stride=100, sram_addr=10, push_next=True),
        isa.encode("load", mem=isa.Mem.ACCUMULATOR, rows=2, row_bytes=4 * cols,
                   dram_addr=1000, dram_stride=64, sram_addr=3, pop_next=True),
        isa.encode("load", mem=isa.Mem.PARAMS, rows=1, row_bytes=9 * cols, dram_addr=2001,
                   dram_stride=0, sram_addr=2, push_next=True),
    ]
    out = run(cfg, bus_bytes, dram, prog, rng=rng)
    assert out["error"] is None and out["pushes"] == 2
    for r in range(3):
        want = list(dram[7 + 100 * r: 12 + 100 * r]) + [0] * (spw - 5)
        assert out["sp"][10 + r] == want
    for r in range(2):
        raw = dram[1000 + 64 * r: 1000 + 64 * r + 4 * cols]
        assert out["acc"][3 + r] == list(np.frombuffer(raw, dtype="<i4"))
    assert out["params"][2] == list(dram[2001:2001 + 9 * cols])


@pytest.mark.parametrize("fields", [
    {"mem": 0, "rows": 0, "row_bytes": 4},
    {"mem": 0, "rows": 2, "row_bytes": 4, "sram_addr": 63},
    {"mem": 0, "rows": 1, "row_bytes": 7},            # wider than a scratchpad row
    {"mem": 1, "rows": 1, "row_bytes": 17},           # wider than an accumulator row
    {"mem": 2, "rows": 1, "row_bytes": 36, "sram_addr": 4},
    {"mem": 3, "rows": 1, "row_bytes": 1},
    {"mem": 0, "rows": 1, "row_bytes": 0},
])
def test_bad_operands_refused(fields, rng):
    out = run(AcceleratorConfig(rows=6, cols=4), 16, bytes(64), [isa.encode("load", **fields)],
              rng=rng)
    assert out["error"] is regs.ErrorCode.BAD_OPERAND and out["cmds"] == []


def test_dma_error_reported(rng):
    prog = [isa.encode("load", mem=0, rows=2, row_bytes=4, dram_addr=0, dram_stride=4)]
    out = run(AcceleratorConfig(rows=4, cols=4), 16, bytes(64), prog, rng=rng,
              dma_error=DmaError.DECERR)
    assert out["error"] is regs.ErrorCode.DMA_DECERR


def test_non_load_opcode_is_illegal(rng):
    out = run(AcceleratorConfig(rows=4, cols=4), 16, bytes(64),
              [isa.encode("store", rows=1, cols=1)], rng=rng)
    assert out["error"] is regs.ErrorCode.ILLEGAL_OPCODE
