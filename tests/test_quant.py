"""W8A8 quantization (sw.quant): schemes, calibration, and the int8 executor on a Device.

The executor's int8 results are checked exactly against the golden model, and its float
results against NumPy float within bounds that a wrong scale, zero point or bias breaks.
"""

from __future__ import annotations

import numpy as np
import pytest

import llmchip
from llmchip.config import AcceleratorConfig
from llmchip.sw import golden
from llmchip.sw.quant import (
    SCHEMES,
    FloatExecutor,
    Linear,
    QuantExecutor,
    QuantScheme,
    _affine,
    calibrate,
    quantize_weights,
    softmax,
)

CFG = AcceleratorConfig(rows=4, cols=4, sp_rows=256, acc_rows=64, param_rows=8)


def _toy(seed: int):
    """A two-layer toy block with an outlier input channel and an attention call."""
    rng = np.random.default_rng(seed)
    layers = {"a": Linear(rng.normal(0, 0.3, (24, 36)), rng.normal(0, 0.1, 36)),
              "b": Linear(rng.normal(0, 0.3, (12, 10)), None)}
    outlier = np.ones(24, np.float32)
    outlier[3] = 20.0

    def run(ex, x):
        h = ex.linear("a", x * outlier)
        q, k, v = (h[:, 12 * i:12 * (i + 1)].reshape(-1, 2, 6).transpose(1, 0, 2)
                   for i in range(3))
        ctx = ex.attention("attn", q, k[:1], v[:1], scale=0.4)
        return ex.linear("b", ctx)

    xs = [rng.normal(0, 1, (n, 24)).astype(np.float32) for n in (7, 9, 5)]
    return layers, run, xs


def _mean_error(name: str, seed: int) -> float:
    layers, run, xs = _toy(seed)
    cal = calibrate(lambda ex: [run(ex, x) for x in xs], layers, SCHEMES[name])
    errs = []
    with llmchip.open(CFG, "model", dram_bytes=1 << 20) as dev:
        qx = QuantExecutor(dev, layers, cal, report=True)
        for x in xs:
            ref = run(FloatExecutor(layers), x)
            y = run(qx, x)
            errs.append(np.linalg.norm(y - ref) / np.linalg.norm(ref))
        assert dev.totals["cycles"] > 0 and qx.cycles["a"] > 0
        assert {r["layer"] for r in qx.error_report()} == {"a", "b", "attn"}
    return float(np.mean(errs))


def test_int8_executor_tracks_float_and_smoothing_pays():
    """A 20x outlier input channel: per-tensor static inputs lose the other channels;
    SmoothQuant or per-token scales recover them."""
    seed = 11
    print(f"seed {seed}")
    err = {name: _mean_error(name, seed) for name in SCHEMES}
    print(err)
    assert err["smooth-dynamic"] < 0.04
    assert err["smooth-static"] < 0.1
    assert err["dynamic"] < 0.1
    assert err["smooth-static"] < err["static"] / 2
    assert err["smooth-dynamic"] < err["dynamic"]
    assert err["static"] <= err["baseline"] * 1.1


def test_linear_int8_results_equal_the_golden_model():
    """The device output is exactly requant(x_q @ w_q + b_q) with the executor's scales."""
    layers, run, xs = _toy(3)
    cal = calibrate(lambda ex: [run(ex, x) for x in xs], layers, SCHEMES["static"])
    with llmchip.open(CFG, "model", dram_bytes=1 << 20) as dev:
        qx = QuantExecutor(dev, layers, cal)
        p = qx.prepared["a"]
        x = xs[0] * np.where(np.arange(24) == 3, 20.0, 1.0).astype(np.float32)
        y = qx.linear("a", x)
        xq = np.clip(np.rint(x / p.sx) + p.zx, -128, 127).astype(np.int64)
        bq = np.rint(layers["a"].b / (p.sx * p.sw)) - p.zx * p.colsum
        mult, shift = golden.quantize_multiplier(p.sx * p.sw / p.sy)
        yq = golden.requantize(golden.matmul(xq, p.wq), bq.astype(np.int64), mult, shift)
        np.testing.assert_array_equal(y, (yq * p.sy).astype(np.float32))


def test_smoothing_moves_the_outlier_into_the_weights():
    layers, run, xs = _toy(5)
    cal = calibrate(lambda ex: [run(ex, x) for x in xs], layers, SCHEMES["smooth-static"])
    s = cal.smooth["a"]
    assert s[3] == s.max() and s[3] > 3 * np.median(s)
    # Smoothed input ranges are flatter than raw ones.
    raw = calibrate(lambda ex: [run(ex, x) for x in xs], layers, SCHEMES["static"])
    flat = cal.inputs["a"].absmax
    assert flat.max() / np.median(flat) < raw.inputs["a"].absmax.max() / np.median(
        raw.inputs["a"].absmax)


def test_per_channel_weights_beat_per_tensor_on_uneven_columns():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (64, 8)) * np.array([0.01, 1, 1, 1, 1, 1, 1, 30])
    for per, bound in (("channel", 0.01), ("tensor", None)):
        wq, s = quantize_weights(w, per)
        assert wq.min() >= -127 and wq.max() <= 127
        err = np.abs(wq * s - w).max(axis=0) / np.abs(w).max(axis=0)
        if bound:
            assert err.max() < bound
        else:
            assert err[0] > 0.2     # the small column drowns under the large one's scale


