"""CSR block in Amaranth's simulator, driven over AXI4-Lite."""

import pytest
from amaranth.sim import Simulator

from llmchip.rtl.axi import AxiResp
from llmchip.rtl.csr import CsrBlock
from llmchip.sw import regs

CONSTANTS = {"ID": regs.ID_MAGIC, "VERSION": 0x000100, "CFG_ARRAY": 0x1010,
             "CFG_WIDTHS": 0x802008, "CFG_SP": 1024, "CFG_SP_ROW": 16, "CFG_ACC": 512}


async def write(ctx, bus, addr, data, *, stall=0):
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.awvalid, 1)
    for _ in range(stall):   # data arrives later than the address
        await ctx.tick()
        assert not ctx.get(bus.awready)
    ctx.set(bus.wdata, data)
    ctx.set(bus.wstrb, 0xF)
    ctx.set(bus.wvalid, 1)
    while not ctx.get(bus.awready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(bus.awvalid, 0)
    ctx.set(bus.wvalid, 0)
    ctx.set(bus.bready, 1)
    while not ctx.get(bus.bvalid):
        await ctx.tick()
    resp = ctx.get(bus.bresp)
    await ctx.tick()
    ctx.set(bus.bready, 0)
    return resp


async def read(ctx, bus, addr):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    while not ctx.get(bus.arready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(bus.arvalid, 0)
    ctx.set(bus.rready, 1)
    while not ctx.get(bus.rvalid):
        await ctx.tick()
    data, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
    await ctx.tick()
    ctx.set(bus.rready, 0)
    return data, resp


def run(bench, **kw):
    dut = CsrBlock(CONSTANTS, **kw)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_testbench(testbench)
    sim.run()


def test_constants_rw_and_unmapped():
    async def bench(ctx, dut):
        bus = dut.bus
        assert await read(ctx, bus, 0x000) == (regs.ID_MAGIC, AxiResp.OKAY)
        assert await read(ctx, bus, regs.by_name("CFG_ACC").offset) == (512, AxiResp.OKAY)
        assert await write(ctx, bus, regs.by_name("IQ_BASE").offset, 0x1230,
                           stall=2) == AxiResp.OKAY
        assert ctx.get(dut.iq_base) == 0x1230
        assert await read(ctx, bus, regs.by_name("IQ_BASE").offset) == (0x1230, AxiResp.OKAY)
        # Read-only: ignored, OKAY.
        assert await write(ctx, bus, 0x000, 5) == AxiResp.OKAY
        assert (await read(ctx, bus, 0x000))[0] == regs.ID_MAGIC
        # Unmapped: SLVERR both ways.
        assert await write(ctx, bus, 0xFFC, 1) == AxiResp.SLVERR
        assert await read(ctx, bus, 0xFFC) == (0, AxiResp.SLVERR)

    run(bench)


def test_absent_range_answers_like_unmapped():
    """A block left out of the build (the DVFS controller): its registers get no storage
    and its offsets answer SLVERR; the rest of the map is unchanged."""
    async def bench(ctx, dut):
        bus = dut.bus
        ctrl = regs.by_name("DVFS_CTRL").offset
        assert not hasattr(dut, "dvfs_ctrl") and hasattr(dut, "iq_base")
        assert await write(ctx, bus, ctrl, 3) == AxiResp.SLVERR
        assert await read(ctx, bus, ctrl) == (0, AxiResp.SLVERR)
        assert await read(ctx, bus, regs.by_name("DVFS_OPP0").offset) == (0, AxiResp.SLVERR)
        assert await write(ctx, bus, regs.by_name("IQ_BASE").offset, 0x40) == AxiResp.OKAY
        assert await read(ctx, bus, regs.by_name("IQ_BASE").offset) == (0x40, AxiResp.OKAY)
        assert await read(ctx, bus, 0x000) == (regs.ID_MAGIC, AxiResp.OKAY)

    run(bench, absent=(0x200, 0x300))


def test_pulses_rw1c_and_irq():
    async def bench(ctx, dut):
        bus = dut.bus
        seen = []

        # Watch the soft-reset pulse while writing CTRL.
        ctrl = regs.by_name("CTRL").offset
        ctx.set(bus.awaddr, ctrl)
        ctx.set(bus.wdata, 0b010)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.bready, 1)
        for _ in range(4):
            seen.append((ctx.get(dut.ctrl_start), ctx.get(dut.ctrl_soft_reset)))
            await ctx.tick()
            ctx.set(bus.awvalid, 0)
            ctx.set(bus.wvalid, 0)
        assert seen.count((0, 1)) == 1 and (1, 0) not in seen
        ctx.set(bus.bready, 0)
        # An interrupt source sets a status bit; irq follows the enable.
        ctx.set(dut.irq_status_set, regs.IRQ_ERROR)
        await ctx.tick()
        ctx.set(dut.irq_status_set, 0)
        await ctx.tick()
        assert ctx.get(dut.irq_status) == regs.IRQ_ERROR and not ctx.get(dut.irq)
        await write(ctx, bus, regs.by_name("IRQ_ENABLE").offset, 0b11)
        assert ctx.get(dut.irq)
        await write(ctx, bus, regs.by_name("IRQ_STATUS").offset, regs.IRQ_ERROR)
        assert ctx.get(dut.irq_status) == 0 and not ctx.get(dut.irq)

    run(bench)


def test_counter_high_word_latched_on_low_read():
    async def bench(ctx, dut):
        bus = dut.bus
        ctx.set(dut.perf_cycles, (7 << 32) | 5)
        lo = await read(ctx, bus, regs.by_name("PERF_CYCLES_LO").offset)
        ctx.set(dut.perf_cycles, (9 << 32) | 1)   # carries into the high word meanwhile
        hi = await read(ctx, bus, regs.by_name("PERF_CYCLES_HI").offset)
        assert (lo[0], hi[0]) == (5, 7)

    run(bench)


@pytest.mark.parametrize("constants, text", [
    ({"NOPE": 1}, "no register named 'NOPE'"),
    ({"IQ_BASE": 1}, "IQ_BASE is RW, not a constant"),
    ({"ID": 1 << 32}, "ID must fit in 32 bits"),
])
def test_bad_constants(constants, text):
    with pytest.raises(ValueError, match=text):
        CsrBlock(constants)
