"""Golden model: exact products, wraparound accumulation, operand checks."""

import numpy as np
import pytest

from llmchip.sw import golden


def _scalar_mac(x, w, acc_width):
    """Reference: accumulate one product at a time with explicit wraparound."""
    m, k = x.shape
    n = w.shape[1]
    out = np.zeros((m, n), dtype=np.int64)
    half, full = 1 << (acc_width - 1), 1 << acc_width
    for i in range(m):
        for j in range(n):
            acc = 0
            for t in range(k):
                acc = (acc + int(x[i, t]) * int(w[t, j]) + half) % full - half
            out[i, j] = acc
    return out


def test_wrap_edges():
    assert golden.wrap(127, 8).item() == 127
    assert golden.wrap(128, 8).item() == -128
    assert golden.wrap(-129, 8).item() == 127
    assert golden.wrap(2**31, 32).item() == -(2**31)
    np.testing.assert_array_equal(golden.wrap(np.array([2**40 + 5]), 64), [2**40 + 5])


@pytest.mark.parametrize("acc_width", [16, 20, 32])
def test_matmul_matches_scalar_wraparound(rng, acc_width):
    x = golden.random_operands(rng, (5, 23))
    w = golden.random_operands(rng, (23, 4))
    np.testing.assert_array_equal(golden.matmul(x, w, acc_width=acc_width),
                                  _scalar_mac(x, w, acc_width))


def test_int16_accumulator_wraps():
    x = np.full((1, 4), -128)
    w = np.full((4, 1), -128)
    # 4 * 16384 = 65536 wraps to 0 in 16 bits; int32 holds it.
    assert golden.matmul(x, w, acc_width=16)[0, 0] == 0
    assert golden.matmul(x, w, acc_width=32)[0, 0] == 65536


def test_random_operands_include_extremes(rng):
    a = golden.random_operands(rng, (6, 6))
    assert a.min() == -128 and a.max() == 127
    one = golden.random_operands(rng, (1, 1))
    assert one.shape == (1, 1) and -128 <= one[0, 0] <= 127


def test_operand_checks():
    with pytest.raises(ValueError, match="x holds 128, outside the signed 8-bit range"):
        golden.matmul(np.array([[128]]), np.array([[1]]))
    with pytest.raises(TypeError, match="integer array"):
        golden.matmul(np.array([[0.5]]), np.array([[1]]))
    with pytest.raises(ValueError, match="cannot multiply shapes"):
        golden.matmul(np.zeros((2, 3), dtype=int), np.zeros((2, 3), dtype=int))
