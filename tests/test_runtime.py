"""The Device API on the model backend (the RTL backends are in test_backends.py)."""

import numpy as np
import pytest

import llmchip
from llmchip.config import AcceleratorConfig
from llmchip.sw import golden
from llmchip.sw.runtime import Requant

CFG = AcceleratorConfig(rows=4, cols=4, sp_rows=256, acc_rows=64, param_rows=8)


def ref_linear(x, w, bias, rq, relu=False):
    return golden.requantize(golden.matmul(x, w), bias, rq.mult, rq.shift, rq.zero_point, relu)


def test_linear_and_matmul_are_bit_exact(rng):
    dev = llmchip.open(CFG, dram_bytes=1 << 22)
    x = golden.random_operands(rng, (9, 13))
    w = golden.random_operands(rng, (13, 7))
    bias = rng.integers(-500, 500, size=7)
    rq = Requant.from_scale(rng.uniform(1e-3, 1e-2, size=7), zero_point=4)
    assert np.array_equal(dev.linear(x, w, bias, rq, relu=True), ref_linear(x, w, bias, rq, True))
    assert dev.last["ops"] == 1 and dev.last["cycles"] > 0
    assert dev.last["macs"] == 9 * 13 * 7
    assert 0 < dev.last["utilization"] <= 1
    rq1 = Requant.from_scale(0.01)
    assert np.array_equal(dev.matmul(x, w, rq1), ref_linear(x, w, 0, rq1))
    assert dev.totals["ops"] == 2
    assert dev.totals["cycles"] == sum(h["cycles"] for h in dev.history)


def test_batch_chains_outputs_into_one_program(rng):
    dev = llmchip.open(CFG, dram_bytes=1 << 22)
    x = golden.random_operands(rng, (16, 8))
    w1, w2 = golden.random_operands(rng, (8, 12)), golden.random_operands(rng, (12, 5))
    h1 = dev.upload(w1)
    r1, r2 = Requant.from_scale(0.01, 1), Requant.from_scale(0.02, -1)
    with dev.batch() as b:
        y1 = b.linear(x, h1, None, r1)
        y2 = b.linear(y1, w2, None, r2, relu=True)
        y3 = b.matmul(x, w1, r2)
    e1 = ref_linear(x, w1, 0, r1)
    assert np.array_equal(y1.value, e1)
    assert np.array_equal(y2.value, ref_linear(e1, w2, 0, r2, True))
    assert np.array_equal(y3.value, ref_linear(x, w1, 0, r2))
    assert dev.last["ops"] == 3 and dev.last["fences"] == 1


def test_uploaded_weights_are_reused_until_reset(rng):
    dev = llmchip.open(CFG, dram_bytes=1 << 22)
    w = golden.random_operands(rng, (6, 6))
    h = dev.upload(w)
    x = golden.random_operands(rng, (3, 6))
    rq = Requant.from_scale(0.02)
    for _ in range(2):
        assert np.array_equal(dev.linear(x, h, None, rq), ref_linear(x, w, 0, rq))
    dev.reset()
    with pytest.raises(ValueError, match="before Device.reset"):
        dev.linear(x, h, None, rq)


@pytest.mark.parametrize("call, text", [
    (lambda d: d.linear(np.zeros((2, 3), int), np.zeros((4, 2), int), None, Requant(1, 0)),
     "cannot multiply"),
    (lambda d: d.linear(np.zeros((2, 3), int), np.zeros((3, 2), int)), "requant is required"),
    (lambda d: d.linear(np.full((2, 3), 300), np.zeros((3, 2), int), None, Requant(1, 0)),
     "x"),
    (lambda d: d.linear(np.zeros((2, 3), int), np.zeros((3, 2), int), None, Requant(1 << 31, 0)),
     "mult must be in"),
])
def test_bad_calls_raise_clear_errors(call, text):
    dev = llmchip.open(CFG, dram_bytes=1 << 22)
    with pytest.raises(ValueError, match=text):
        call(dev)


def test_bad_device_arguments():
    with pytest.raises(ValueError, match="backend must be one of"):
        llmchip.open(CFG, backend="fpga")
    with pytest.raises(ValueError, match="dataflow"):
        llmchip.open(CFG.replace(dataflow="os"))


def test_batch_too_big_for_dram_is_refused(rng):
    dev = llmchip.open(CFG, dram_bytes=1 << 16)
    x = golden.random_operands(rng, (200, 200))
    with pytest.raises(MemoryError, match="device DRAM"):
        dev.linear(x, golden.random_operands(rng, (200, 4)), None, Requant(1, 10))
