"""Registered products: the portable registers in Amaranth's simulator, and every block
with an ECP5 mapping (hard multipliers with their own registers) against its portable
mapping, cycle for cycle in Icarus with a behavioural MULT18X18D."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Shape, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from llmchip.config import AcceleratorConfig
from llmchip.rtl.cmdproc import CommandProcessor
from llmchip.rtl.dma import DmaConfig, _CommandCheck, command_layout
from llmchip.rtl.dsp import ECP5_MULT_WIDTH, registered_product
from llmchip.rtl.execute import (
    FLAGS_LAYOUT,
    DispatchFlagsPipeline,
    OperandTermsPipeline,
)
from llmchip.rtl.pe import PE
from llmchip.rtl.postproc import PostProcessor
from llmchip.sw import isa
from llmchip.tb.equiv import compare_mappings


class _Product(wiring.Component):
    """``registered_product`` with every enable a port."""

    def __init__(self, a_shape: Shape, b_shape: Shape):
        self.a_shape, self.b_shape = Shape.cast(a_shape), Shape.cast(b_shape)
        width = self.a_shape.width + self.b_shape.width
        is_signed = self.a_shape.signed or self.b_shape.signed
        super().__init__({"a": In(a_shape), "b": In(b_shape), "a_en": In(1), "b_en": In(1),
                          "p_en": In(1), "p": Out(signed(width) if is_signed else width)})

    def elaborate(self, platform):
        m = Module()
        ecp5 = getattr(platform, "family", None) == "ecp5"
        m.d.comb += self.p.eq(registered_product(m, self.a, self.b, name="x", ecp5=ecp5,
                                                 a_en=self.a_en, b_en=self.b_en,
                                                 p_en=self.p_en))
        return m


SHAPES = [(unsigned(16), unsigned(16)), (signed(16), unsigned(15)), (signed(18), signed(18)),
          (unsigned(17), signed(8)), (unsigned(14), unsigned(16)), (unsigned(12), unsigned(16))]


@pytest.mark.parametrize("a_shape, b_shape", SHAPES)
def test_portable_product_follows_its_enables(a_shape, b_shape, rng):
    """Two register stages: operands load on their enables, the product on its own."""
    dut = _Product(a_shape, b_shape)
    a_s, b_s = Shape.cast(a_shape), Shape.cast(b_shape)

    def draw(shape):
        lo = -(1 << (shape.width - 1)) if shape.signed else 0
        return int(rng.integers(lo, lo + (1 << shape.width)))

    async def bench(ctx):
        a_reg = b_reg = p_reg = 0
        for _ in range(200):
            a, b = draw(a_s), draw(b_s)
            en = [int(x) for x in rng.integers(0, 2, 3)]
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.a_en, en[0])
            ctx.set(dut.b_en, en[1])
            ctx.set(dut.p_en, en[2])
            await ctx.tick()
            p_reg = a_reg * b_reg if en[2] else p_reg
            a_reg = a if en[0] else a_reg
            b_reg = b if en[1] else b_reg
            assert ctx.get(dut.p) == p_reg

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("a_shape, b_shape", SHAPES)
def test_ecp5_product_equals_portable(a_shape, b_shape, seed, tmp_path):
    r = compare_mappings(lambda: _Product(a_shape, b_shape), tmp_path, cycles=400,
                         seed=seed)
    assert r["ok"], r["mismatch"] or r["log"][-500:]
    assert r["dsps"] == 1


def test_too_wide_for_a_dsp_stays_portable(seed, tmp_path):
    # An unsigned 18-bit operand needs 19 bits as a two's complement number.
    assert ECP5_MULT_WIDTH == 18
    r = compare_mappings(lambda: _Product(unsigned(18), unsigned(8)), tmp_path, cycles=50,
                         seed=seed)
    assert r["ok"] and r["dsps"] == 0


def test_postprocessor_ecp5_equals_portable(seed, tmp_path):
    r = compare_mappings(lambda: PostProcessor(2), tmp_path, cycles=600, seed=seed,
                         high={"i__valid": 0.8, "o__ready": 0.7})
    assert r["ok"], r["mismatch"] or r["log"][-500:]
    assert r["dsps"] == 2 * 4


def _field_mask(layout, **bits) -> int:
    """A mask of ``layout``'s fields, ``bits[name]`` low bits of each (all if absent)."""
    mask = 0
    for name, field in layout:
        width = bits.get(name, field.width)
        mask |= ((1 << width) - 1) << layout[name].offset
    return mask


