"""Bit-exact executor of accelerator programs: the ``model`` backend's functional half.

:class:`Machine` holds the architectural state the instructions touch (DRAM, scratchpad,
accumulator, parameter rows, post-processing globals and the current weight tile) and
runs a program instruction by instruction with NumPy, with the same semantics as the
RTL: LOAD zero-fills short rows, a looped MATMUL walks ``k_steps`` weight tiles, sums wrap
to ``acc_width`` bits, weight tiles pair with MATMUL steps in load order (as the
array pairs them), and STORE requantizes through :func:`llmchip.sw.golden.requantize`.
Timing is not modelled here; :func:`llmchip.sw.perf.simulate` predicts it.

Programs run in queue order, which equals program order for any program whose tokens
are correct, so the executor does not interleave the queues. A malformed instruction
raises :class:`ExecutionError` naming its index, as the hardware would stop with an error.
"""

from __future__ import annotations

import functools

import numpy as np

from llmchip.config import AcceleratorConfig

from . import golden, isa


@functools.lru_cache(maxsize=1 << 16)
def _decode(word: int) -> isa.Insn:
    # Runs of the same shapes repeat their words (the runtime places data at the same
    # addresses each run); decoded instructions are never modified.
    return isa.decode(word)

__all__ = ["Machine", "ExecutionError"]


class ExecutionError(RuntimeError):
    """A program stopped: an illegal instruction or operand, or an access outside DRAM."""


