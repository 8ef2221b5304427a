"""NumPy golden models of the accelerator's integer arithmetic, shared by tests and runtime.

The array multiplies signed ``in_width``-bit operands exactly and accumulates in a signed
``acc_width``-bit register with two's-complement wraparound; :func:`matmul` reproduces that
bit for bit (wrapping once at the end equals wrapping at every add, modulo 2**acc_width).
The post-processor's requantization to int8 is :func:`requantize` (see docs/requant.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["wrap", "int_range", "check_operand", "matmul", "ws_stream", "os_stream",
           "random_operands", "requantize", "quantize_multiplier", "MAX_SHIFT"]


def int_range(width: int) -> tuple[int, int]:
    """Return the (min, max) of a signed two's-complement integer of ``width`` bits."""
    return -(1 << (width - 1)), (1 << (width - 1)) - 1


def wrap(x: np.ndarray | int, width: int) -> np.ndarray:
    """Wrap integers to signed ``width``-bit two's complement (``width`` <= 64)."""
    a = np.asarray(x, dtype=np.int64)
    if width >= 64:
        return a.copy()
    mask = np.int64((1 << width) - 1)
    sign = np.int64(1 << (width - 1))
    u = a & mask
    return np.where(u & sign, u - (mask + 1), u).astype(np.int64)


def check_operand(name: str, x: np.ndarray, width: int) -> np.ndarray:
    """Return ``x`` as int64 after checking every element fits in signed ``width`` bits.

    Raises
    ------
    TypeError
        If ``x`` is not an integer array.
    ValueError
        If an element is outside the signed range, naming the first offending value.
    """
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not dtype {a.dtype}")
    lo, hi = int_range(width)
    bad = (a < lo) | (a > hi)
    if bad.any():
        v = a[bad].flat[0]
        raise ValueError(f"{name} holds {v}, outside the signed {width}-bit range [{lo}, {hi}]")
    return a.astype(np.int64)


def matmul(x: np.ndarray, w: np.ndarray, *, in_width: int = 8, acc_width: int = 32
           ) -> np.ndarray:
    """Return ``x @ w`` exactly as the array computes it.

    Parameters
    ----------
    x : (M, K) integer array of signed ``in_width``-bit values.
    w : (K, N) integer array of signed ``in_width``-bit values.
    in_width, acc_width : int
        Operand and accumulator widths in bits.

    Returns
    -------
    (M, N) int64 array holding signed ``acc_width``-bit results (wrapped).

    Raises
    ------
    ValueError
        If the shapes do not chain or an operand is out of range.
    """
    x = check_operand("x", x, in_width)
    w = check_operand("w", w, in_width)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"cannot multiply shapes {x.shape} and {w.shape}")
    # int64 holds any K below 2**(63 - 2*in_width) terms exactly; the wrap is then exact.
    return wrap(x @ w, acc_width)


def ws_stream(tiles: Iterable[tuple[np.ndarray, np.ndarray]], *, in_width: int = 8,
              acc_width: int = 32) -> list[np.ndarray]:
    """Golden output of a weight-stationary stream: one ``X_t @ W_t`` per (W_t, X_t) tile."""
    return [matmul(x, w, in_width=in_width, acc_width=acc_width) for w, x in tiles]


def os_stream(tiles: Iterable[tuple[np.ndarray, np.ndarray]], *, in_width: int = 8,
              acc_width: int = 32) -> list[np.ndarray]:
    """Golden output of an output-stationary stream: one ``A_t @ B_t`` per (A_t, B_t) tile."""
    return [matmul(a, b, in_width=in_width, acc_width=acc_width) for a, b in tiles]


def random_operands(rng: np.random.Generator, shape: Sequence[int], width: int = 8,
                    *, extremes: bool = True) -> np.ndarray:
    """Return random signed ``width``-bit integers, with the extremes forced in.

    With ``extremes``, the first elements (in flat order) are ``min``, ``max``, ``min``,
    ``max``... for a quarter of the array (at least one of each when it has two or more
    elements), then the elements are shuffled, so every tile exercises both ends of the
    range (``-128 * -128`` is the one product that needs the full product width).
    """
    lo, hi = int_range(width)
    a = rng.integers(lo, hi + 1, size=tuple(shape), dtype=np.int64)
    if extremes and a.size:
        flat = a.reshape(-1)
        n = max(min(2, flat.size), flat.size // 4)
        flat[:n] = np.where(np.arange(n) % 2 == 0, lo, hi)
        rng.shuffle(flat)
    return a


#: Largest right shift :func:`requantize` applies; a ``shift`` of 63 acts as 62.
MAX_SHIFT = 62


def _per_channel(name: str, x, n: int, lo: int, hi: int, what: str) -> np.ndarray:
    """Return ``x`` (a scalar or a length-``n`` integer vector) as int64 of shape ``(n,)``."""
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, not dtype {a.dtype}")
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != n):
        raise ValueError(f"{name} must be a scalar or have length {n}, not shape {a.shape}")
    bad = (a < lo) | (a > hi)
    if bad.any():
        raise ValueError(f"{name} holds {a[bad].flat[0]}, outside {what} [{lo}, {hi}]")
    return np.broadcast_to(a.astype(np.int64), (n,))


