"""Requantization: the golden model's rule, its relation to TFLite, and the PostProcessor
pipeline in Amaranth's simulator (bit-exact rows, back-pressure, latency)."""

from __future__ import annotations

import math
import subprocess

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.sim import Simulator

from llmchip.rtl.generate import LINT_WAIVERS
from llmchip.rtl.postproc import PostProcessor
from llmchip.sw import golden
from llmchip.tb import toolchain

I32_MIN, I32_MAX = golden.int_range(32)


def _scalar_requantize(acc, bias, mult, shift, zero_point, relu, out_width):
    """Reference with unbounded Python ints, written from the rule in docs/requant.md."""
    x = (acc + bias + 2**31) % 2**32 - 2**31
    p = x * mult
    s = min(shift, 62)
    y = p if s == 0 else (p + (1 << (s - 1))) >> s
    lo, hi = golden.int_range(out_width)
    return min(max(y + zero_point, zero_point if relu else lo), hi)


# -- golden model: the rule ------------------------------------------------------------

@pytest.mark.parametrize("p, s, y", [
    (3, 1, 2), (-3, 1, -1),          # ties go toward +infinity: 1.5 -> 2, -1.5 -> -1
    (5, 1, 3), (-5, 1, -2),
    (6, 2, 2), (-6, 2, -1),          # 1.5 -> 2, -1.5 -> -1
    (5, 2, 1), (-5, 2, -1),          # 1.25 -> 1, -1.25 -> -1
    (7, 2, 2), (-7, 2, -2),          # 1.75 -> 2, -1.75 -> -2
    (-1, 1, 0), (-2, 2, 0), (1, 1, 1),
    (100, 0, 100), (-100, 0, -100),  # shift 0 is the identity
    (-128, 31, 0), (2**31 - 1, 31, 1), (-(2**31), 31, -1),
])
def test_rounding_hand_examples(p, s, y):
    out = golden.requantize(np.array([[p]]), 0, 1, s, out_width=32)
    assert out.dtype == np.int64 and out[0, 0] == y


def test_multiplier_then_shift():
    # 1000 * 0.75 = 750 -> 127; 100 * 0.75 = 75; -99 * 0.75 = -74.25 -> -74;
    # -170 * 0.75 = -127.5 -> -127 (tie up); -200 * 0.75 = -150 -> -128.
    acc = np.array([[1000, 100, -99, -170, -200]])
    out = golden.requantize(acc, 0, 3 << 29, 31)
    np.testing.assert_array_equal(out, [[127, 75, -74, -127, -128]])


def test_bias_add_wraps_at_32_bits():
    # (2**31 - 1) + 1 wraps to -2**31; -2**31 + -1 wraps to 2**31 - 1. Scale 2**-24.
    acc = np.array([[I32_MAX, I32_MIN, I32_MAX]])
    out = golden.requantize(acc, [1, -1, 0], 1, 24)
    np.testing.assert_array_equal(out, [[-128, 127, 127]])
    np.testing.assert_array_equal(golden.requantize(acc, [1, -1, 0], 1, 24, out_width=16),
                                  [[-128, 128, 128]])


def test_saturation_of_huge_products_does_not_wrap():
    # p = (2**31 - 1)**2 ~ 2**62: a wrapping implementation would see garbage low bits.
    big = 2**31 - 1
    acc = np.array([[big, I32_MIN, 256, -256]])
    out = golden.requantize(acc, 0, big, 0)
    np.testing.assert_array_equal(out, [[127, -128, 127, -128]])
    out = golden.requantize(acc, 0, big, 62, out_width=32)
    # (p + 2**61) >> 62: 1 for p >= 2**61, -1 for p < -2**61, else 0.
    np.testing.assert_array_equal(out, [[1, -1, 0, 0]])
    # p / 2**30 ~ 2**32 saturates to int32; its low 32 bits would be negative.
    assert golden.requantize(np.array([[big]]), 0, big, 30, out_width=32)[0, 0] == I32_MAX


