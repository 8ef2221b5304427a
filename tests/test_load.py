"""Load unit against a Python DMA-read model: rows into scratchpad, accumulator, params."""

from collections import deque

import numpy as np
import pytest
from amaranth.hdl import Const
from amaranth.sim import Simulator

from llmchip.config import AcceleratorConfig
from llmchip.rtl.dma_if import DmaError
from llmchip.rtl.load import LoadUnit
from llmchip.sw import isa, regs


def with_check(ctx, unit, word):
    """``word``, and above it the unit's operand check of it if the unit takes one."""
    if not unit.prechecked:
        return word
    return word | ctx.get(unit.operand_ok(Const(word, isa.INSN_BITS))) << isa.INSN_BITS


def run(cfg, bus_bytes, dram, program, *, rng, dma_error=DmaError.OK, acc_ready=0.6,
        ex_avail=1, max_loads=8, prechecked=False, dropped=()):
    """Run LOADs; return the writes seen on each destination port and the stats.

    With ``prechecked``, each instruction carries its operand check in the bit above it,
    as the accelerator's load queue delivers it.

    The DMA model answers commands in order, like the DMA: each command's beats, then its
    completion, which may wait while the next command's beats already flow. ``dma_error``
    is the completion code of every command, or a dict from command number to code.
    Commands numbered in ``dropped`` end without data, as an aborted command does; no
    later command's data comes before their completion.
    """
    dut = LoadUnit(cfg, 64, 16, 4, bus_bytes, max_loads=max_loads, prechecked=prechecked)
    out = {"sp": {}, "acc": {}, "params": {}, "error": None, "pushes": 0, "cmds": [],
           "push_cycles": [], "done_cycles": [], "error_cycle": None, "in_flight": 0}
    B = bus_bytes
    codes = dma_error if isinstance(dma_error, dict) else {}

    async def bench(ctx):
        ctx.set(dut.ex_avail, ex_avail)
        i = 0
        flight = deque()    # per command not yet completed: [beats left, completion code]
        written = 0         # rows taken by the memories' write ports
        for cycle in range(4000):
            ctx.set(dut.insn.valid, i < len(program))
            if i < len(program):
                ctx.set(dut.insn.payload, with_check(ctx, dut, program[i]))
            took = i < len(program) and ctx.get(dut.insn.ready)
            ctx.set(dut.rd_cmd.ready, rng.random() < 0.7)
            if ctx.get(dut.rd_cmd.valid) and ctx.get(dut.rd_cmd.ready):
                c = ctx.get(dut.rd_cmd.payload)
                n = len(out["cmds"])
                out["cmds"].append((c.addr, c.rows, c.row_bytes, c.stride))
                code = codes.get(n, DmaError.OK) if codes else dma_error
                beats = deque()
                for r in range(c.rows):
                    row = dram[c.addr + r * c.stride: c.addr + r * c.stride + c.row_bytes]
                    nb = -(-c.row_bytes // B)
                    padded = row + bytes(nb * B - len(row))
                    if code != DmaError.OK:
                        padded = bytes(len(padded))
                    for k in range(nb):
                        beats.append((padded[k * B:(k + 1) * B],
                                      r == c.rows - 1 and k == nb - 1))
                flight.append([deque() if n in dropped else beats, code, n in dropped])
            out["in_flight"] = max(out["in_flight"], len(flight))
            source = None
            for f in flight:
                if f[0] or f[2]:
                    source = f[0] or None
                    break
            offer = source is not None and rng.random() < 0.8
            ctx.set(dut.rd_data.valid, offer)
            if offer:
                ctx.set(dut.rd_data.payload, {"data": list(source[0][0]),
                                              "last": source[0][1]})
            ctx.set(dut.acc_l.ready, rng.random() < acc_ready)
            for port, key in ((dut.sp_w, "sp"), (dut.acc_l, "acc"), (dut.param_w, "params")):
                ready = 1 if port is not dut.acc_l else ctx.get(dut.acc_l.ready)
                if ctx.get(port.valid) and ready:
                    p = ctx.get(port.payload)
                    out[key][p.addr] = [int(v) for v in p.data]
                    written += 1
            if offer and ctx.get(dut.rd_data.ready):
                source.popleft()
            # A completion follows its command's last beat by at least a cycle.
            due = bool(flight) and not flight[0][0] and not (offer and source is flight[0][0])
            ctx.set(dut.rd_done.valid, due and rng.random() < 0.8)
            ctx.set(dut.rd_done.payload, {"error": int(flight[0][1]) if flight else 0})
            if ctx.get(dut.rd_done.valid) and ctx.get(dut.rd_done.ready):
                flight.popleft()
                out["done_cycles"].append(cycle)
                # Taking a completion means every row of the command is in its memory
                # (rows written in this cycle count: they land at the clock edge).
                completed = len(out["done_cycles"])
                rows_due = sum(c[1] for n, c in enumerate(out["cmds"][:completed])
                               if n not in dropped)
                assert written >= rows_due, \
                    f"LOAD {completed - 1} completed with {rows_due - written} rows unwritten"
            if ctx.get(dut.ex_push):
                out["pushes"] += 1
                out["push_cycles"].append(cycle)
            await ctx.tick()
            if ctx.get(dut.error_valid) and out["error_cycle"] is None:
                out["error_cycle"] = cycle + 1
            i += took
            # The unit takes nothing after an error, but drains what it sent to the DMA.
            stopped = i == len(program) or ctx.get(dut.error_valid)
            if stopped and not ctx.get(dut.busy):
                break
        else:
            raise TimeoutError("load unit did not finish")
        assert not flight, "commands left without a completion"
        if ctx.get(dut.error_valid):
            out["error"] = regs.ErrorCode(ctx.get(dut.error))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("prechecked", [False, True])
@pytest.mark.parametrize("cols, bus_bytes", [(4, 16), (4, 8), (3, 4)])
def test_loads_into_each_memory(cols, bus_bytes, prechecked, rng):
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
    out = run(cfg, bus_bytes, dram, prog, rng=rng, prechecked=prechecked)
    assert out["error"] is None and out["pushes"] == 2
    assert out["in_flight"] > 1, "LOADs did not overlap"
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
@pytest.mark.parametrize("prechecked", [False, True])
def test_bad_operands_refused(fields, prechecked, rng):
    out = run(AcceleratorConfig(rows=6, cols=4), 16, bytes(64), [isa.encode("load", **fields)],
              rng=rng, prechecked=prechecked)
    assert out["error"] is regs.ErrorCode.BAD_OPERAND and out["cmds"] == []


def test_dma_error_reported(rng):
    prog = [isa.encode("load", mem=0, rows=2, row_bytes=4, dram_addr=0, dram_stride=4)]
    out = run(AcceleratorConfig(rows=4, cols=4), 16, bytes(64), prog, rng=rng,
              dma_error=DmaError.DECERR)
    assert out["error"] is regs.ErrorCode.DMA_DECERR


@pytest.mark.parametrize("prechecked", [False, True])
def test_non_load_opcode_is_illegal(prechecked, rng):
    out = run(AcceleratorConfig(rows=4, cols=4), 16, bytes(64),
              [isa.encode("store", rows=1, cols=1)], rng=rng, prechecked=prechecked)
    assert out["error"] is regs.ErrorCode.ILLEGAL_OPCODE


def loads(n, rows=2, row_bytes=4, mem=isa.Mem.SCRATCHPAD, **fields):
    return [isa.encode("load", mem=mem, rows=rows, row_bytes=row_bytes, dram_addr=64 * k,
                       dram_stride=16, sram_addr=rows * k, push_next=True, **fields)
            for k in range(n)]


@pytest.mark.parametrize("max_loads", [2, 4])
def test_loads_in_flight_are_bounded(max_loads, rng):
    dram = bytes(rng.integers(0, 256, size=1024, dtype=np.uint8))
    out = run(AcceleratorConfig(rows=4, cols=4), 4, dram, loads(10), rng=rng,
              max_loads=max_loads)
    assert out["error"] is None and out["pushes"] == 10
    assert 1 < out["in_flight"] <= max_loads
    for k in range(10):
        for r in range(2):
            assert out["sp"][2 * k + r] == list(dram[64 * k + 16 * r:][:4])


def test_bad_operand_waits_for_earlier_loads(rng):
    """The refusal comes after every earlier LOAD completed; nothing is issued for it."""
    prog = loads(3) + [isa.encode("load", mem=0, rows=1, row_bytes=4, sram_addr=64)]
    out = run(AcceleratorConfig(rows=4, cols=4), 16, bytes(256), prog, rng=rng)
    assert out["error"] is regs.ErrorCode.BAD_OPERAND
    assert len(out["cmds"]) == 3 and out["pushes"] == 3
    assert out["error_cycle"] > max(out["done_cycles"])


def test_dma_error_behind_good_loads(rng):
    """Earlier LOADs complete and push their tokens; the first error is the one reported;
    LOADs already sent to the DMA still complete."""
    dram = bytes(rng.integers(0, 256, size=1024, dtype=np.uint8))
    prog = loads(12)      # more than fit in flight: some are never taken
    out = run(AcceleratorConfig(rows=4, cols=4), 16, dram, prog, rng=rng,
              dma_error={2: DmaError.SLVERR, 3: DmaError.DECERR})
    assert out["error"] is regs.ErrorCode.DMA_SLVERR
    # The failing LOAD pushes its token as it completes, as any LOAD does.
    assert out["push_cycles"][:3] == out["done_cycles"][:3]
    assert out["error_cycle"] == out["done_cycles"][2] + 1
    assert 3 <= len(out["cmds"]) <= 2 + 8 and out["pushes"] == len(out["cmds"])
    for k in range(2):
        for r in range(2):
            assert out["sp"][2 * k + r] == list(dram[64 * k + 16 * r:][:4])


@pytest.mark.parametrize("cols, bus_bytes", [(4, 16), (8, 16)])
def test_command_without_data_does_not_shift_later_rows(cols, bus_bytes, rng):
    """A LOAD whose command ends without data (an abort) completes; the rows of the LOADs
    after it, whose data may follow its completion at once, land at their own addresses.
    The 8-column accumulator rows take two beats each."""
    dram = bytes(rng.integers(0, 256, size=2048, dtype=np.uint8))
    mem = isa.Mem.ACCUMULATOR if cols == 8 else isa.Mem.SCRATCHPAD
    row_bytes = 32 if cols == 8 else 4
    prog = [isa.encode("load", mem=mem, rows=2, row_bytes=row_bytes, dram_addr=128 * k,
                       dram_stride=64, sram_addr=2 * k) for k in range(4)]
    out = run(AcceleratorConfig(rows=4, cols=cols), bus_bytes, dram, prog, rng=rng,
              dma_error={1: DmaError.ABORTED}, dropped={1}, acc_ready=1.0)
    key = "acc" if cols == 8 else "sp"
    issued = len(out["cmds"])
    assert issued >= 3, "too few LOADs in flight to test the case"
    assert 2 not in out[key] and 3 not in out[key]
    for k in [0] + list(range(2, issued)):
        for r in range(2):
            got = out[key][2 * k + r]
            want = dram[128 * k + 64 * r:][:row_bytes]
            if key == "acc":
                assert got == list(np.frombuffer(want, dtype="<i4")), (k, r)
            else:
                assert got == list(want), (k, r)


@pytest.mark.parametrize("value, exc, text", [
    (3, ValueError, "max_loads must be a power of two, not 3"),
    (1, ValueError, "max_loads must be between 2 and 64, not 1"),
    (128, ValueError, "max_loads must be between 2 and 64, not 128"),
    (4.0, TypeError, "max_loads must be an int, not float 4.0"),
])
def test_max_loads_validated(value, exc, text):
    with pytest.raises(exc, match=text):
        LoadUnit(AcceleratorConfig(), 64, 16, 4, 16, max_loads=value)
