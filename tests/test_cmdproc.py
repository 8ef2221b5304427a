"""Command processor in Amaranth's simulator: ring fetch, in-order dispatch, FENCE/END, errors."""

import pytest
from amaranth.sim import Simulator

from llmchip.rtl.cmdproc import CommandProcessor
from llmchip.rtl.dma_if import DmaError
from llmchip.sw import isa, regs

BASE = 0x1000


def run(program_slots, *, size, tail, rng, bus_bytes=16, units_busy=0, fetch_error=None,
        max_cycles=3000, second=None, terms=None, ready=None, offer=0.8):
    """Serve fetches from a ring in a Python memory; record what each queue receives.

    With ``second = (slots, tail)``, write those slots and ring the doorbell a second time
    after the first END. ``terms`` are the command processor's ``*_terms`` arguments.
    ``ready`` gives a queue consumer's probability of taking (by name, default 0.5);
    ``offer`` the probability that a fetched beat is offered in a cycle.
    """
    ready_prob = {"ld": 0.5, "ex": 0.5, "st": 0.5, **(ready or {})}
    dut = CommandProcessor(bus_bytes, **(terms or {}))
    mem = {BASE + 16 * i: word for i, word in program_slots.items()}
    pending_second = [second] if second else []
    out = {"ld": [], "ex": [], "st": [], "done_at": None, "irq_done": 0, "irq_error": 0,
           "error": 0, "error_info": None, "fetches": [], "last_busy": -1}

    async def bench(ctx):
        ctx.set(dut.iq_base, BASE)
        ctx.set(dut.iq_size, size)
        ctx.set(dut.iq_tail, tail)
        await ctx.tick()
        ctx.set(dut.doorbell, 1)
        await ctx.tick()
        ctx.set(dut.doorbell, 0)
        # A command's beats can come from the cycle after it was accepted (the DMA's
        # check and issue take several cycles), never in the same cycle.
        beats, arriving, done_due = [], [], 0
        busy = {"ld": 0, "ex": 0, "st": 0}
        for cycle in range(max_cycles):
            beats += arriving
            arriving = []
            ctx.set(dut.rd_cmd.ready, rng.random() < 0.7)
            if ctx.get(dut.rd_cmd.valid) and ctx.get(dut.rd_cmd.ready):
                c = ctx.get(dut.rd_cmd.payload)
                out["fetches"].append(((c.addr - BASE) // 16, c.rows))
                for r in range(c.rows):
                    word = mem.get(c.addr + r * c.stride, 0)
                    raw = word.to_bytes(16, "little")
                    for k in range(max(1, 16 // bus_bytes)):
                        chunk = raw[k * bus_bytes:(k + 1) * bus_bytes].ljust(bus_bytes, b"\0")
                        arriving.append(chunk)
                done_due += 1
            offering = bool(beats) and rng.random() < offer
            ctx.set(dut.rd_data.valid, offering)
            if offering:
                ctx.set(dut.rd_data.payload, {"data": list(beats[0]), "last": len(beats) == 1})
                beats.pop(0)   # the command processor never refuses a beat
            ctx.set(dut.rd_done.valid, done_due > 0 and not beats and not arriving
                    and not offering)
            err = fetch_error if fetch_error is not None else DmaError.OK
            ctx.set(dut.rd_done.payload, {"error": int(err)})
            if ctx.get(dut.rd_done.valid) and ctx.get(dut.rd_done.ready):
                done_due -= 1
            # Queue consumers: accept at random; a unit stays busy a while after each take.
            for name, port in (("ld", dut.ld_insn), ("ex", dut.ex_insn), ("st", dut.st_insn)):
                ready = rng.random() < ready_prob[name]
                ctx.set(port.ready, ready)
                if ready and ctx.get(port.valid):
                    out[name].append((cycle, ctx.get(port.payload)))
                    busy[name] = units_busy
                ctx.set(getattr(dut, f"{name}_busy"), busy[name] > 0)
                if busy[name]:
                    out["last_busy"] = cycle
                busy[name] = max(0, busy[name] - 1)
            out["irq_done"] += ctx.get(dut.irq_done)
            out["irq_error"] += ctx.get(dut.irq_error)
            if ctx.get(dut.irq_done) and out["done_at"] is None:
                out["done_at"] = cycle
            if out["done_at"] is not None and pending_second:
                slots, tail2 = pending_second.pop()
                mem.update({BASE + 16 * i: word for i, word in slots.items()})
                out["first_done_at"], out["done_at"] = out["done_at"], None
                # Fetch traffic is modelled in the main loop only.
                for port in (dut.rd_cmd.ready, dut.rd_data.valid, dut.rd_done.valid):
                    ctx.set(port, 0)
                ctx.set(dut.iq_tail, tail2)
                await ctx.tick()
                ctx.set(dut.doorbell, 1)
                await ctx.tick()
                ctx.set(dut.doorbell, 0)
            await ctx.tick()
            stop = out["done_at"] if out["done_at"] is not None else out.get("error_at")
            if ctx.get(dut.error) and "error_at" not in out:
                out["error_at"] = cycle
            if stop is not None and cycle > stop + 40:   # let queues drain
                break
        out["error"] = ctx.get(dut.error)
        out["error_info"] = ctx.get(dut.error_info)
        out["head"] = ctx.get(dut.iq_head)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def _program():
    return [isa.encode("config", zero_point=1),
            isa.encode("load", mem=0, rows=1, row_bytes=1, sram_addr=1),
            isa.encode("load_w", sp_addr=2),
            isa.encode("matmul", sp_addr=3, rows=4),
            isa.encode("fence"),
            isa.encode("load", mem=0, rows=1, row_bytes=1, sram_addr=5),
            isa.encode("store", rows=1, cols=1, acc_addr=6),
            isa.encode("matmul", sp_addr=7, rows=1),
            isa.encode("load", mem=0, rows=1, row_bytes=1, sram_addr=8),
            isa.encode("end")]


@pytest.mark.parametrize("bus_bytes", [8, 16, 32])
def test_dispatch_in_order_per_queue(bus_bytes, rng):
    prog = _program()
    out = run(dict(enumerate(prog)), size=16, tail=len(prog), rng=rng, bus_bytes=bus_bytes,
              units_busy=3)
    assert out["error"] == 0 and out["irq_done"] == 1 and out["irq_error"] == 0
    by_queue = {"ld": [], "ex": [], "st": []}
    for word in prog:
        q = isa.QUEUE[isa.decode(word).op]
        name = {isa.Queue.LOAD: "ld", isa.Queue.EXECUTE: "ex", isa.Queue.STORE: "st"}.get(q)
        if name:
            by_queue[name].append(word)
    for name, words in by_queue.items():
        assert [w for _, w in out[name]] == words, name
    # Nothing behind the FENCE was dispatched before everything ahead of it was taken.
    fence_ahead = max(c for name in ("ld", "ex", "st") for c, w in out[name]
                      if w in prog[:4])
    behind = min(c for name in ("ld", "ex", "st") for c, w in out[name] if w in prog[5:])
    assert behind > fence_ahead + 2    # plus the units' busy time
    # END completes only once every unit has gone idle.
    assert out["done_at"] > out["last_busy"] >= 0
    assert out["head"] == len(prog)


def test_side_terms_travel_with_their_instruction(rng):
    """Side bits, combinational (load queue) or from a two-stage pipeline (execute queue),
    belong to the instruction they travel with, however instructions arrive and leave."""
    def f1(word):
        return (word[4:36] + 1)[:32]

    def f2(x):
        return (x * 3)[:34]

    terms = {"ex_terms": (f1, f2), "ld_terms": lambda word: word[8:12] ^ 5}
    prog = [isa.encode("matmul", sp_addr=k, rows=k + 1, sp_stride=3 * k)
            if k % 3 else isa.encode("load", mem=0, rows=1, row_bytes=1, sram_addr=k)
            for k in range(12)] + [isa.encode("end")]
    out = run(dict(enumerate(prog)), size=16, tail=len(prog), rng=rng, terms=terms)
    assert out["error"] == 0 and out["irq_done"] == 1
    mask = (1 << isa.INSN_BITS) - 1
    ex = [w for w in prog if w & 0xF == isa.Opcode.MATMUL]
    ld = [w for w in prog if w & 0xF == isa.Opcode.LOAD]
    assert [p & mask for _, p in out["ex"]] == ex
    assert [p >> isa.INSN_BITS for _, p in out["ex"]] == [
        (((w >> 4) + 1) % 2**32 * 3) % 2**34 for w in ex]
    assert [p & mask for _, p in out["ld"]] == ld
    assert [p >> isa.INSN_BITS for _, p in out["ld"]] == [((w >> 8) & 0xF) ^ 5 for w in ld]


def _three_stages():
    return (lambda word: word[4:20], lambda x: x + 1, lambda x: (x * 5)[:20])


def test_pipelined_terms_cost_latency_not_rate(rng):
    """Instructions whose side bits take three cycles leave the buffer one per cycle while
    their queue has room (no wait at the buffer's head): with the unit always taking, the
    first four MATMULs (the queue's depth) reach it on consecutive cycles, and the seven
    within nine cycles (three cycles each at the buffer's head would take eighteen)."""
    prog = [isa.encode("matmul", sp_addr=k, rows=1) for k in range(7)] + [isa.encode("end")]
    out = run(dict(enumerate(prog)), size=16, tail=len(prog), rng=rng,
              terms={"ex_terms": _three_stages()}, ready={"ex": 1.0}, offer=1.0)
    assert out["error"] == 0 and out["irq_done"] == 1
    cycles = [c for c, _ in out["ex"]]
    assert len(cycles) == 7 and cycles[3] - cycles[0] == 3 and cycles[6] - cycles[0] <= 9, \
        cycles
    mask = (1 << isa.INSN_BITS) - 1
    assert [p & mask for _, p in out["ex"]] == prog[:7]
    assert [p >> isa.INSN_BITS for _, p in out["ex"]] == [
        (((w >> 4) & 0xFFFF) + 1) * 5 % 2**20 for w in prog[:7]]


def test_pipelined_terms_under_back_pressure(rng):
    """A unit that rarely takes: the queue and its delay line never hold more than the
    queue's depth, and no instruction is lost, repeated or reordered."""
    prog = [isa.encode("matmul", sp_addr=k, rows=1) if k % 4 else
            isa.encode("load", mem=0, rows=1, row_bytes=1, sram_addr=k)
            for k in range(20)] + [isa.encode("end")]
    out = run(dict(enumerate(prog)), size=32, tail=len(prog), rng=rng, max_cycles=6000,
              terms={"ex_terms": _three_stages(), "ld_terms": _three_stages()[:2]},
              ready={"ex": 0.05, "ld": 0.1})
    assert out["error"] == 0 and out["irq_done"] == 1
    mask = (1 << isa.INSN_BITS) - 1
    assert [p & mask for _, p in out["ex"]] == [w for w in prog if w & 0xF == isa.Opcode.MATMUL]
    assert [p & mask for _, p in out["ld"]] == [w for w in prog if w & 0xF == isa.Opcode.LOAD]


def test_queue_depth_validated():
    with pytest.raises(ValueError, match="queue_depth must be an int >= 3, not 2"):
        CommandProcessor(16, queue_depth=2)


def test_ring_wraps(rng):
    """A first program fills slots 0..6; the second starts at slot 7 and wraps to 0."""
    prog = _program()
    size, start = 12, 7
    first = {i: isa.encode("fence") for i in range(start - 1)}
    first[start - 1] = isa.encode("end")
    second = {(start + i) % size: w for i, w in enumerate(prog)}
    out = run(first, size=size, tail=start, rng=rng,
              second=(second, (start + len(prog)) % size))
    assert out["irq_done"] == 2 and out["error"] == 0
    assert out["head"] == (start + len(prog)) % size
    fetched = [slot for slot, _ in out["fetches"]]
    assert start in fetched and 0 in fetched[fetched.index(start):]
    assert [w for _, w in out["ex"]] == [w for w in prog
                                         if isa.QUEUE[isa.decode(w).op] is isa.Queue.EXECUTE]


def test_illegal_opcode_stops_with_index(rng):
    prog = _program()
    prog[3] = 0x0F   # opcode 15 is undefined
    out = run(dict(enumerate(prog)), size=16, tail=len(prog), rng=rng)
    assert out["error"] == regs.ErrorCode.ILLEGAL_OPCODE and out["error_info"] == 3
    assert out["irq_error"] == 1 and out["irq_done"] == 0
    assert [w for _, w in out["ex"]] == [prog[2]]


def test_fetch_error_reported(rng):
    out = run(dict(enumerate(_program())), size=16, tail=10, rng=rng,
              fetch_error=DmaError.DECERR)
    assert out["error"] == regs.ErrorCode.DMA_DECERR and out["irq_error"] == 1


@pytest.mark.parametrize("size, tail", [(0, 0), (4, 4), (4, 9)])
def test_bad_queue_configuration(size, tail, rng):
    out = run({}, size=size, tail=tail, rng=rng, max_cycles=50)
    assert out["error"] == regs.ErrorCode.QUEUE_CONFIG
