"""PE unit tests in Amaranth's simulator."""

import pytest
from amaranth.sim import Simulator

from llmchip.rtl.pe import PE


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_ws_shadow_load_switch_and_mac():
    dut = PE("ws", 8, 32)

    async def bench(ctx):
        # Load -128 into the shadow register; it must not be used before the switch.
        ctx.set(dut.w_in, -128)
        ctx.set(dut.wen_in, 1)
        await ctx.tick()
        ctx.set(dut.wen_in, 0)
        assert ctx.get(dut.w_out) == -128
        ctx.set(dut.a_in, -128)
        await ctx.tick()
        ctx.set(dut.psum_in, 5)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == 5  # active weight still 0: no switch yet
        # The switch travels with the activation: it takes effect for that very beat.
        ctx.set(dut.sw_in, 1)
        ctx.set(dut.a_in, -128)
        # Loading the next shadow weight on the switch edge must not disturb this tile.
        ctx.set(dut.w_in, 7)
        ctx.set(dut.wen_in, 1)
        await ctx.tick()
        ctx.set(dut.sw_in, 0)
        ctx.set(dut.wen_in, 0)
        assert ctx.get(dut.a_out) == -128 and ctx.get(dut.sw_out) == 1
        ctx.set(dut.psum_in, 10)
        await ctx.tick()
        assert ctx.get(dut.psum_out) == 10 + 16384
        assert ctx.get(dut.w_out) == 7
        assert ctx.get(dut.wen_out) == 0

    _run(dut, bench)


def test_ws_psum_wraps_at_acc_width():
    dut = PE("ws", 8, 16)

    async def bench(ctx):
        ctx.set(dut.w_in, 127)
        ctx.set(dut.wen_in, 1)
        await ctx.tick()
        ctx.set(dut.wen_in, 0)
        ctx.set(dut.sw_in, 1)
        ctx.set(dut.a_in, 127)
        await ctx.tick()
        ctx.set(dut.sw_in, 0)
        ctx.set(dut.psum_in, 32767 - 100)
        await ctx.tick()
        # 32667 + 16129 = 48796 wraps to 48796 - 65536 in 16 bits.
        assert ctx.get(dut.psum_out) == 48796 - 65536

    _run(dut, bench)


def test_os_accumulate_restart_and_drain():
    dut = PE("os", 8, 32)

    async def beat(ctx, a, b, first=0, last=0):
        ctx.set(dut.a_in, a)
        ctx.set(dut.b_in, b)
        ctx.set(dut.first_in, first)
        ctx.set(dut.last_in, last)
        await ctx.tick()

    async def bench(ctx):
        await beat(ctx, 3, 4, first=1)
        await beat(ctx, -128, -128)
        await beat(ctx, 2, 5, last=1)
        await beat(ctx, 9, 9, first=1, last=1)   # next tile, one beat
        await beat(ctx, 0, 0)
        # After tile 0's last beat is registered and multiplied, d_out holds its sum.
        assert ctx.get(dut.d_out) == 81
        ctx.set(dut.d_in, 1234)
        ctx.set(dut.den_in, 1)
        await ctx.tick()
        assert ctx.get(dut.d_out) == 1234 and ctx.get(dut.den_out) == 1

    _run(dut, bench)


def test_os_tile_sum_copied_on_last():
    dut = PE("os", 8, 32)

    async def bench(ctx):
        for a, b, first, last in [(3, 4, 1, 0), (-128, -128, 0, 0), (2, 5, 0, 1)]:
            ctx.set(dut.a_in, a)
            ctx.set(dut.b_in, b)
            ctx.set(dut.first_in, first)
            ctx.set(dut.last_in, last)
            await ctx.tick()
        ctx.set(dut.last_in, 0)
        ctx.set(dut.a_in, 0)
        await ctx.tick()
        assert ctx.get(dut.d_out) == 12 + 16384 + 10

    _run(dut, bench)


@pytest.mark.parametrize("kwargs, text", [
    ({"dataflow": "xs"}, "dataflow must be one of ws, os, not 'xs'"),
    ({"in_width": 0}, "in_width must be an int >= 1, not 0"),
    ({"acc_width": True}, "acc_width must be an int >= 1, not True"),
])
def test_pe_rejects_bad_parameters(kwargs, text):
    with pytest.raises(ValueError) as info:
        PE(**kwargs)
    assert str(info.value) == text
