"""Split a matrix product into the tiles one bare systolic array streams, and reassemble it.

This is the host-side schedule for the array alone: weight-stationary tiles over (K, N)
blocks with partial sums added on the host (the accelerator's accumulator SRAM does this
in hardware), output-stationary tiles over (M, N) blocks with the whole K streamed.
Operands are zero-padded to whole tiles; padding never changes a result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmchip.config import AcceleratorConfig

from . import golden

__all__ = ["TiledMatmul", "tile_matmul"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _pad(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), dtype=np.int64)
    out[: a.shape[0], : a.shape[1]] = a
    return out


@dataclass
class TiledMatmul:
    """Tiles of ``x @ w`` for one array, and the bookkeeping to put ``y`` back together."""

    config: AcceleratorConfig
    m: int
    k: int
    n: int
    tiles: list[tuple[np.ndarray, np.ndarray]]
    blocks: list[tuple[int, int]]  # per tile: (row or K block, N block)

    @property
    def macs(self) -> int:
        """Useful multiply-accumulates (``m * k * n``)."""
        return self.m * self.k * self.n

    @property
    def tile_lengths(self) -> list[int]:
        """Beats per tile (``T`` for WS, ``K`` for OS)."""
        if self.config.dataflow == "ws":
            return [x.shape[0] for _, x in self.tiles]
        return [a.shape[1] for a, _ in self.tiles]

    def assemble(self, rows: list[tuple[int, ...]] | np.ndarray) -> np.ndarray:
        """Return ``y`` (``m x n``, wrapped to ``acc_width``) from the array's output rows.

        Parameters
        ----------
        rows : sequence of output rows in the order the array produced them.

        Raises
        ------
        ValueError
            If the number of rows does not match the tiles.
        """
        cfg = self.config
        R, C = cfg.rows, cfg.cols
        out = np.asarray(rows, dtype=np.int64).reshape(-1, C)
        per_tile = self.tile_lengths if cfg.dataflow == "ws" else [R] * len(self.tiles)
        if out.shape[0] != sum(per_tile):
            raise ValueError(f"expected {sum(per_tile)} output rows, got {out.shape[0]}")
        mp = _ceil_div(self.m, R) * R if cfg.dataflow == "os" else self.m
        y = np.zeros((mp, _ceil_div(self.n, C) * C), dtype=np.int64)
        pos = 0
        for (blk, nb), count in zip(self.blocks, per_tile, strict=True):
            part = out[pos: pos + count]
            pos += count
            if cfg.dataflow == "ws":
                y[:, nb * C:(nb + 1) * C] += part  # partial sums over K blocks
            else:
                y[blk * R:(blk + 1) * R, nb * C:(nb + 1) * C] = part
        return golden.wrap(y[: self.m, : self.n], cfg.acc_width)


def tile_matmul(config: AcceleratorConfig, x: np.ndarray, w: np.ndarray) -> TiledMatmul:
    """Plan ``x @ w`` (``x``: ``m x k``, ``w``: ``k x n``, any sizes >= 1) on ``config``.

    Weight-stationary: one tile per (K block, N block), each streaming all ``m`` rows.
    Output-stationary: one tile per (M block, N block), each streaming all ``k`` beats.

    Raises
    ------
    ValueError
        If the shapes do not chain, a dimension is zero, or an operand is out of range.
    """
    x = golden.check_operand("x", x, config.in_width)
    w = golden.check_operand("w", w, config.in_width)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0] or 0 in x.shape + w.shape:
        raise ValueError(f"cannot multiply shapes {x.shape} and {w.shape}")
    m, k = x.shape
    n = w.shape[1]
    R, C = config.rows, config.cols
    tiles, blocks = [], []
    if config.dataflow == "ws":
        kb, nb = _ceil_div(k, R), _ceil_div(n, C)
        xp, wp = _pad(x, m, kb * R), _pad(w, kb * R, nb * C)
        for j in range(nb):
            for i in range(kb):
                tiles.append((wp[i * R:(i + 1) * R, j * C:(j + 1) * C],
                              xp[:, i * R:(i + 1) * R]))
                blocks.append((i, j))
    else:
        mb, nb = _ceil_div(m, R), _ceil_div(n, C)
        xp, wp = _pad(x, mb * R, k), _pad(w, k, nb * C)
        for i in range(mb):
            for j in range(nb):
                tiles.append((xp[i * R:(i + 1) * R], wp[:, j * C:(j + 1) * C]))
                blocks.append((i, j))
    return TiledMatmul(config, m, k, n, tiles, blocks)