def test_dma_check_ecp5_equals_portable(seed, tmp_path):
    # A 1 MB window at 0 and commands of a few rows within about 2 MB: about half of them
    # end past the window, so the check's kind depends on the span's products.
    layout = command_layout(32)
    r = compare_mappings(lambda: _CommandCheck(DmaConfig(data_width=64)), tmp_path,
                         cycles=1500, seed=seed,
                         high={"cmd__valid": 0.7, "out__ready": 0.6, "flush": 0.02},
                         masks={"window_base": 0, "window_size": 1 << 20,
                                "cmd__payload": _field_mask(layout, addr=20, rows=3,
                                                            row_bytes=8, stride=18)})
    assert r["ok"], r["mismatch"] or r["log"][-500:]
    assert r["dsps"] == 2


def test_execute_terms_ecp5_equals_portable(seed, tmp_path):
    cfg = AcceleratorConfig(rows=4, cols=4)
    r = compare_mappings(
        lambda: CommandProcessor(8, 32, ex_terms=DispatchFlagsPipeline(cfg, 64, 32)), tmp_path,
        cycles=800, seed=seed,
        high={"doorbell": 0.02, "rd_cmd__ready": 0.7, "rd_data__valid": 0.6,
              "ex_insn__ready": 0.5, "ld_busy": 0.2, "ex_busy": 0.2, "st_busy": 0.2})
    assert r["ok"], r["mismatch"] or r["log"][-500:]
    assert r["dsps"] == 2


def test_pe_ecp5_equals_portable(seed, tmp_path):
    r = compare_mappings(lambda: PE(mult="dsp", pipeline="mult"), tmp_path, cycles=400,
                         seed=seed)
    assert r["ok"], r["mismatch"] or r["log"][-500:]
    assert r["dsps"] == 1


@pytest.mark.parametrize("kind", ["terms", "flags"])
def test_execute_pipelines_match_their_expressions(kind, seed):
    """``latency`` cycles after a word, the operand-terms pipeline gives that word's
    operand terms (three cycles) and the dispatch-flags pipeline its dispatch flags (six).
    Half the words are MATMUL or LOAD_W with small fields, so the range checks go both
    ways."""
    cfg = AcceleratorConfig(rows=4, cols=4)
    if kind == "terms":
        pipe = OperandTermsPipeline(cfg)
        assert pipe.latency == 3
    else:
        pipe = DispatchFlagsPipeline(cfg, 64, 32)
        assert pipe.latency == 6

    class Top(wiring.Component):
        def __init__(self):
            super().__init__({"word": In(128)})

        def elaborate(self, platform):
            m = Module()
            self.out = pipe.build(m, platform, self.word)
            self.ref = pipe(self.word)
            return m

    dut = Top()
    words = [_execute_word(random.Random(seed * 1000 + k)) for k in range(80)]
    oks = []

    async def bench(ctx):
        expected = []
        for k, word in enumerate(words):
            ctx.set(dut.word, word)
            expected.append(ctx.get(dut.ref))
            if kind == "flags":
                oks.append(expected[-1] >> FLAGS_LAYOUT["ok"].offset & 1)
            await ctx.tick()
            if k >= pipe.latency - 1:
                assert ctx.get(dut.out) == expected[k - pipe.latency + 1], f"word {k}"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    if kind == "flags":
        assert 0 < sum(oks) < len(oks), "the operand check went one way only"


def _execute_word(rng: random.Random) -> int:
    """A random 128-bit word, or (half the time) a MATMUL or LOAD_W whose fields are near
    a 64-row scratchpad's and a 32-row accumulator's ends."""
    if rng.random() < 0.5:
        return rng.getrandbits(128)
    if rng.random() < 0.3:
        return isa.encode("load_w", sp_addr=rng.randrange(64), sp_stride=rng.randrange(4))
    return isa.encode("matmul", sp_addr=rng.randrange(64), sp_stride=rng.randrange(4),
                      rows=rng.randrange(10), acc_addr=rng.randrange(32),
                      w_addr=rng.randrange(64), k_steps=rng.randrange(4),
                      a_step=rng.randrange(8))
