"""The three backends agree bit for bit, and the performance model predicts the RTL.

One RTL session per simulator serves every test here (the build is cached on disk).
"""

import numpy as np
import pytest

import llmchip
from llmchip.config import AcceleratorConfig
from llmchip.sw import golden
from llmchip.sw.runtime import Requant

CFG = AcceleratorConfig(rows=4, cols=4, sp_rows=256, acc_rows=64, param_rows=8)
SHAPES = [(1, 1, 1), (7, 9, 5), (33, 20, 17), (1, 100, 40), (64, 64, 64), (40, 40, 40)]


@pytest.fixture(scope="module", params=["verilator", "icarus"])
def rtl(request):
    with llmchip.open(CFG, request.param, dram_bytes=1 << 22) as dev:
        yield dev


def operands(rng, m, k, n):
    x = golden.random_operands(rng, (m, k))
    w = golden.random_operands(rng, (k, n))
    bias = rng.integers(-2000, 2000, size=n)
    rq = Requant.from_scale(rng.uniform(2e-3, 2e-2, size=n), int(rng.integers(-5, 5)))
    return x, w, bias, rq


def test_backends_agree_bit_for_bit(rtl, rng):
    model = llmchip.open(CFG, "model", dram_bytes=1 << 20)
    shapes = SHAPES if rtl.backend == "verilator" else SHAPES[:4]
    for m, k, n in shapes:
        x, w, bias, rq = operands(rng, m, k, n)
        relu = bool(rng.integers(2))
        y_rtl = rtl.linear(x, w, bias, rq, relu=relu)
        y_model = model.linear(x, w, bias, rq, relu=relu)
        ref = golden.requantize(golden.matmul(x, w), bias, rq.mult, rq.shift,
                                rq.zero_point, relu)
        assert np.array_equal(y_rtl, ref), (rtl.backend, m, k, n)
        assert np.array_equal(y_model, y_rtl), (rtl.backend, m, k, n)
        # The model backend's cycles are the performance model's; the RTL's are counted.
        assert model.last["cycles"] == rtl.last["model_cycles"]
        assert rtl.last["array_busy"] == model.last["array_busy"]
        assert rtl.last["dram_write_bytes"] == m * n


def test_batch_with_chained_operations(rtl, rng):
    x, w1, b1, r1 = operands(rng, 24, 12, 10)
    _, w2, b2, r2 = operands(rng, 10, 10, 6)
    h = rtl.upload(w1)
    with rtl.batch() as b:
        y1 = b.linear(x, h, b1, r1)
        y2 = b.linear(y1, w2, b2, r2, relu=True)
    e1 = golden.requantize(golden.matmul(x, w1), b1, r1.mult, r1.shift, r1.zero_point)
    e2 = golden.requantize(golden.matmul(e1, w2), b2, r2.mult, r2.shift, r2.zero_point, True)
    assert np.array_equal(y1.value, e1) and np.array_equal(y2.value, e2)
    assert rtl.last["fences"] == 1
    rtl.reset()


def test_performance_model_within_two_percent(rtl, rng):
    errors = {}
    shapes = [(64, 64, 64), (128, 32, 32), (40, 40, 40), (96, 48, 80)]
    for m, k, n in shapes if rtl.backend == "verilator" else shapes[1:3]:
        x, w, bias, rq = operands(rng, m, k, n)
        rtl.linear(x, w, bias, rq)
        errors[(m, k, n)] = rtl.last["model_cycles"] / rtl.last["cycles"] - 1
    print("model error per shape:", {k: f"{v:+.2%}" for k, v in errors.items()})
    assert all(abs(e) <= 0.02 for e in errors.values()), errors