def test_zero_point_and_relu():
    acc = np.array([[-300, -20, -5, 0, 5, 200]])
    np.testing.assert_array_equal(golden.requantize(acc, 0, 1, 0, zero_point=-10),
                                  [[-128, -30, -15, -10, -5, 127]])
    # ReLU clamps at the zero point, the quantized 0.0.
    np.testing.assert_array_equal(golden.requantize(acc, 0, 1, 0, zero_point=-10, relu=True),
                                  [[-10, -10, -10, -10, -5, 127]])
    np.testing.assert_array_equal(golden.requantize(acc, 0, 1, 0, zero_point=20, relu=True),
                                  [[20, 20, 20, 20, 25, 127]])
    np.testing.assert_array_equal(golden.requantize(acc, 0, 1, 0, zero_point=-128, relu=True),
                                  golden.requantize(acc, 0, 1, 0, zero_point=-128))
    np.testing.assert_array_equal(golden.requantize(acc, 0, 1, 0, zero_point=127, relu=True),
                                  [[127] * 6])


def test_shift_63_acts_as_62():
    acc = np.array([[I32_MAX, I32_MIN, 5]])
    mult = 2**31 - 1
    np.testing.assert_array_equal(golden.requantize(acc, 0, mult, 63),
                                  golden.requantize(acc, 0, mult, 62))
    np.testing.assert_array_equal(golden.requantize(acc, 0, mult, 63), [[1, -1, 0]])


def test_per_channel_parameters_apply_by_column():
    acc = np.array([[10, 10, 10], [-10, -10, -10]])
    out = golden.requantize(acc, [0, 1, -20], [1, 2, 3], [0, 1, 2])
    np.testing.assert_array_equal(out, [[10, 11, -7], [-10, -9, -22]])


def test_matches_unbounded_reference(rng):
    """Every intermediate is exact in int64: compare with Python's unbounded ints."""
    m, n = 40, 16
    acc = golden.random_operands(rng, (m, n), 32)
    bias = golden.random_operands(rng, (n,), 32)
    mult = rng.integers(0, 2**31, size=n)
    mult[:3] = [0, 2**31 - 1, 2**30]
    shift = rng.integers(0, 64, size=n)
    shift[:6] = [0, 1, 31, 62, 63, 32]
    for out_width in (8, 16, 32):
        for zp, relu in ((0, False), (golden.int_range(out_width)[0], True), (3, True)):
            out = golden.requantize(acc, bias, mult, shift, zp, relu, out_width)
            ref = [[_scalar_requantize(int(acc[i, j]), int(bias[j]), int(mult[j]),
                                       int(shift[j]), zp, relu, out_width)
                    for j in range(n)] for i in range(m)]
            np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("kwargs, exc, text", [
    ({"acc": [[2**31]]}, ValueError, "acc holds 2147483648, outside the signed 32-bit range"),
    ({"acc": [[0.5]]}, TypeError, "acc must be an integer array"),
    ({"acc": [1, 2]}, ValueError, "acc must be two-dimensional"),
    ({"bias": [2**31]}, ValueError, "bias holds 2147483648, outside the signed 32-bit range"),
    ({"bias": [1, 2]}, ValueError, "bias must be a scalar or have length 1, not shape (2,)"),
    ({"mult": 2**31}, ValueError, "mult holds 2147483648, outside the multiplier range"),
    ({"mult": -1}, ValueError, "mult holds -1, outside the multiplier range [0, 2147483647]"),
    ({"shift": 64}, ValueError, "shift holds 64, outside the shift range [0, 63]"),
    ({"shift": -1}, ValueError, "shift holds -1, outside the shift range"),
    ({"zero_point": 128}, ValueError, "zero_point must be an int in the signed 8-bit range "
                                      "[-128, 127], not 128"),
    ({"zero_point": -129}, ValueError, "not -129"),
    ({"out_width": 33}, ValueError, "out_width must be an int between 2 and 32, not 33"),
])
def test_requantize_validation(kwargs, exc, text):
    args = {"acc": [[0]], "bias": 0, "mult": 1, "shift": 0, **kwargs}
    args["acc"] = np.array(args["acc"])
    with pytest.raises(exc) as info:
        golden.requantize(**args)
    assert text in str(info.value)


