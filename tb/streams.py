"""Beat-level stimulus and checking for the systolic array, shared by every simulator.

Turns tiles of matrices into the beats the array's stream ports take, packs them into the
flat integers the generated Verilog ports carry, and checks outputs (values and cycle
timing) against the NumPy golden model and the documented latency formulas.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden

__all__ = ["Beat", "Stimulus", "make_stimulus", "pack_lanes", "unpack_lanes", "check_run"]


@dataclass(frozen=True)
class Beat:
    """One stream beat: lane values plus the ``last`` flag (activation side only)."""

    lanes: tuple[int, ...]
    last: bool = False


@dataclass
class Stimulus:
    """All beats of a run and the golden output rows they must produce."""

    config: AcceleratorConfig
    tiles: list[tuple[np.ndarray, np.ndarray]]
    a_beats: list[Beat] = field(default_factory=list)
    w_beats: list[Beat] = field(default_factory=list)
    expected: list[Beat] = field(default_factory=list)


def make_stimulus(config: AcceleratorConfig, tiles) -> Stimulus:
    """Build beats and expected output rows for a list of tiles.

    Parameters
    ----------
    config : AcceleratorConfig
    tiles : list of (ndarray, ndarray)
        Weight-stationary: ``(W, X)`` with ``W`` of shape ``(rows, cols)`` and ``X`` of
        shape ``(T, rows)``. Output-stationary: ``(A, B)`` with ``A`` of shape
        ``(rows, K)`` and ``B`` of shape ``(K, cols)``.

    Raises
    ------
    ValueError
        If a tile has the wrong shape for the array.
    """
    R, C = config.rows, config.cols
    st = Stimulus(config, list(tiles))
    kw = {"in_width": config.in_width, "acc_width": config.acc_width}
    for n, (first, second) in enumerate(st.tiles):
        if config.dataflow == "ws":
            w, x = first, second
            if w.shape != (R, C) or x.ndim != 2 or x.shape[1] != R or x.shape[0] < 1:
                raise ValueError(f"tile {n}: W must be {(R, C)} and X (T>=1, {R}), "
                                 f"not {w.shape} and {x.shape}")
            st.w_beats += [Beat(tuple(int(v) for v in row)) for row in w]
            st.a_beats += [Beat(tuple(int(v) for v in row), i == len(x) - 1)
                           for i, row in enumerate(x)]
            y = golden.matmul(x, w, **kw)
        else:
            a, b = first, second
            if a.ndim != 2 or a.shape[0] != R or b.shape != (a.shape[1], C) or a.shape[1] < 1:
                raise ValueError(f"tile {n}: A must be ({R}, K>=1) and B (K, {C}), "
                                 f"not {a.shape} and {b.shape}")
            k = a.shape[1]
            st.a_beats += [Beat(tuple(int(v) for v in a[:, i]), i == k - 1) for i in range(k)]
            st.w_beats += [Beat(tuple(int(v) for v in b[i])) for i in range(k)]
            y = golden.matmul(a, b, **kw)
        st.expected += [Beat(tuple(int(v) for v in row), i == len(y) - 1)
                        for i, row in enumerate(y)]
    return st


def pack_lanes(lanes, width: int, last: bool | None = None) -> int:
    """Pack signed lane values (lane 0 in the low bits) and an optional ``last`` bit above."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(lanes):
        word |= (int(v) & mask) << (i * width)
    if last is not None:
        word |= int(bool(last)) << (len(lanes) * width)
    return word


def unpack_lanes(word: int, n: int, width: int, with_last: bool = False) -> Beat:
    """Inverse of :func:`pack_lanes` for ``n`` signed lanes."""
    mask, sign = (1 << width) - 1, 1 << (width - 1)
    lanes = []
    for i in range(n):
        u = (word >> (i * width)) & mask
        lanes.append(u - (1 << width) if u & sign else u)
    last = bool((word >> (n * width)) & 1) if with_last else False
    return Beat(tuple(lanes), last)


