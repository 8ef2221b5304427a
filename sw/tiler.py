"""First GEMM tiler: one int8 ``Y = requant(X @ W + bias)`` as a program and a DRAM image.

Any shape works (M, K, N >= 1; nothing needs to be a multiple of the array). The schedule:

* N is split into blocks of ``cols`` output channels, M into blocks of up to ``m_tile``
  rows, K into steps of ``rows``.
* When all of X fits in the scratchpad (and M in half the accumulator), X is loaded once
  and each K step only loads a weight tile, which streams all M rows (the *resident*
  schedule). Otherwise (the *streaming* schedule):
* For each (N block, M block) every K step loads an activation tile (``m x rows`` bytes)
  and a weight tile (``rows x cols``) into one of two scratchpad buffers, then runs
  LOAD_W and MATMUL into one of two accumulator halves (overwrite on the first K step,
  accumulate after). A STORE sends the finished block through the post-processor.
* Dependency tokens let the next step's loads run while the current step computes
  (two scratchpad buffers) and the previous block's store run while the next block
  computes (two accumulator halves). Every token pushed is popped, so the counters
  return to zero at END.

Padding costs nothing: a partial K step loads activation rows shorter than ``rows`` bytes
(the load unit zero-fills them), so stale weight rows meet zero activations; partial N
blocks store only their ``cols`` valid bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmchip.config import AcceleratorConfig

from . import golden, isa

__all__ = ["GemmPlan", "plan_gemm", "DramImage"]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _align(x: int, a: int = 64) -> int:
    return (x + a - 1) // a * a


@dataclass
class DramImage:
    """Byte regions to write into DRAM before a run: address -> bytes."""

    regions: dict[int, bytes] = field(default_factory=dict)

    def add(self, addr: int, data: bytes) -> None:
        self.regions[addr] = bytes(data)

    @property
    def end(self) -> int:
        return max((a + len(d) for a, d in self.regions.items()), default=0)


@dataclass
class GemmPlan:
    """A program, its DRAM image, and where the result lands."""

    config: AcceleratorConfig
    m: int
    k: int
    n: int
    program: list[int]
    image: DramImage
    prog_addr: int
    y_addr: int
    expected: np.ndarray
    macs: int
    dram_size: int
    schedule: str = "streaming"

    def read_y(self, read) -> np.ndarray:
        """Return Y (int8, ``m x n``) using ``read(addr, nbytes) -> bytes``."""
        raw = read(self.y_addr, self.m * self.n)
        return np.frombuffer(raw, dtype=np.int8).reshape(self.m, self.n).astype(np.int64)


def plan_gemm(config: AcceleratorConfig, x: np.ndarray, w: np.ndarray, bias: np.ndarray,
              mult: np.ndarray, shift: np.ndarray, *, zero_point: int = 0,
              relu: bool = False, base: int = 0, m_tile: int | None = None) -> GemmPlan:
    """Plan ``Y = requantize(X @ W + bias)`` for the accelerator ``config``.

    Parameters
    ----------
    config : AcceleratorConfig
    x, w : int8 matrices ``(M, K)`` and ``(K, N)``.
    bias, mult, shift : per-output-channel int32 bias, multiplier (< 2**31) and shift.
    zero_point, relu : output zero point and ReLU (see docs/requant.md).
    base : int
        DRAM byte address where the image starts (64-byte aligned).
    m_tile : int, optional
        Rows per M block (default: as many as the memories allow, at most 256).

    Raises
    ------
    ValueError
        If shapes do not chain, a value is out of range, or the memories are too small.
    """
    x = golden.check_operand("x", x, 8)
    w = golden.check_operand("w", w, 8)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0] or 0 in x.shape + w.shape:
        raise ValueError(f"cannot multiply shapes {x.shape} and {w.shape}")
    m, k = x.shape
    n = w.shape[1]
    R, C = config.rows, config.cols
    bias = np.asarray(bias, dtype=np.int64).reshape(n)
    mult = np.asarray(mult, dtype=np.int64).reshape(n)
    shift = np.asarray(shift, dtype=np.int64).reshape(n)
    expected = golden.requantize(golden.matmul(x, w), bias, mult, shift,
                                 zero_point=zero_point, relu=relu)

    if config.param_rows < 4:
        # A parameter row is reloaded four N blocks later; the tokens guarantee the store
        # that used it has finished by then, not two blocks later.
        raise ValueError(f"the tiler needs param_rows >= 4, not {config.param_rows}")
    sp_half = config.sp_rows // 2
    acc_half = config.acc_rows // 2
    limit = min(sp_half - R, acc_half, 256)
    if limit < 1:
        raise ValueError(f"scratchpad ({config.sp_rows} rows) and accumulator "
                         f"({config.acc_rows} rows) are too small for {R}-row weight tiles")
    mt = min(m, m_tile or limit)
    if mt > limit:
        raise ValueError(f"m_tile must be at most {limit}, not {m_tile}")

    # DRAM layout.
    x_addr = _align(base)
    w_addr = _align(x_addr + m * k)
    p_addr = _align(w_addr + k * n)
    nb = _ceil_div(n, C)
    prow = 9 * C
    y_addr = _align(p_addr + nb * prow)
    prog_addr = _align(y_addr + m * n)
    image = DramImage()
    image.add(x_addr, x.astype(np.int8).tobytes())
    image.add(w_addr, w.astype(np.int8).tobytes())
    params = bytearray()
    for b in range(nb):
        cols = slice(b * C, min(n, (b + 1) * C))
        pad = C - (cols.stop - cols.start)
        params += np.concatenate([bias[cols], np.zeros(pad, np.int64)]).astype("<i4").tobytes()
        params += np.concatenate([mult[cols], np.zeros(pad, np.int64)]).astype("<u4").tobytes()
        params += np.concatenate([shift[cols], np.zeros(pad, np.int64)]).astype("u1").tobytes()
    image.add(p_addr, bytes(params))

    # Program.
    prog: list[int] = [isa.encode("config", zero_point=zero_point, relu=int(relu))]
    kblocks = _ceil_div(k, R)
    resident = m <= acc_half and m * kblocks + 2 * R <= config.sp_rows and m_tile is None
    args = (config, prog, m, k, n, x_addr, w_addr, p_addr, y_addr, prow)
    if resident:
        _resident_schedule(*args)
    else:
        _streaming_schedule(*args, mt, limit)
    prog.append(isa.encode("end"))
    image.add(prog_addr, isa.assemble(prog))
    return GemmPlan(config, m, k, n, prog, image, prog_addr, y_addr, expected, m * k * n,
                    _align(image.end, 4096), "resident" if resident else "streaming")


def _streaming_schedule(config, prog, m, k, n, x_addr, w_addr, p_addr, y_addr, prow, mt,
                        limit):
    """Reload activation and weight tiles for every K step (any size fits)."""
    R, C = config.rows, config.cols
    sp_half, acc_half = config.sp_rows // 2, config.acc_rows // 2
    nb = _ceil_div(n, C)
    steps = []   # (nb, mb, kb)
    mblocks = _ceil_div(m, mt)
    kblocks = _ceil_div(k, R)
    for b in range(nb):
        for mb in range(mblocks):
            for kb in range(kblocks):
                steps.append((b, mb, kb))
    blocks = [(b, mb) for b in range(nb) for mb in range(mblocks)]
    n_steps, n_blocks = len(steps), len(blocks)
    param_row = -1
    for s, (b, mb, kb) in enumerate(steps):
        buf = s % 2
        sp_base = buf * sp_half
        rows_m = min(mt, m - mb * mt)
        kk = min(R, k - kb * R)
        cc = min(C, n - b * C)
        if b != param_row:
            # A LOAD into row b % param_rows overwrites the row of block b - param_rows;
            # loads run at most two steps ahead of the matmuls, whose tokens imply that
            # store has finished (param_rows >= 4).
            prog.append(isa.encode("load", mem=isa.Mem.PARAMS, rows=1, row_bytes=prow,
                                   dram_addr=p_addr + b * prow, dram_stride=prow,
                                   sram_addr=b % config.param_rows))
            param_row = b
        prog.append(isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=rows_m, row_bytes=kk,
                               dram_addr=x_addr + mb * mt * k + kb * R, dram_stride=k,
                               sram_addr=sp_base, pop_next=s >= 2))
        prog.append(isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=kk, row_bytes=cc,
                               dram_addr=w_addr + kb * R * n + b * C, dram_stride=n,
                               sram_addr=sp_base + limit, push_next=True))
        blk = blocks.index((b, mb))
        acc_base = (blk % 2) * acc_half
        first_k, last_k = kb == 0, kb == kblocks - 1
        prog.append(isa.encode("load_w", sp_addr=sp_base + limit, sp_stride=1, pop_prev=True))
        prog.append(isa.encode("matmul", sp_addr=sp_base, sp_stride=1, rows=rows_m,
                               acc_addr=acc_base, accumulate=int(not first_k),
                               pop_next=first_k and blk >= 2,
                               push_prev=s < n_steps - 2, push_next=last_k))
        if last_k:
            prog.append(isa.encode("store", rows=rows_m, cols=cc, acc_addr=acc_base,
                                   param_addr=b % config.param_rows,
                                   dram_addr=y_addr + mb * mt * n + b * C, dram_stride=n,
                                   pop_prev=True, push_prev=blk < n_blocks - 2))


def _resident_schedule(config, prog, m, k, n, x_addr, w_addr, p_addr, y_addr, prow):
    """Load all of X once (it fits in the scratchpad), then stream weight tiles past it.

    Scratchpad: K slice ``kb`` of X in rows ``kb * m .. kb * m + m - 1``; two weight
    buffers of ``rows`` rows at the top. Each weight tile streams all ``m`` activation
    rows into one accumulator half; the store of N block ``b`` overlaps the matmuls of
    block ``b + 1``.
    """
    R, C = config.rows, config.cols
    acc_half = config.acc_rows // 2
    kblocks, nblocks = _ceil_div(k, R), _ceil_div(n, C)
    w_buf = [config.sp_rows - 2 * R, config.sp_rows - R]
    for kb in range(kblocks):
        prog.append(isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=m,
                               row_bytes=min(R, k - kb * R), dram_addr=x_addr + kb * R,
                               dram_stride=k, sram_addr=kb * m))
    steps = [(b, kb) for b in range(nblocks) for kb in range(kblocks)]
    for s, (b, kb) in enumerate(steps):
        cc = min(C, n - b * C)
        if kb == 0:
            prog.append(isa.encode("load", mem=isa.Mem.PARAMS, rows=1, row_bytes=prow,
                                   dram_addr=p_addr + b * prow, dram_stride=prow,
                                   sram_addr=b % config.param_rows))
        prog.append(isa.encode("load", mem=isa.Mem.SCRATCHPAD, rows=min(R, k - kb * R),
                               row_bytes=cc, dram_addr=w_addr + kb * R * n + b * C,
                               dram_stride=n, sram_addr=w_buf[s % 2], pop_next=s >= 2,
                               push_next=True))
        acc_base = (b % 2) * acc_half
        last_k = kb == kblocks - 1
        prog.append(isa.encode("load_w", sp_addr=w_buf[s % 2], sp_stride=1, pop_prev=True))
        prog.append(isa.encode("matmul", sp_addr=kb * m, sp_stride=1, rows=m,
                               acc_addr=acc_base, accumulate=int(kb > 0),
                               pop_next=kb == 0 and b >= 2,
                               push_prev=s < len(steps) - 2, push_next=last_k))
        if last_k:
            prog.append(isa.encode("store", rows=m, cols=cc, acc_addr=acc_base,
                                   param_addr=b % config.param_rows,
                                   dram_addr=y_addr + b * C, dram_stride=n, pop_prev=True,
                                   push_prev=b < nblocks - 2))