# -- golden model: choosing (mult, shift) ----------------------------------------------

@pytest.mark.parametrize("scale, pair", [
    (1.0, (2**30, 30)), (0.5, (2**30, 31)), (0.75, (3 << 29, 31)), (2.0**-32, (2**30, 62)),
    (2.0**30, (2**30, 0)), (0.0, (0, 0)),
    (2.0**-33, (2**29, 62)), (2.0**-63, (1, 62)), (2.0**-64, (0, 62)),  # below 2**-32
    ((2**31 - 1) / 2**40, (2**31 - 1, 40)), (1 - 2.0**-33, (2**30, 30)),  # carry
])
def test_quantize_multiplier_examples(scale, pair):
    assert golden.quantize_multiplier(scale) == pair


def test_quantize_multiplier_is_most_precise(rng):
    scales = np.exp2(rng.uniform(-32, 30, size=2000))
    mult, shift = golden.quantize_multiplier(scales)
    assert mult.shape == scales.shape and mult.dtype == np.int64
    assert ((mult >= 2**30) & (mult < 2**31)).all() and ((shift >= 0) & (shift <= 62)).all()
    # The pair is within half a unit of the 31st significant bit.
    err = np.abs(np.ldexp(mult.astype(np.float64), -shift) - scales)
    assert (err <= np.ldexp(0.5, -shift) * (1 + 1e-9)).all()


@pytest.mark.parametrize("scale, text", [
    (-0.1, "scale must be finite and >= 0, not -0.1"),
    (math.inf, "not inf"), (math.nan, "not nan"),
    (2.0**31, "scale must be below 2**31 - 0.5 (shift >= 0), not 2147483648.0"),
    (2**31 - 0.5, "not 2147483647.5"),
])
def test_quantize_multiplier_rejects(scale, text):
    with pytest.raises(ValueError) as info:
        golden.quantize_multiplier(scale)
    assert text in str(info.value)
    with pytest.raises(ValueError):
        golden.quantize_multiplier(np.array([0.25, scale]))


def test_requantize_approximates_real_scaling(rng):
    """With quantize_multiplier(s), requantize(x) is within 1 of round(x * s)."""
    n = 20000
    scales = np.exp2(rng.uniform(-24, 0, size=n))
    x = rng.integers(I32_MIN, I32_MAX + 1, size=n)
    small = rng.random(n) < 0.5          # also values whose results land in int8
    x[small] = np.round(rng.uniform(-120, 120, size=small.sum()) / scales[small])
    mult, shift = golden.quantize_multiplier(scales)
    out = np.array([golden.requantize(np.array([[x[k]]]), 0, mult[k], shift[k],
                                      out_width=32)[0, 0] for k in range(0, n, 8)])
    want = np.round(x[::8] * scales[::8])
    assert np.abs(out - want).max() <= 1
    # The same through a per-channel row, saturated to int8.
    row = golden.requantize(x[small][None, :], 0, mult[small], shift[small])
    want8 = np.clip(np.round(x[small] * scales[small]), -128, 127)
    assert np.abs(row[0] - want8).max() <= 1


# -- relation to TFLite / gemmlowp -----------------------------------------------------

def _srdhm(a: int, b: int) -> int:
    """gemmlowp SaturatingRoundingDoublingHighMul on int32 (C truncating division)."""
    if a == b == I32_MIN:
        return I32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    num = ab + nudge
    q = abs(num) >> 31
    return q if num >= 0 else -q


def _rdbpot(x: int, exponent: int) -> int:
    """gemmlowp RoundingDivideByPOT on int32."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def _tflite_mbqm(x: int, m0: int, exponent: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier(x, M0, exponent)."""
    left, right = max(exponent, 0), max(-exponent, 0)
    return _rdbpot(_srdhm(x * (1 << left), m0), right)


