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


# -- multiplier mapping and pipelining options -------------------------------------------

from amaranth.hdl import Module, Signal, signed  # noqa: E402

from llmchip.config import PIPELINES, AcceleratorConfig  # noqa: E402
from llmchip.rtl.pe import PackedPair, booth_product  # noqa: E402


def _booth_dut(width):
    m = Module()
    a, b = Signal(signed(width)), Signal(signed(width))
    p = Signal(signed(2 * width))
    m.d.comb += p.eq(booth_product(a, b))
    return m, a, b, p


@pytest.mark.parametrize("width", [2, 3, 4, 5])
def test_booth_product_is_exact_for_every_operand_pair(width):
    m, a, b, p = _booth_dut(width)
    lo, hi = -(1 << (width - 1)), 1 << (width - 1)

    async def bench(ctx):
        for x in range(lo, hi):
            for y in range(lo, hi):
                ctx.set(a, x)
                ctx.set(b, y)
                assert ctx.get(p) == x * y, (x, y)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_booth_product_int8_corners_and_random(rng):
    m, a, b, p = _booth_dut(8)
    pairs = [(x, y) for x in (-128, -127, -1, 0, 1, 127) for y in (-128, -127, -1, 0, 1, 127)]
    pairs += [tuple(int(v) for v in rng.integers(-128, 128, size=2)) for _ in range(500)]

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            assert ctx.get(p) == x * y, (x, y)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def _wrap(value, width):
    value &= (1 << width) - 1
    return value - (1 << width) if value >> (width - 1) else value


@pytest.mark.parametrize("mult", ["dsp", "lut"])
@pytest.mark.parametrize("pipeline", PIPELINES)
def test_ws_pe_options_exact_with_documented_latency(mult, pipeline, rng):
    """psum_out = psum_in + a * w appears exactly 2 + stages edges after a_in changes."""
    dut = PE("ws", 8, 32, mult=mult, pipeline=pipeline)
    stages = AcceleratorConfig(pipeline=pipeline).pipe_stages
    cases = [(-128, -128, 2**31 - 1), (127, -128, -(2**31))]
    cases += [(int(rng.integers(-128, 128)), int(rng.integers(-128, 128)),
               int(rng.integers(-(2**31), 2**31))) for _ in range(12)]

    async def bench(ctx):
        old = None   # the previous case's product
        for a, w, psum in cases:
            ctx.set(dut.w_in, w)
            ctx.set(dut.wen_in, 1)
            await ctx.tick()
            ctx.set(dut.wen_in, 0)
            ctx.set(dut.sw_in, 1)
            ctx.set(dut.a_in, a)
            ctx.set(dut.psum_in, psum)
            want = _wrap(psum + a * w, 32)
            for edge in range(1, 3 + stages):
                await ctx.tick()
                ctx.set(dut.sw_in, 0)
                # One edge early the sum still holds the previous product (with "acc" its
                # high half holds only a sign and a carry, which may happen to agree).
                if edge == 1 + stages and old not in (None, a * w) and "acc" not in pipeline:
                    assert ctx.get(dut.psum_out) == _wrap(psum + old, 32), "early result"
            assert ctx.get(dut.psum_out) == want, (a, w, psum)
            old = a * w

    _run(dut, bench)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_packed_pair_separates_both_products(pipeline, rng):
    """One wide multiply gives both columns' exact sums, including every sign corner."""
    dut = PackedPair(8, 32, pipeline=pipeline)
    stages = AcceleratorConfig(pipeline=pipeline).pipe_stages
    corners = (-128, -1, 0, 1, 127)
    cases = [(a, lo, hi) for a in (-128, -1, 127) for lo in corners for hi in corners]
    cases += [tuple(int(v) for v in rng.integers(-128, 128, size=3)) for _ in range(40)]

    async def bench(ctx):
        for a, lo, hi in cases:
            ps = [int(v) for v in rng.integers(-(2**31), 2**31, size=2)]
            ctx.set(dut.w_in, [lo, hi])
            ctx.set(dut.wen_in, 1)
            await ctx.tick()
            ctx.set(dut.wen_in, 0)
            await ctx.tick()           # the pair registers its inputs once
            ctx.set(dut.sw_in, 1)
            ctx.set(dut.a_in, a)
            ctx.set(dut.psum_in, ps)
            for _ in range(3 + stages):
                await ctx.tick()
                ctx.set(dut.sw_in, 0)
            got = [int(v) for v in ctx.get(dut.psum_out)]
            assert got == [_wrap(ps[0] + a * lo, 32), _wrap(ps[1] + a * hi, 32)], (a, lo, hi)
            assert [int(v) for v in ctx.get(dut.w_out)] == [lo, hi]

    _run(dut, bench)


@pytest.mark.parametrize("kwargs, text", [
    ({"mult": "wide"}, "mult must be one of dsp, lut, not 'wide'"),
    ({"dataflow": "os", "pipeline": "acc"},
     "pipeline must be one of none, mult, mult2, not 'acc'"),
])
def test_pe_rejects_bad_options(kwargs, text):
    with pytest.raises(ValueError) as info:
        PE(**kwargs)
    assert str(info.value) == text