def requantize(acc: np.ndarray, bias, mult, shift, zero_point: int = 0, relu: bool = False,
               out_width: int = 8) -> np.ndarray:
    """Requantize accumulator rows exactly as the post-processor does.

    Per element of column ``j`` (all arithmetic exact unless stated):

    * ``x = wrap32(acc + bias[j])`` (two's-complement wraparound to 32 bits);
    * ``p = x * mult[j]`` (``|p| < 2**62``);
    * ``y = p`` if ``s == 0`` else ``(p + 2**(s-1)) >> s``, with ``s = min(shift[j], 62)``
      and an arithmetic shift: round to nearest, ties toward +infinity;
    * ``z = y + zero_point``, saturated to ``[lo, 2**(out_width-1) - 1]`` where ``lo`` is
      ``zero_point`` if ``relu`` else ``-2**(out_width-1)``.

    Parameters
    ----------
    acc : (M, N) integer array of signed 32-bit values (narrower accumulators are simply
        their sign-extended values).
    bias : int or (N,) integer array of signed 32-bit values.
    mult : int or (N,) integer array in ``[0, 2**31)``: the scale is ``mult / 2**shift``.
    shift : int or (N,) integer array in ``[0, 63]`` (63 acts as 62).
    zero_point : int
        Signed ``out_width``-bit value added after rounding.
    relu : bool
        Clamp below at ``zero_point`` (the quantized 0.0) instead of the type minimum.
    out_width : int
        Output width in bits, 2 to 32.

    Returns
    -------
    (M, N) int64 array of signed ``out_width``-bit values.

    Raises
    ------
    TypeError
        If an array is not of an integer type.
    ValueError
        If ``acc`` is not two-dimensional or a value is outside its range, naming it.
    """
    if isinstance(out_width, bool) or not isinstance(out_width, int) \
            or not 2 <= out_width <= 32:
        raise ValueError(f"out_width must be an int between 2 and 32, not {out_width!r}")
    a = check_operand("acc", acc, 32)
    if a.ndim != 2:
        raise ValueError(f"acc must be two-dimensional (M, N), not shape {a.shape}")
    n = a.shape[1]
    b = _per_channel("bias", bias, n, *int_range(32), "the signed 32-bit range")
    mu = _per_channel("mult", mult, n, 0, (1 << 31) - 1, "the multiplier range")
    sh = _per_channel("shift", shift, n, 0, 63, "the shift range")
    lo, hi = int_range(out_width)
    if isinstance(zero_point, bool) or not isinstance(zero_point, int | np.integer) \
            or not lo <= zero_point <= hi:
        raise ValueError(f"zero_point must be an int in the signed {out_width}-bit range "
                         f"[{lo}, {hi}], not {zero_point!r}")
    # Every intermediate fits int64: |p| < 2**62, p + 2**61 < 2**63, |z| < 2**62 + 2**31.
    p = wrap(a + b, 32) * mu
    s = np.minimum(sh, MAX_SHIFT)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    z = ((p + half) >> s) + int(zero_point)
    return np.clip(z, int(zero_point) if relu else lo, hi).astype(np.int64)


def _round_half_up(v: np.ndarray) -> np.ndarray:
    """Round non-negative floats to the nearest int64, ties up (C's ``std::round``), exactly."""
    whole = np.floor(v)
    # v - floor(v) is exact, unlike v + 0.5 for values with bits far below the point.
    return (whole + (v - whole >= 0.5)).astype(np.int64)


def quantize_multiplier(scale: float | np.ndarray) -> tuple:
    """Return the ``(mult, shift)`` closest to a real scale: ``scale ~ mult / 2**shift``.

    A nonzero scale gets ``mult`` in ``[2**30, 2**31)`` (31 significant bits: the most
    precise pair there is) and ``shift = 31 - e`` where ``2**(e-1) <= scale < 2**e``;
    ``mult = round(scale * 2**shift)``, ties up, and a ``mult`` rounded up to ``2**31``
    becomes ``2**30`` with ``shift - 1`` (the rule of TFLite's ``QuantizeMultiplier``, whose
    ``(M0, exponent)`` is ``(mult, 31 - shift)``). The scale 0 gets ``(0, 0)``. Scales below
    ``2**-32`` would need a shift above 62: they get the best pair there is, ``shift = 62``
    and ``mult = round(scale * 2**62)``, which has fewer significant bits and is 0 for
    scales below ``2**-63``.

    Parameters
    ----------
    scale : float or array of floats
        Non-negative and finite, below ``2**31 - 0.5`` (``shift`` cannot be negative).

    Returns
    -------
    (mult, shift) : two ints for a scalar ``scale``, two int64 arrays of its shape otherwise.

    Raises
    ------
    ValueError
        If a scale is negative, not finite or too large, naming the first one.
    """
    arr = np.asarray(scale, dtype=np.float64)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise ValueError(f"scale must be finite and >= 0, not {float(arr[bad].flat[0])!r}")
    frac, exp = np.frexp(arr)                    # arr = frac * 2**exp, 0.5 <= frac < 1
    mult = _round_half_up(np.ldexp(frac, 31))
    shift = (31 - exp).astype(np.int64)
    carry = mult == (1 << 31)                    # frac rounded up to 1.0
    mult = np.where(carry, 1 << 30, mult)
    shift = np.where(carry, shift - 1, shift)
    if (shift < 0).any():
        v = float(arr[shift < 0].flat[0])
        raise ValueError(f"scale must be below 2**31 - 0.5 (shift >= 0), not {v!r}")
    tiny = shift > MAX_SHIFT
    # Only tiny scales go through ldexp(., 62): a large one would overflow the int64 cast.
    best = _round_half_up(np.ldexp(np.where(tiny, arr, 0.0), MAX_SHIFT))
    mult = np.where(tiny, best, mult)
    shift = np.where(tiny, MAX_SHIFT, shift)
    zero = arr == 0
    mult = np.where(zero, 0, mult).astype(np.int64)
    shift = np.where(zero, 0, shift).astype(np.int64)
    if np.ndim(scale) == 0:
        return int(mult), int(shift)
    return mult, shift