def test_affine_covers_zero_and_saturates():
    s, zp = _affine(-0.17, 6.0)
    assert -128 <= zp <= 127
    assert np.rint(0.0 / s) + zp == zp
    assert abs((np.rint(6.0 / s) + zp - zp) * s - 6.0) < s
    s, zp = _affine(1.0, 2.0)            # widened to hold 0
    assert zp == -128


def test_attention_softmax_masks_and_groups():
    rng = np.random.default_rng(2)
    q, k, v = rng.normal(size=(4, 3, 5)), rng.normal(size=(2, 6, 5)), rng.normal(size=(2, 6, 5))
    mask = np.tril(np.ones((3, 6), bool), 3)
    out = FloatExecutor({}).attention("x", q, k, v, scale=0.5, mask=mask)
    # Head 3 uses key/value head 1; masked keys get no weight.
    p = softmax(np.where(mask, 0.5 * q[3] @ k[1].T, -np.inf))
    np.testing.assert_allclose(out[:, 15:20], p @ v[1], rtol=1e-5)
    assert (p[~mask] == 0).all()


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="weights must be"):
        QuantScheme(weights="row")
    with pytest.raises(ValueError, match="activations must be"):
        QuantScheme(activations="sometimes")
    with pytest.raises(ValueError, match="smooth"):
        QuantScheme(smooth=1.5)
    with pytest.raises(ValueError, match="headroom"):
        QuantScheme(headroom=0.5)
    with pytest.raises(ValueError, match="2D"):
        Linear(np.zeros(3))
    layers, run, xs = _toy(1)
    cal = calibrate(lambda ex: ex.linear("a", xs[0]), layers, SCHEMES["static"])
    with llmchip.open(CFG, "model", dram_bytes=1 << 20) as dev:
        with pytest.raises(ValueError, match="no calibration data for layer"):
            QuantExecutor(dev, layers, cal)


def test_digest_is_deterministic_and_sensitive():
    layers, run, xs = _toy(9)
    cal = calibrate(lambda ex: [run(ex, x) for x in xs], layers, SCHEMES["dynamic"])
    digests = []
    for x in (xs[0], xs[0], xs[1]):
        with llmchip.open(CFG, "model", dram_bytes=1 << 20) as dev:
            qx = QuantExecutor(dev, layers, cal)
            run(qx, x)
            digests.append(qx.digest.hexdigest())
    assert digests[0] == digests[1] != digests[2]


@pytest.mark.parametrize("scheme", ["static", "smooth-dynamic"])
def test_refined_logits_are_finer_where_they_matter(scheme):
    """A logits layer with one shared output scale: the second pass gives each row's top
    candidates the exact int32 result to within 1/16 of the first pass's step."""
    rng = np.random.default_rng(4)
    print("seed 4")
    layers = {"lm": Linear(rng.normal(0, 1, (32, 300)), None)}
    xs = [rng.normal(0, 1, (6, 32)).astype(np.float32) for _ in range(3)]
    cal = calibrate(lambda ex: [ex.linear("lm", x) for x in xs], layers, SCHEMES[scheme])
    groups = {"lm": np.zeros(300, dtype=np.int64)}
    with llmchip.open(CFG, "model", dram_bytes=1 << 21) as dev:
        coarse = QuantExecutor(dev, layers, cal, out_groups=groups)
        fine = QuantExecutor(dev, layers, cal, out_groups=groups, refine={"lm": 8})
        p = fine.prepared["lm"]
        x = xs[0] / p.smooth if p.smooth is not None else xs[0]
        if scheme == "static":
            xq = np.clip(np.rint(x / p.sx) + p.zx, -128, 127).astype(np.int64)
            unit = np.full((len(x), 1), p.sx)
            exact = (xq @ p.wq - p.zx * p.colsum) * unit * p.sw
        else:
            unit = np.abs(x).max(axis=1, keepdims=True) / 127.0
            xq = np.clip(np.rint(x / unit), -128, 127).astype(np.int64)
            exact = (xq @ p.wq) * unit * p.sw
        yc, yf = coarse.linear("lm", xs[0]), fine.linear("lm", xs[0])
        # (rows, 1): the first pass's step (sy is per unit of the row scale if dynamic)
        step = np.full_like(unit, p.sy.max()) if scheme == "static" else p.sy.max() * unit
        top = np.argsort(-exact, axis=1)[:, :4]
        ec = np.abs(np.take_along_axis(yc - exact, top, 1)) / step
        ef = np.abs(np.take_along_axis(yf - exact, top, 1)) / step
        # The second pass spans +-8 first-pass steps around each row's largest output.
        near = np.take_along_axis(exact, top, 1) >= exact.max(axis=1, keepdims=True) - 7 * step
        assert ec[near].max() > 0.2                     # the first pass rounds visibly
        assert ef[near].max() <= 1 / 32 + 1e-3, ef.max()   # half a fine step
        assert (np.argmax(yf, 1) == np.argmax(exact, 1)).all()
        assert "lm.refine" in fine.cycles
        with pytest.raises(ValueError, match="refine wants"):
            QuantExecutor(dev, layers, cal, refine={"nope": 4})
