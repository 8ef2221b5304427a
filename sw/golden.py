"""NumPy golden model of the array's integer arithmetic, shared by every test and the runtime.

The hardware multiplies signed ``in_width``-bit operands exactly and accumulates in a signed
``acc_width``-bit register with two's-complement wraparound; :func:`matmul` reproduces that
bit for bit (wrapping once at the end equals wrapping at every add, modulo 2**acc_width).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["wrap", "int_range", "check_operand", "matmul", "ws_stream", "os_stream",
           "random_operands"]


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
