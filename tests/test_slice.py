"""The stream register slice in Amaranth's simulator: order, no loss or repeat under random
valid/ready, full throughput, and outputs that do not follow the other side combinationally."""

import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from llmchip.rtl.slice import RegisterSlice


def run(rng, beats, p_valid, p_ready, cycles=2000):
    dut = RegisterSlice(unsigned(16))
    got, got_at, sent_at = [], [], []

    async def bench(ctx):
        k = 0
        for cycle in range(cycles):
            offer = k < len(beats) and rng.random() < p_valid
            ctx.set(dut.i.valid, offer)
            ctx.set(dut.i.payload, beats[k] if offer else 0)
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            # `i.ready` and `o.valid` are registers: the other side's inputs of this cycle
            # do not change them.
            i_ready, o_valid = ctx.get(dut.i.ready), ctx.get(dut.o.valid)
            ctx.set(dut.o.ready, not ready)
            ctx.set(dut.i.valid, not offer)
            assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid)) == (i_ready, o_valid)
            ctx.set(dut.o.ready, ready)
            ctx.set(dut.i.valid, offer)
            if ctx.get(dut.holding) != (o_valid or not i_ready):
                raise AssertionError("holding does not match the registers")
            if o_valid and ready:
                got.append(ctx.get(dut.o.payload))
                got_at.append(cycle)
            if offer and i_ready:
                sent_at.append(cycle)
                k += 1
            await ctx.tick()
            if len(got) == len(beats):
                return
        raise TimeoutError(f"{len(got)} of {len(beats)} beats after {cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, got_at, sent_at


@pytest.mark.parametrize("p_valid, p_ready", [(1.0, 1.0), (0.7, 0.5), (0.3, 0.9), (1.0, 0.2)])
def test_beats_pass_in_order_once(p_valid, p_ready, rng):
    beats = [int(v) for v in rng.integers(0, 2**16, size=200)]
    got, _, _ = run(rng, beats, p_valid, p_ready)
    assert got == beats


def test_full_throughput_and_one_cycle_latency(rng):
    beats = list(range(100))
    got, got_at, sent_at = run(rng, beats, 1.0, 1.0)
    assert got == beats
    assert sent_at == list(range(100)), "the slice refused a beat at full rate"
    assert got_at == [c + 1 for c in sent_at]