def _tflite_quantize_multiplier(scale: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier: (M0, exponent) with scale ~ M0 * 2**(exponent - 31)."""
    if scale == 0:
        return 0, 0
    q, exponent = math.frexp(scale)
    m0 = math.floor(q * 2**31 + 0.5)     # std::round: exact here, q * 2**31 < 2**31
    if m0 == 2**31:
        m0, exponent = m0 // 2, exponent + 1
    if exponent < -31:
        return 0, 0
    return m0, exponent


def test_gemmlowp_primitives_round_as_documented():
    # SRDHM: round(a * b / 2**31), ties toward +infinity (the nudge 1 - 2**30 for negative
    # products plus truncating division is floor((ab + 2**30) / 2**31)).
    assert _srdhm(1, 2**30) == 1 and _srdhm(-1, 2**30) == 0          # +-0.5
    assert _srdhm(3, 2**30) == 2 and _srdhm(-3, 2**30) == -1         # +-1.5
    assert _srdhm(I32_MIN, I32_MIN) == I32_MAX
    # RoundingDivideByPOT: ties away from zero.
    assert [_rdbpot(v, 1) for v in (1, 3, -1, -3)] == [1, 2, -1, -2]


def test_quantize_multiplier_equals_tflite(rng):
    scales = np.concatenate([np.exp2(rng.uniform(-32, 30, size=3000)),
                             # q * 2**31 = 2**30 + j + 1/2, exactly halfway: both round up
                             (np.arange(200) * 2 + 2**31 + 1) / 2.0**32])
    for scale in scales:
        m0, exponent = _tflite_quantize_multiplier(float(scale))
        assert golden.quantize_multiplier(float(scale)) == (m0, 31 - exponent)


def _compare_with_tflite(xs, m0s, exponents):
    """Return (ours, tflite, exact numerator p, shift) for each sample."""
    rows = []
    for x, m0, e in zip(xs, m0s, exponents, strict=True):
        x, m0, e = int(x), int(m0), int(e)
        ours = int(golden.requantize(np.array([[x]]), 0, m0, 31 - e, out_width=32)[0, 0])
        rows.append((ours, _tflite_mbqm(x, m0, e), x * m0, 31 - e))
    return rows


def _classify(rows):
    """Check each disagreement and count them by cause."""
    ties = double = 0
    for ours, theirs, p, s in rows:
        # Ours is the nearest integer to p / 2**s, ties up: -1/2 <= p / 2**s - ours < 1/2.
        assert -(1 << s) <= 2 * p - (ours << (s + 1)) < (1 << s)
        if ours == theirs:
            continue
        assert abs(ours - theirs) == 1
        if (p & ((1 << s) - 1)) == 1 << (s - 1) and p < 0:
            # An exact negative tie: TFLite's last step rounds it away from zero.
            assert theirs == ours - 1
            ties += 1
        else:
            # The first rounding (SRDHM) moved the value onto a tie that the second then
            # rounded away from zero: TFLite is more than half a unit from the exact value,
            # on the side away from zero.
            assert abs(2 * p - (theirs << (s + 1))) > (1 << s)
            assert theirs - ours == (1 if p > 0 else -1)
            double += 1
    return ties, double


@pytest.mark.parametrize("right", [1, 2, 3, 4, 6, 10])
def test_tflite_disagreement_rate_per_right_shift(rng, right):
    """For a right shift of r bits after SRDHM, about 2**-(r+1) of values differ by 1."""
    n = 4000
    x = rng.integers(I32_MIN, I32_MAX + 1, size=n)
    m0 = rng.integers(2**30, 2**31, size=n)
    rows = _compare_with_tflite(x, m0, np.full(n, -right))
    ties, double = _classify(rows)
    rate, p = (ties + double) / n, 2.0 ** -(right + 1)
    print(f"right shift {right}: {ties + double}/{n} = {rate:.4%} differ "
          f"(expected ~{p:.4%}; {ties} exact negative ties, {double} double roundings)")
    assert abs(rate - p) <= 6 * math.sqrt(p * (1 - p) / n) + 1e-3


def test_tflite_agrees_exactly_without_right_shift(rng):
    """Exponent >= 0: TFLite rounds once (SRDHM, ties up), as we do; no disagreement."""
    n = 3000
    exponents = rng.integers(0, 9, size=n)
    x = np.array([rng.integers(-(2**(31 - e)), 2**(31 - e)) for e in exponents])
    m0 = rng.integers(2**30, 2**31, size=n)
    rows = _compare_with_tflite(x, m0, exponents)
    assert all(ours == theirs for ours, theirs, _, _ in rows)
    # Exact ties included: p / 2**31 = k + 1/2 for x = 2k + 1, M0 = 2**30.
    for x in (-5, -3, -1, 1, 3, 5):
        assert _tflite_mbqm(x, 2**30, 0) == golden.requantize(np.array([[x]]), 0, 2**30, 31,
                                                             out_width=32)[0, 0]


def test_tflite_single_rounding_build_agrees_exactly(rng):
    """TFLite built with TFLITE_SINGLE_ROUNDING rounds once, as we do: identical results."""
    n = 5000
    exponents = rng.integers(-31, 31, size=n)
    x = rng.integers(I32_MIN, I32_MAX + 1, size=n)
    m0 = rng.integers(2**30, 2**31, size=n)
    for xi, mi, e in zip(x, m0, exponents, strict=True):
        xi, mi, total_shift = int(xi), int(mi), 31 - int(e)
        # tflite::MultiplyByQuantizedMultiplier under TFLITE_SINGLE_ROUNDING (int64 math);
        # its result must fit int32, so compare where it does.
        theirs = (xi * mi + (1 << (total_shift - 1))) >> total_shift
        if I32_MIN <= theirs <= I32_MAX:
            assert golden.requantize(np.array([[xi]]), 0, mi, total_shift,
                                     out_width=32)[0, 0] == theirs


def test_tflite_disagreement_on_int8_layers(rng):
    """Typical int8 layers (scale 2**-14 to 2**-5, results in range): rare, +-1 only."""
    n = 20000
    scales = np.exp2(rng.uniform(-14, -5, size=n))
    pairs = [_tflite_quantize_multiplier(float(s)) for s in scales]
    m0 = np.array([m for m, _ in pairs])
    exponents = np.array([e for _, e in pairs])
    x = np.round(rng.uniform(-128, 128, size=n) / scales).astype(np.int64)
    rows = _compare_with_tflite(x, m0, exponents)
    ties, double = _classify(rows)
    rate = (ties + double) / n
    print(f"int8 layers: {ties + double}/{n} = {rate:.4%} differ "
          f"({ties} exact negative ties, {double} double roundings)")
    assert rate < 0.01
    # Exact negative ties, constructed: x * M0 / 2**(31 - e) = -k - 1/2.
    for k in range(5):
        x, m0, e = -(2 * k + 1) * 2**7, 2**30, -7
        assert _tflite_mbqm(x, m0, e) == -k - 1
        assert golden.requantize(np.array([[x]]), 0, m0, 31 - e)[0, 0] == -k


# -- PostProcessor in Amaranth's simulator ---------------------------------------------

def _random_acc(rng, shape, width):
    """Accumulator values: range extremes, uniform, and log-uniform magnitudes."""
    lo, hi = golden.int_range(width)
    a = rng.integers(lo, hi + 1, size=shape)
    kind = rng.integers(0, 4, size=shape)
    mag = np.floor(np.exp2(rng.uniform(0, width - 1, size=shape))).astype(np.int64)
    a = np.where(kind == 0, np.where(rng.random(shape) < 0.5, lo, hi), a)
    a = np.where(kind >= 2, np.where(rng.random(shape) < 0.5, -mag, mag - 1), a)
    return a


def _param_sets(rng, lanes, out_width):
    """Per-lane parameter sets cycling through the extremes, then random ones."""
    lo, hi = golden.int_range(out_width)
    biases = [I32_MIN, I32_MAX, 0, -1, None]
    mults = [0, 2**31 - 1, 2**30, 1, None]
    shifts = [0, 1, 31, 62, 63, 35, None]
    zps = [lo, hi, 0, None]

    sets = []
    for g in range(8):
        bias = [biases[(g + k) % len(biases)] for k in range(lanes)]
        mult = [mults[(2 * g + k) % len(mults)] for k in range(lanes)]
        shift = [shifts[(3 * g + k) % len(shifts)] for k in range(lanes)]
        sets.append({
            "bias": [int(rng.integers(I32_MIN, I32_MAX + 1)) if v is None else v
                     for v in bias],
            "mult": [int(rng.integers(0, 2**31)) if v is None else v for v in mult],
            "shift": [int(rng.integers(0, 64)) if v is None else v for v in shift],
            "zero_point": int(rng.integers(lo, hi + 1)) if zps[g % 4] is None else zps[g % 4],
            "relu": bool(g % 2),
        })
    # Products near 2**62 (shift 62 and 63 give -1/0/1 only there) and a wrapping bias.
    sets.append({"bias": [0] * lanes, "mult": [2**31 - 1] * lanes,
                 "shift": [(63, 62, 0, 1)[k % 4] for k in range(lanes)],
                 "zero_point": 0, "relu": False})
    sets.append({"bias": [I32_MAX] * lanes, "mult": [2**30] * lanes,
                 "shift": [(31, 1, 62, 0)[k % 4] for k in range(lanes)],
                 "zero_point": hi, "relu": True})
    for _ in range(6):  # realistic: results mostly in range
        sets.append({
            "bias": [int(v) for v in rng.integers(-2**16, 2**16, size=lanes)],
            "mult": [int(v) for v in rng.integers(2**30, 2**31, size=lanes)],
            "shift": [int(v) for v in rng.integers(31, 50, size=lanes)],
            "zero_point": int(rng.integers(lo, hi + 1)),
            "relu": bool(rng.random() < 0.5),
        })
    return sets


def _groups(rng, lanes, acc_width, out_width, rows_per_group):
    groups = []
    for params in _param_sets(rng, lanes, out_width):
        m = int(rng.integers(1, rows_per_group + 1))
        acc = _random_acc(rng, (m, lanes), acc_width)
        last = rng.random(m) < 0.3
        last[-1] = True
        expected = golden.requantize(acc, np.array(params["bias"]), np.array(params["mult"]),
                                     np.array(params["shift"]), params["zero_point"],
                                     params["relu"], out_width)
        groups.append((params, acc, last, expected))
    return groups


def _run_stream(dut, groups, rng, valid_prob=1.0, ready_prob=1.0, max_cycles=20000):
    """Stream the groups' rows through ``dut`` (parameters change only when it is empty).

    Returns (accept cycles, outputs as (cycle, lanes, last)) and checks the stream rule
    that a row offered on ``o`` stays, unchanged, until taken.
    """
    rows = [(gi, acc_row, bool(last))
            for gi, (_, acc, lasts, _) in enumerate(groups)
            for acc_row, last in zip(acc, lasts, strict=True)]
    accepted: list[int] = []
    outputs: list[tuple[int, tuple[int, ...], bool]] = []

    async def bench(ctx):
        current = -1
        offering = False
        held = None
        for cycle in range(max_cycles):
            sent = len(accepted)
            if not offering and sent < len(rows):
                gi, acc_row, last = rows[sent]
                if gi != current and len(outputs) == sent:
                    params = groups[gi][0]
                    for name in ("bias", "mult", "shift", "zero_point", "relu"):
                        ctx.set(getattr(dut, name), params[name])
                    current = gi
                if gi == current and rng.random() < valid_prob:
                    ctx.set(dut.i.payload, {"data": [int(v) for v in acc_row], "last": last})
                    offering = True
            ctx.set(dut.i.valid, offering)
            ready = bool(rng.random() < ready_prob)
            ctx.set(dut.o.ready, ready)
            fire = offering and ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                o = ctx.get(dut.o.payload)
                beat = (tuple(int(v) for v in o.data), bool(o.last))
                assert held is None or beat == held, f"cycle {cycle}: held row changed"
                if ready:
                    outputs.append((cycle, *beat))
                held = None if ready else beat
            else:
                assert held is None, f"cycle {cycle}: valid dropped before the row was taken"
            await ctx.tick()
            if fire:
                accepted.append(cycle)
                offering = False
            if len(outputs) == len(rows):
                # Run past the end to catch extra rows.
                for extra in range(PostProcessor.latency + 3):
                    assert not ctx.get(dut.o.valid), f"extra row {extra + 1} cycles after the end"
                    await ctx.tick()
                return
        raise TimeoutError(f"{len(outputs)} of {len(rows)} rows out in {max_cycles} cycles")

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return accepted, outputs


def _check_outputs(groups, outputs):
    want = [(tuple(int(v) for v in row), bool(last))
            for _, _, lasts, expected in groups
            for row, last in zip(expected, lasts, strict=True)]
    got = [(lanes, last) for _, lanes, last in outputs]
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"row {k}: got {g}, want {w}"


@pytest.mark.parametrize("lanes, acc_width, out_width", [(4, 32, 8), (3, 20, 12)])
def test_random_rows_with_backpressure_match_golden(rng, lanes, acc_width, out_width):
    dut = PostProcessor(lanes, acc_width, out_width)
    groups = _groups(rng, lanes, acc_width, out_width, rows_per_group=60)
    _, outputs = _run_stream(dut, groups, rng, valid_prob=0.7, ready_prob=0.5)
    _check_outputs(groups, outputs)


def test_latency_and_full_throughput(rng):
    dut = PostProcessor(2)
    groups = _groups(rng, 2, 32, 8, rows_per_group=1)[:1]
    acc = _random_acc(rng, (20, 2), 32)
    params = groups[0][0]
    expected = golden.requantize(acc, np.array(params["bias"]), np.array(params["mult"]),
                                 np.array(params["shift"]), params["zero_point"],
                                 params["relu"])
    lasts = np.arange(20) % 5 == 4
    groups = [(params, acc, lasts, expected)]
    accepted, outputs = _run_stream(dut, groups, rng)
    _check_outputs(groups, outputs)
    assert accepted == list(range(20)), "input stalled without back-pressure"
    assert [c for c, _, _ in outputs] == [c + PostProcessor.latency for c in accepted]
    assert PostProcessor.latency == 10


def test_stall_holds_every_stage():
    """With o.ready low, exactly one row per stage is taken; they leave in order after."""
    dut = PostProcessor(1, out_width=16)
    n = PostProcessor.latency

    async def bench(ctx):
        ctx.set(dut.mult, [1])
        ctx.set(dut.o.ready, 0)
        taken = 0
        for cycle in range(3 * n):
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, {"data": [100 + taken], "last": taken % 2})
            if cycle >= n:
                assert ctx.get(dut.o.valid)
            fire = ctx.get(dut.i.ready)
            await ctx.tick()
            taken += fire
        assert taken == n
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        seen = []
        for _ in range(n + 2):
            if ctx.get(dut.o.valid):
                o = ctx.get(dut.o.payload)
                seen.append((int(o.data[0]), int(o.last)))
            await ctx.tick()
        assert seen == [(100 + k, k % 2) for k in range(n)]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("kwargs, text", [
    ({"lanes": 0}, "lanes must be an int >= 1, not 0"),
    ({"lanes": True}, "lanes must be an int >= 1, not True"),
    ({"lanes": 2, "acc_width": 33}, "acc_width must be an int between 2 and 32, not 33"),
    ({"lanes": 2, "out_width": 1}, "out_width must be an int between 2 and 32, not 1"),
    ({"lanes": 2, "out_width": 8.0}, "out_width must be an int between 2 and 32, not 8.0"),
])
def test_postprocessor_rejects_bad_parameters(kwargs, text):
    with pytest.raises(ValueError) as info:
        PostProcessor(**kwargs)
    assert str(info.value) == text


@pytest.mark.parametrize("lanes, acc_width, out_width", [(4, 32, 8), (1, 20, 32)])
def test_verilator_lint_wall_is_clean(tmp_path, lanes, acc_width, out_width):
    exe = toolchain.require("verilator")
    path = tmp_path / "pp.v"
    path.write_text(verilog.convert(PostProcessor(lanes, acc_width, out_width), name="pp",
                                    emit_src=False))
    proc = subprocess.run([exe, "--lint-only", "-Wall", str(LINT_WAIVERS), str(path),
                           "--top-module", "pp"], capture_output=True, text=True, timeout=600)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "%Warning" not in report, report[:3000]