def check_run(st: Stimulus, a_cycles: list[int], w_cycles: list[int],
              outputs: list[tuple[int, Beat]]) -> None:
    """Check a finished run bit-for-bit and against the latency formulas.

    Parameters
    ----------
    st : Stimulus
    a_cycles, w_cycles : list of int
        Cycle in which each ``a_in`` / ``w_in`` beat was accepted.
    outputs : list of (int, Beat)
        Cycle and value of every ``y_out`` beat.

    Raises
    ------
    AssertionError
        Naming the first mismatching row or cycle.
    """
    cfg = st.config
    R = cfg.rows
    got = [b for _, b in outputs]
    assert len(got) == len(st.expected), (
        f"expected {len(st.expected)} output rows, got {len(got)}")
    for i, (g, e) in enumerate(zip(got, st.expected, strict=True)):
        assert g == e, f"output row {i}: got {g}, expected {e}"
    assert len(a_cycles) == len(st.a_beats) and len(w_cycles) == len(st.w_beats)
    if cfg.dataflow == "ws":
        # Latency: each activation row's result leaves rows + cols cycles after entry.
        for i, ((cyc, _), t) in enumerate(zip(outputs, a_cycles, strict=True)):
            assert cyc == t + cfg.latency, (
                f"row {i}: accepted in cycle {t}, out in {cyc}, formula says {t + cfg.latency}")
        # A tile starts only after its last weight row was accepted.
        starts = [t for t, prev in zip(a_cycles, [Beat((), True)] + st.a_beats[:-1],
                                       strict=True) if prev.last]
        for n, t in enumerate(starts):
            assert t > w_cycles[n * R + R - 1], f"tile {n} started before its weights loaded"
    else:
        lasts = [t for t, b in zip(a_cycles, st.a_beats, strict=True) if b.last]
        n = 0
        for t in lasts:
            for i in range(R):
                cyc = outputs[n][0]
                assert cyc == t + cfg.latency + i, (
                    f"tile output row {i}: out in {cyc}, formula says {t + cfg.latency + i}")
                n += 1


def expected_last_output_cycle(config: AcceleratorConfig, lengths: list[int]) -> int:
    """Cycle of the final output row when tiles stream at full rate from cycle 0.

    ``lengths`` are the tiles' ``T`` (weight-stationary: activation rows) or ``K``
    (output-stationary: beats); ``R``, ``C`` are the array's rows and columns.

    * WS: tile ``n`` starts in cycle ``s_n`` with ``s_0 = R`` (the first weight tile loads
      in cycles ``0..R-1``) and ``s_n = s_{n-1} + max(T_{n-1}, R)`` (the next weights load
      while a tile streams, ``R`` cycles per load). Each result row leaves ``R + C``
      cycles after its activation row, so the final row is out in
      ``s_last + T_last - 1 + R + C``.
    * OS: tile ``n``'s ``last`` beat is accepted in ``e_0 = K_0 - 1`` and
      ``e_n = e_{n-1} + max(K_n, R)`` (a tile drains for ``R`` cycles); its row ``i`` is out
      in ``e_n + R + C + i``, so the final row is out in ``e_last + 2R + C - 1``.
    """
    R = config.rows
    if not lengths or min(lengths) < 1:
        raise ValueError(f"tile lengths must be >= 1, not {lengths!r}")
    if config.dataflow == "ws":
        start = R
        for n in lengths[:-1]:
            start += max(n, R)
        return start + lengths[-1] - 1 + config.latency
    end = lengths[0] - 1
    for n in lengths[1:]:
        end += max(n, R)
    return end + config.latency + R - 1


def random_tiles(config: AcceleratorConfig, rng: np.random.Generator, lengths: list[int]):
    """Return random tiles (extremes included) for :func:`make_stimulus`.

    ``lengths`` gives each tile's ``T`` (WS: activation rows) or ``K`` (OS: beats).
    """
    R, C, iw = config.rows, config.cols, config.in_width
    if config.dataflow == "ws":
        return [(golden.random_operands(rng, (R, C), iw),
                 golden.random_operands(rng, (int(n), R), iw)) for n in lengths]
    return [(golden.random_operands(rng, (R, int(n)), iw),
             golden.random_operands(rng, (int(n), C), iw)) for n in lengths]