class Machine:
    """Architectural state of one accelerator plus its DRAM.

    Parameters
    ----------
    config : AcceleratorConfig
    dram_bytes : int
        DRAM size; accesses beyond it raise :class:`ExecutionError` (the DMA reports a
        decode error there).
    """

    def __init__(self, config: AcceleratorConfig, dram_bytes: int = 1 << 26):
        self.config = config
        self.dram = np.zeros(dram_bytes, dtype=np.uint8)
        C = config.cols
        self.sp = np.zeros((config.sp_rows, config.sp_row_bytes), dtype=np.int8)
        self.acc = np.zeros((config.acc_rows, C), dtype=np.int64)
        self.params = np.zeros((config.param_rows, 9 * C), dtype=np.uint8)
        # Weight tiles loaded but not yet used: the array pairs tiles with MATMULs in order.
        self.tiles: list[np.ndarray] = []
        self.zero_point = 0
        self.relu = False
        self.executed = 0

    # -- DRAM ---------------------------------------------------------------------------

    def write(self, addr: int, data: bytes | np.ndarray) -> None:
        """Copy bytes into DRAM at ``addr``."""
        buf = np.frombuffer(bytes(data), dtype=np.uint8) if not isinstance(data, np.ndarray) \
            else np.ascontiguousarray(data).view(np.uint8).ravel()
        self._check(addr, buf.size)
        self.dram[addr:addr + buf.size] = buf

    def read(self, addr: int, nbytes: int) -> bytes:
        """Return ``nbytes`` of DRAM from ``addr``."""
        self._check(addr, nbytes)
        return self.dram[addr:addr + nbytes].tobytes()

    def _check(self, addr: int, nbytes: int) -> None:
        if addr < 0 or addr + nbytes > self.dram.size:
            raise ExecutionError(f"DRAM access [{addr:#x}, {addr + nbytes:#x}) is outside "
                                 f"the {self.dram.size:#x}-byte memory")

    def _rows2d(self, addr: int, rows: int, row_bytes: int, stride: int) -> np.ndarray:
        """Index array of a 2D DRAM region (rows x row_bytes)."""
        last = addr + (rows - 1) * stride + row_bytes
        self._check(addr, last - addr)
        if stride == row_bytes:
            return self.dram[addr:last].reshape(rows, row_bytes)
        idx = addr + stride * np.arange(rows)[:, None] + np.arange(row_bytes)[None, :]
        return self.dram[idx]

    # -- execution ------------------------------------------------------------------------

    def run(self, program, start: int = 0) -> int:
        """Execute encoded instructions (a list of ints or a Program) until END.

        Returns the number of instructions executed.

        Raises
        ------
        ExecutionError
            On an illegal instruction or operand; the message names the index.
        """
        words = program.insns if hasattr(program, "insns") else program
        for i, word in enumerate(words[start:], start):
            try:
                insn = _decode(word)
            except isa.IsaError as exc:
                raise ExecutionError(f"instruction {i}: {exc}") from None
            if insn.op == isa.Opcode.END:
                self.executed += i - start + 1
                return i - start + 1
            try:
                self.step(insn)
            except ExecutionError as exc:
                raise ExecutionError(f"instruction {i} ({insn}): {exc}") from None
        raise ExecutionError("the program has no END")

    def step(self, insn: isa.Insn) -> None:
        """Execute one decoded instruction."""
        cfg, f = self.config, insn.fields
        R, C = cfg.rows, cfg.cols
        op = insn.op
        if op == isa.Opcode.CONFIG:
            self.zero_point, self.relu = f["zero_point"], bool(f["relu"])
        elif op == isa.Opcode.LOAD:
            self._load(f)
        elif op == isa.Opcode.LOAD_W:
            self.tiles.append(self._sp_rows(f["sp_addr"], R, f["sp_stride"])[:, :C])
        elif op == isa.Opcode.MATMUL:
            rows = f["rows"]
            if rows == 0:
                raise ExecutionError("MATMUL rows must be >= 1")
            self._check_rows("accumulator", f["acc_addr"], rows, 1, cfg.acc_rows)
            out = slice(f["acc_addr"], f["acc_addr"] + rows)
            steps = f["k_steps"]
            if steps == 0:
                if not self.tiles:
                    raise ExecutionError("MATMUL without a preceding LOAD_W would wait for "
                                         "weights forever")
                a = self._sp_rows(f["sp_addr"], rows, f["sp_stride"])[:, :R]
                self._mac(out, a, self.tiles.pop(0), bool(f["accumulate"]))
            else:
                self._check_rows("scratchpad", f["w_addr"], steps * R, 1, cfg.sp_rows)
                self._check_rows("scratchpad", f["sp_addr"] + (steps - 1) * f["a_step"], rows,
                                 f["sp_stride"], cfg.sp_rows)
            if steps and not self.tiles:
                # Each step streams through its own tile: the whole loop is one product of
                # the steps' activation slices side by side with their tiles stacked.
                w = self.sp[f["w_addr"]:f["w_addr"] + steps * R, :C]
                idx = (f["sp_addr"] + f["a_step"] * np.arange(steps)[None, :]
                       + f["sp_stride"] * np.arange(rows)[:, None])
                a = self.sp[idx][:, :, :R].reshape(rows, steps * R)
                self._mac(out, a, w, bool(f["accumulate"]))
                steps = 0
            for s in range(steps):
                # Step s loads its tile, then streams its rows through the oldest loaded
                # tile (its own, unless a LOAD_W was left unused before the loop).
                self.tiles.append(self._sp_rows(f["w_addr"] + s * R, R, 1)[:, :C])
                a = self._sp_rows(f["sp_addr"] + s * f["a_step"], rows, f["sp_stride"])[:, :R]
                self._mac(out, a, self.tiles.pop(0), bool(f["accumulate"]) or s > 0)
        elif op == isa.Opcode.STORE:
            self._store(f)
        # FENCE orders nothing in a sequential executor.

    def _mac(self, out: slice, a: np.ndarray, w: np.ndarray, accumulate: bool) -> None:
        iw = self.config.in_width
        if a.shape[1] << (2 * iw - 2) < 1 << 53:
            # Every partial sum is an integer below 2**53: float64 (BLAS) is exact.
            prod = (a.astype(np.float64) @ w.astype(np.float64)).astype(np.int64)
        else:
            prod = a.astype(np.int64) @ w.astype(np.int64)
        acc = self.acc[out] + prod if accumulate else prod
        self.acc[out] = golden.wrap(acc, self.config.acc_width)

    def _check_rows(self, what: str, start: int, rows: int, stride: int, size: int) -> None:
        if rows < 1 or start + (rows - 1) * stride >= size:
            raise ExecutionError(f"{what} rows {start}..{start + (rows - 1) * stride} are "
                                 f"outside its {size} rows")

    def _sp_rows(self, start: int, rows: int, stride: int) -> np.ndarray:
        self._check_rows("scratchpad", start, rows, stride, self.config.sp_rows)
        if stride == 1:
            return self.sp[start:start + rows].astype(np.int64)
        return self.sp[start + stride * np.arange(rows)].astype(np.int64)

    def _load(self, f: dict) -> None:
        cfg = self.config
        rows, nbytes = f["rows"], f["row_bytes"]
        mem = f["mem"]
        widths = {isa.Mem.SCRATCHPAD: cfg.sp_row_bytes,
                  isa.Mem.ACCUMULATOR: cfg.cols * cfg.acc_width // 8,
                  isa.Mem.PARAMS: 9 * cfg.cols}
        sizes = {isa.Mem.SCRATCHPAD: cfg.sp_rows, isa.Mem.ACCUMULATOR: cfg.acc_rows,
                 isa.Mem.PARAMS: cfg.param_rows}
        if mem not in widths or rows == 0 or nbytes == 0 or nbytes > widths[mem]:
            raise ExecutionError(f"bad LOAD operands (mem {mem}, rows {rows}, row_bytes "
                                 f"{nbytes})")
        self._check_rows("destination", f["sram_addr"], rows, 1, sizes[mem])
        src = self._rows2d(f["dram_addr"], rows, nbytes, f["dram_stride"])
        dst = slice(f["sram_addr"], f["sram_addr"] + rows)
        if mem == isa.Mem.SCRATCHPAD:
            self.sp[dst] = 0
            self.sp[dst, :nbytes] = src.view(np.int8)
        elif mem == isa.Mem.PARAMS:
            self.params[dst] = 0
            self.params[dst, :nbytes] = src
        else:
            raw = np.zeros((rows, widths[mem]), dtype=np.uint8)
            raw[:, :nbytes] = src
            self.acc[dst] = raw.view("<i4").astype(np.int64)

    def _store(self, f: dict) -> None:
        cfg = self.config
        C = cfg.cols
        rows, cols = f["rows"], f["cols"]
        if rows == 0 or not 1 <= cols <= C:
            raise ExecutionError(f"bad STORE operands (rows {rows}, cols {cols})")
        self._check_rows("accumulator", f["acc_addr"], rows, 1, cfg.acc_rows)
        self._check_rows("parameter", f["param_addr"], 1, 1, cfg.param_rows)
        prow = self.params[f["param_addr"]]
        bias = prow[:4 * C].view("<i4").astype(np.int64)[:cols]
        mult = prow[4 * C:8 * C].view("<u4").astype(np.int64)[:cols]
        shift = prow[8 * C:9 * C].astype(np.int64)[:cols]
        acc = self.acc[f["acc_addr"]:f["acc_addr"] + rows, :cols]
        y = golden.requantize(acc, bias, mult, np.minimum(shift, 63), self.zero_point,
                              self.relu)
        addr, stride = f["dram_addr"], f["dram_stride"]
        self._check(addr, (rows - 1) * stride + cols)
        out = y.astype(np.int8).view(np.uint8)
        if stride == cols:
            self.dram[addr:addr + rows * cols] = out.ravel()
        else:
            idx = addr + stride * np.arange(rows)[:, None] + np.arange(cols)[None, :]
            self.dram[idx] = out
