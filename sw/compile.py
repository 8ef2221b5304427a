"""Compiler: int8 GEMMs with bias, requantization and ReLU into accelerator programs.

The unit of work is :class:`GemmOp`, ``Y = requant(X @ W + bias)`` with X, W, the
per-channel parameters and Y at given DRAM addresses. :class:`ProgramBuilder` appends the
instructions of one or more operations to a program; :func:`compile_gemm` picks a schedule
for one shape (see :func:`choose_schedule`). Scheduling strategy, memory layouts and the
token rules are described in ``docs/compiler.md``; in short:

* W is *packed* once (:func:`pack_weights`): column block ``b`` (``cols`` output channels)
  is ``kb * rows`` contiguous rows of ``cols`` bytes, zero-padded, so one LOAD brings any
  run of K steps of a block and a looped MATMUL walks its weight tiles.
* An *output group* of ``mg`` rows by ``g`` column blocks lives in the accumulator while
  K is walked in chunks of ``kc`` steps; each chunk loads an X slab (slice-major, ``kc``
  slices of ``mg`` rows) and ``g`` weight runs into double buffers, and each (sub-chunk,
  block) pair is one looped MATMUL. Stores go out per sub-chunk right after its last
  MATMUL, overlapping later work. With ``kc`` covering all of K the X slab stays resident
  for every group of the same rows.
* Dependency tokens are not written by hand. Every instruction declares the on-chip rows
  it reads and writes; a vector clock per instruction records which instructions of each
  queue are known to be complete when it starts, and a hazard that is not already implied
  gets one token between adjacent queues (load <-> execute <-> store), relayed through an
  execute instruction when it links load and store, or a FENCE when nothing can relay it.
  Pushes and pops pair up in order, so the counters return to zero at END.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmchip.cache import cache_root
from llmchip.config import AcceleratorConfig

from . import golden, isa

__all__ = ["GemmOp", "Schedule", "Program", "ProgramBuilder", "CompileError", "pack_weights",
           "pack_params", "packed_weight_bytes", "param_bytes", "choose_schedule",
           "search_schedule", "candidate_schedules", "compile_gemm", "DramImage", "GemmPlan",
           "plan_gemm"]

LD, EX, ST = 0, 1, 2          # queues, as isa.Queue
SP, ACC, PAR = 0, 1, 2        # on-chip memories, as isa.Mem
_QUEUE = {isa.Opcode.LOAD: LD, isa.Opcode.LOAD_W: EX, isa.Opcode.MATMUL: EX,
          isa.Opcode.STORE: ST, isa.Opcode.CONFIG: ST}
# (producer queue, consumer queue) -> (producer push flag, consumer pop flag)
_EDGE = {(LD, EX): ("push_next", "pop_prev"), (EX, LD): ("push_prev", "pop_next"),
         (EX, ST): ("push_next", "pop_prev"), (ST, EX): ("push_prev", "pop_next")}


class CompileError(ValueError):
    """An operation that cannot be compiled for the configuration; the message says why."""


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# -- packing -----------------------------------------------------------------------------

def packed_weight_bytes(config: AcceleratorConfig, k: int, n: int) -> int:
    """Bytes of a ``(k, n)`` weight matrix packed by :func:`pack_weights`."""
    R, C = config.rows, config.cols
    return _ceil_div(n, C) * _ceil_div(k, R) * R * C


def pack_weights(config: AcceleratorConfig, w: np.ndarray) -> bytes:
    """Return int8 ``w`` (K x N) in the accelerator's block layout.

    Column block ``b`` holds output channels ``b*cols .. b*cols + cols - 1`` as
    ``ceil(K / rows) * rows`` rows of ``cols`` bytes (row ``r`` is ``w[r, block]``), padded
    with zeros on both edges; blocks follow each other.

    Raises
    ------
    ValueError
        If ``w`` is not a 2D array of int8 values.
    """
    w = golden.check_operand("w", w, 8)
    if w.ndim != 2 or 0 in w.shape:
        raise ValueError(f"w must be a non-empty 2D array, not shape {w.shape}")
    R, C = config.rows, config.cols
    k, n = w.shape
    kp, nb = _ceil_div(k, R) * R, _ceil_div(n, C)
    pad = np.zeros((kp, nb * C), dtype=np.int8)
    pad[:k, :n] = w
    return pad.reshape(kp, nb, C).transpose(1, 0, 2).tobytes()


def param_bytes(config: AcceleratorConfig, n: int) -> int:
    """Bytes of the packed per-channel parameters of ``n`` output channels."""
    return _ceil_div(n, config.cols) * 9 * config.cols


def pack_params(config: AcceleratorConfig, bias, mult, shift, n: int) -> bytes:
    """Return the parameter rows (one per block of ``cols`` channels) for the store unit.

    Each row is ``cols`` int32 biases, ``cols`` uint32 multipliers and ``cols`` uint8
    shifts, little-endian, zero-padded past ``n`` (see :mod:`llmchip.rtl.store`).

    Raises
    ------
    ValueError
        If a value is out of the post-processor's range.
    """
    C = config.cols
    nb = _ceil_div(n, C)
    out = []
    for name, x, dt, lo, hi in (("bias", bias, "<i4", -(1 << 31), (1 << 31) - 1),
                                ("mult", mult, "<u4", 0, (1 << 31) - 1),
                                ("shift", shift, "u1", 0, 63)):
        v = np.broadcast_to(np.asarray(x, dtype=np.int64), (n,))
        if v.size and (v.min() < lo or v.max() > hi):
            raise ValueError(f"{name} must be in [{lo}, {hi}]")
        p = np.zeros(nb * C, dtype=np.int64)
        p[:n] = v
        out.append(p.reshape(nb, C).astype(dt))
    rows = [b"".join(part[b].tobytes() for part in out) for b in range(nb)]
    return b"".join(rows)


# -- operations and schedules --------------------------------------------------------------

@dataclass(frozen=True)
class GemmOp:
    """``Y = requant(X @ W + bias)`` on operands already in DRAM.

    Parameters
    ----------
    m, k, n : int
        X is ``m x k`` int8 rows at ``x_addr`` (``x_stride`` bytes apart); W is ``k x n``
        packed by :func:`pack_weights` at ``w_addr``; the parameters of :func:`pack_params`
        are at ``p_addr``; Y is written as ``m`` rows of ``n`` int8 at ``y_addr``
        (``y_stride`` bytes apart).
    zero_point, relu : output zero point and ReLU (one per operation).
    """

    m: int
    k: int
    n: int
    x_addr: int
    w_addr: int
    p_addr: int
    y_addr: int
    x_stride: int = 0
    y_stride: int = 0
    zero_point: int = 0
    relu: bool = False

    def __post_init__(self):
        for name in ("m", "k", "n"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise CompileError(f"{name} must be a positive int, not {v!r}")
        if not self.x_stride:
            object.__setattr__(self, "x_stride", self.k)
        if not self.y_stride:
            object.__setattr__(self, "y_stride", self.n)
        if self.x_stride < self.k or self.y_stride < self.n:
            raise CompileError(f"row strides must cover a row: x_stride {self.x_stride} < k "
                               f"{self.k} or y_stride {self.y_stride} < n {self.n}")
        if not -128 <= self.zero_point <= 127:
            raise CompileError(f"zero_point must be in [-128, 127], not {self.zero_point}")

    @property
    def macs(self) -> int:
        return self.m * self.k * self.n

    def reads(self, config: AcceleratorConfig) -> list[tuple[int, int]]:
        """DRAM byte ranges ``[lo, hi)`` the operation reads."""
        x_end = self.x_addr + (self.m - 1) * self.x_stride + self.k
        return [(self.x_addr, x_end),
                (self.w_addr, self.w_addr + packed_weight_bytes(config, self.k, self.n)),
                (self.p_addr, self.p_addr + param_bytes(config, self.n))]

    def writes(self) -> list[tuple[int, int]]:
        """DRAM byte ranges ``[lo, hi)`` the operation writes."""
        return [(self.y_addr, self.y_addr + (self.m - 1) * self.y_stride + self.n)]


@dataclass(frozen=True)
class Schedule:
    """Tiling of one GEMM (see the module docstring).

    ``mg``: rows per output group (accumulator); ``g``: column blocks per group; ``kc``:
    K steps (of ``rows``) per chunk; ``ms``: rows per MATMUL (sub-chunk); ``first_ms``:
    rows per sub-chunk in the very first chunk, where smaller pieces let the array start
    sooner.
    """

    mg: int
    g: int
    kc: int
    ms: int
    first_ms: int = 0

    def describe(self) -> str:
        return (f"mg={self.mg} g={self.g} kc={self.kc} ms={self.ms}"
                + (f" first_ms={self.first_ms}" if self.first_ms else ""))


@dataclass
class Program:
    """Encoded instructions of a program (END included) and what the compiler did."""

    config: AcceleratorConfig
    insns: list[int]
    ops: list[GemmOp]
    schedules: list[Schedule]
    stats: dict = field(default_factory=dict)
    #: (instruction index, operation index, operand) of every DRAM address field.
    relocs: list = field(default_factory=list)

    def relocate(self, ops: list[GemmOp]) -> Program:
        """Return this program for operations that differ only in their DRAM addresses.

        ``ops`` must match :attr:`ops` in shape, strides, zero point and ReLU (the
        runtime's program cache guarantees it); every address field moves with its
        operand's base.
        """
        words = list(self.insns)
        field_pos = {isa.Opcode.LOAD: _field_lsb(isa.Opcode.LOAD, "dram_addr"),
                     isa.Opcode.STORE: _field_lsb(isa.Opcode.STORE, "dram_addr")}
        for n, j, operand in self.relocs:
            old = getattr(self.ops[j], f"{operand}_addr")
            new = getattr(ops[j], f"{operand}_addr")
            if old == new:
                continue
            word = words[n]
            lsb = field_pos[isa.Opcode(word & 0xF)]
            addr = (word >> lsb) & 0xFFFFFFFF
            words[n] = word & ~(0xFFFFFFFF << lsb) | ((addr - old + new) & 0xFFFFFFFF) << lsb
        return Program(self.config, words, list(ops), list(self.schedules), dict(self.stats),
                       list(self.relocs))

    def image(self) -> bytes:
        """Return the program's DRAM bytes (16 per instruction)."""
        return isa.assemble(self.insns)

    @property
    def macs(self) -> int:
        return sum(op.macs for op in self.ops)


def _field_lsb(op: isa.Opcode, name: str) -> int:
    row = next(r for r in isa.field_table() if r["op"] == op.name and r["field"] == name)
    return row["lsb"]


# -- the builder: instructions, hazards and tokens ---------------------------------------------

@dataclass
class _Insn:
    op: isa.Opcode
    fields: dict
    queue: int
    qidx: int
    flags: set = field(default_factory=set)
    base: tuple | None = None    #: (operand, operation index) the DRAM address points into


class ProgramBuilder:
    """Append GEMMs to one program; tokens and fences are derived from declared accesses.

    Parameters
    ----------
    config : AcceleratorConfig
        The accelerator (weight-stationary) the program is for.
    """

    def __init__(self, config: AcceleratorConfig):
        if config.dataflow != "ws":
            raise CompileError("the compiler targets the weight-stationary accelerator, not "
                               f"dataflow {config.dataflow!r}")
        self.config = config
        self.insns: list[_Insn] = []
        self.count = [0, 0, 0]
        self.start_clock = [np.full(3, -1), np.full(3, -1), np.full(3, -1)]
        self.fence_clock = np.full(3, -1)
        self.ex_done: list[np.ndarray] = []     # completion clock of every EX instruction
        self.done: list[list[np.ndarray]] = [[], [], []]
        self.q_insn: list[list[_Insn]] = [[], [], []]
        sizes = (config.sp_rows, config.acc_rows, config.param_rows)
        self.wr = [np.full((3, s), -1, dtype=np.int64) for s in sizes]
        self.rd = [np.full((3, s), -1, dtype=np.int64) for s in sizes]
        self.ops: list[GemmOp] = []
        self.schedules: list[Schedule] = []
        self.dram_out: list[tuple[int, int]] = []
        self.dram_in: list[tuple[int, int]] = []
        self.fences = 0
        self.pending: list = []
        self.acc_slot = 0
        self.w_turn = 0
        self.x_turn = 0
        self.par_next = 0
        self.zp_relu = None

    # -- low level --------------------------------------------------------------------

    def _fence(self) -> None:
        self.insns.append(_Insn(isa.Opcode.FENCE, {}, 3, -1))
        self.fence_clock = np.array([c - 1 for c in self.count])
        self.fences += 1

    def _emit(self, op: isa.Opcode, fields: dict, reads=(), writes=(), base=None) -> _Insn:
        """Append one instruction; ``reads``/``writes`` are (memory, row indices)."""
        q = _QUEUE[op]
        req = np.full(3, -1)
        for mem, rows in reads:
            np.maximum(req, self.wr[mem][:, rows].max(axis=1, initial=-1), out=req)
        for mem, rows in writes:
            np.maximum(req, self.rd[mem][:, rows].max(axis=1, initial=-1), out=req)
            np.maximum(req, self.wr[mem][:, rows].max(axis=1, initial=-1), out=req)
        req[q] = -1                      # a queue runs its own instructions in order
        start = np.maximum(self.start_clock[q], self.fence_clock)
        pops = self._resolve(q, req, start)
        if pops is None:                 # nothing can relay the hazard: wait for everything
            self._fence()
            start = np.maximum(self.start_clock[q], self.fence_clock)
            pops = []
        insn = _Insn(op, dict(fields), q, self.count[q], base=base)
        for producer in pops:
            push, pop = _EDGE[(producer.queue, q)]
            assert push not in producer.flags, "token pairing broken"
            producer.flags.add(push)
            insn.flags.add(pop)
            np.maximum(start, self.done[producer.queue][producer.qidx], out=start)
        self.start_clock[q] = start
        done = start.copy()
        done[q] = insn.qidx
        self.done[q].append(done)
        self.q_insn[q].append(insn)
        self.count[q] += 1
        self.insns.append(insn)
        for mem, rows in reads:
            self.rd[mem][q, rows] = insn.qidx
        for mem, rows in writes:
            self.wr[mem][q, rows] = insn.qidx
        return insn

    def _resolve(self, q: int, req: np.ndarray, start: np.ndarray):
        """Return the producers to pop from so ``req`` holds at the start, or None."""
        need = {p: int(req[p]) for p in range(3) if req[p] > start[p]}
        if not need:
            return []
        if q == EX:
            return [self.q_insn[p][need[p]] for p in sorted(need)]
        far = ST if q == LD else LD
        e_req = need.get(EX, -1)
        if far in need:
            # Relay through the first execute instruction that knows the far one is done.
            done = self.done[EX]
            lo = max(e_req, int(start[EX]) + 1, 0)
            found = next((e for e in range(lo, len(done)) if done[e][far] >= need[far]), None)
            if found is None:
                return None
            e_req = max(e_req, found)
        return [self.q_insn[EX][e_req]] if e_req > start[EX] else []

    # -- operations ---------------------------------------------------------------------

    def add_gemm(self, op: GemmOp, schedule: Schedule | None = None) -> Schedule:
        """Append ``op`` with ``schedule`` (default: :func:`choose_schedule`).

        Raises
        ------
        CompileError
            If the operation does not fit the accelerator's memories or its DRAM ranges
            are not addressable.
        """
        cfg = self.config
        schedule = schedule or choose_schedule(cfg, op.m, op.k, op.n)
        _check_schedule(cfg, op, schedule)
        for lo, hi in op.reads(cfg) + op.writes():
            if lo < 0 or hi > 1 << 32:
                raise CompileError(f"DRAM range [{lo:#x}, {hi:#x}) is outside 32 bits")
        # A DRAM range written by an earlier operation and touched now (or the reverse)
        # orders the two through a FENCE: load and store are not adjacent queues.
        mine_in, mine_out = op.reads(cfg), op.writes()
        if _overlap(mine_in + mine_out, self.dram_out) or _overlap(mine_out, self.dram_in):
            self.pending.append(None)           # a FENCE, in stream order
        self.dram_in += mine_in
        self.dram_out += mine_out
        _emit_gemm(self, op, schedule)
        self.ops.append(op)
        self.schedules.append(schedule)
        return schedule

    def _queue(self, op: isa.Opcode, fields: dict, reads=(), writes=(), base=None) -> None:
        # ``base`` names the operand ("x", "w", "p", "y") of the operation being added that
        # the instruction's DRAM address points into, for Program.relocate.
        self.pending.append((op, fields, tuple(reads), tuple(writes),
                             None if base is None else (base, len(self.ops))))

    #: Array cycles of MATMULs a LOAD may be hoisted above (see :meth:`_flush`).
    LOOKAHEAD = 64

    def _flush(self) -> None:
        """Emit the queued instructions, hoisting each LOAD above recent MATMULs.

        A LOAD goes out ahead of the MATMULs (and their STOREs) queued before it, up to
        :attr:`LOOKAHEAD` cycles of array work, unless it writes rows one of them uses
        (then those are emitted first). The next operands are then on their way while the
        array computes, and a store queue waiting for results does not hold loads back in
        the in-order dispatcher.
        """
        R = self.config.rows
        sizes = {SP: self.config.sp_rows, ACC: self.config.acc_rows, PAR: self.config.param_rows}
        held: list[list] = []       # [work cycles, {mem: rows used}, items...] per MATMUL

        def release(upto: int) -> None:
            for group in held[:upto]:
                for item in group[2:]:
                    self._emit(*item)
            del held[:upto]

        def used(accesses) -> dict:
            out: dict = {}
            for mem, rows in accesses:
                mask = out.setdefault(mem, np.zeros(sizes[mem], dtype=bool))
                mask[rows] = True
            return out

        for item in self.pending:
            if item is None:
                release(len(held))
                self._fence()
                continue
            op, fields, reads, writes, base = item
            if op == isa.Opcode.LOAD:
                mine = used(writes)
                last = max((i + 1 for i, g in enumerate(held)
                            if any(mem in g[1] and (g[1][mem] & mask).any()
                                   for mem, mask in mine.items())), default=0)
                # A parameter LOAD is not hoisted: the MATMULs before it are what tells it
                # (through their tokens) that the stores using its rows are done.
                release(len(held) if fields["mem"] == isa.Mem.PARAMS else last)
                self._emit(*item)
                continue
            if op == isa.Opcode.MATMUL or not held:
                work = fields.get("rows", 0) * max(1, fields.get("k_steps", 0))
                work = max(work, R * fields.get("k_steps", 0))
                held.append([work, {}])
                while len(held) > 1 and sum(g[0] for g in held[1:]) >= self.LOOKAHEAD:
                    release(1)
            group = held[-1]
            group.append(item)
            for mem, mask in used(reads + writes).items():
                if mem in group[1]:
                    group[1][mem] |= mask
                else:
                    group[1][mem] = mask
        release(len(held))
        self.pending = []

    def finish(self) -> Program:
        """Append END and return the encoded :class:`Program`."""
        self._flush()
        self.insns.append(_Insn(isa.Opcode.END, {}, 3, -1))
        words = [isa.encode(i.op, **i.fields, **{f: True for f in i.flags})
                 for i in self.insns]
        stats = {"instructions": len(words), "fences": self.fences,
                 "loads": self.count[LD], "execs": self.count[EX], "stores": self.count[ST]}
        relocs = [(n, i.base[1], i.base[0]) for n, i in enumerate(self.insns) if i.base]
        return Program(self.config, words, list(self.ops), list(self.schedules), stats, relocs)


def _overlap(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]]) -> bool:
    b = list(b)
    return any(lo < bhi and blo < hi for lo, hi in a for blo, bhi in b)


def _rows(start: int, count: int) -> slice:
    return slice(start, start + count)


def _layout(cfg: AcceleratorConfig, op: GemmOp, s: Schedule, strict: bool = True) -> dict:
    """Sizes and on-chip buffers of ``op`` under schedule ``s`` (CompileError if it cannot).

    X slabs grow from scratchpad row 0 and weight runs are stacked from the top. With
    ``strict`` the two must sit in different banks: the array's activation and weight
    feeders share each bank's read port (activations win), so a weight tile read from the
    bank the activations stream from would stall the array.
    """
    R, C = cfg.rows, cfg.cols
    for name in ("mg", "g", "kc", "ms"):
        if getattr(s, name) < 1:
            raise CompileError(f"schedule {name} must be >= 1, not {getattr(s, name)}")
    kb, nb = _ceil_div(op.k, R), _ceil_div(op.n, C)
    mg, g, kc = min(s.mg, op.m), min(s.g, nb), min(s.kc, kb)
    ms = min(s.ms, mg)
    kchunks, mchunks = _ceil_div(kb, kc), _ceil_div(op.m, mg)
    resident = kchunks == 1
    slab, run = mg * kc, g * kc * R
    bank_rows = cfg.sp_rows // cfg.sp_banks
    best = None
    # Two X buffers when they fit, also for a single resident slab: consecutive
    # operations of a program then load into the buffer the previous one is not reading.
    for xbufs in (2, 1):
        x_end = xbufs * slab
        for wbufs in (3, 2):
            w_start = cfg.sp_rows - wbufs * run
            if w_start < x_end:
                continue
            if strict and (cfg.sp_banks < 2 or w_start // bank_rows * bank_rows < x_end):
                continue
            best = (xbufs, wbufs)
            break
        if best:
            break
    if best is None:
        raise CompileError(f"schedule {s.describe()} needs {slab + 2 * run} scratchpad rows"
                           + (" with activations and weights in different banks"
                              if strict else "") + f", the accelerator has {cfg.sp_rows}")
    xbufs, wbufs = best
    if mg * g > cfg.acc_rows:
        raise CompileError(f"schedule {s.describe()} needs {mg * g} accumulator rows, the "
                           f"accelerator has {cfg.acc_rows}")
    groups = mchunks * _ceil_div(nb, g)
    if g > cfg.param_rows or (groups > 1 and cfg.param_rows < 2 * g):
        raise CompileError(f"schedule {s.describe()} needs {g if groups == 1 else 2 * g} "
                           f"parameter rows, the accelerator has {cfg.param_rows}")
    if kc > (1 << 12) - 1 or max(mg, ms, kc * R) > (1 << 14) - 1:
        raise CompileError(f"schedule {s.describe()} exceeds an instruction field")
    return {"kb": kb, "nb": nb, "mg": mg, "g": g, "kc": kc, "ms": ms, "kchunks": kchunks,
            "resident": resident, "x_base": [i * slab for i in range(xbufs)],
            "w_base": [cfg.sp_rows - (i + 1) * run for i in range(wbufs)]}


def _check_schedule(cfg: AcceleratorConfig, op: GemmOp, s: Schedule) -> None:
    _layout(cfg, op, s, strict=False)


def _emit_gemm(b: ProgramBuilder, op: GemmOp, s: Schedule) -> None:
    cfg = b.config
    R, C = cfg.rows, cfg.cols
    m, n = op.m, op.n
    try:
        lay = _layout(cfg, op, s)
    except CompileError:
        lay = _layout(cfg, op, s, strict=False)
    kb, nb, mg, g, kc, ms = (lay[x] for x in ("kb", "nb", "mg", "g", "kc", "ms"))
    kchunks, resident = lay["kchunks"], lay["resident"]
    x_base, w_base = lay["x_base"], lay["w_base"]
    # Accumulator regions and parameter rows rotate together, with fewer regions than
    # parameter groups: the MATMULs that overwrite a region wait for its old stores, and
    # so tell a later parameter LOAD (through its token) that those stores are done.
    acc_slots = max(1, min(cfg.acc_rows // (mg * g), cfg.param_rows // g - 1))
    block_bytes = kb * R * C
    if (op.zero_point, op.relu) != b.zp_relu:
        b._queue(isa.Opcode.CONFIG, {"zero_point": op.zero_point, "relu": int(op.relu)})
        b.zp_relu = (op.zero_point, op.relu)
    first_chunk = True
    for m0 in range(0, m, mg):
        mrows = min(mg, m - m0)
        if resident:
            xb = x_base[b.x_turn % len(x_base)]
            b.x_turn += 1
        for g0 in range(0, nb, g):
            blocks = list(range(g0, min(nb, g0 + g)))
            acc0 = (b.acc_slot % acc_slots) * mg * g
            b.acc_slot += 1
            # The group's parameter rows, contiguous in DRAM, come in with one LOAD.
            if b.par_next + len(blocks) > cfg.param_rows:
                b.par_next = 0
            slot0 = b.par_next
            b.par_next += len(blocks)
            par = {blk: slot0 + i for i, blk in enumerate(blocks)}
            b._queue(isa.Opcode.LOAD, {"mem": isa.Mem.PARAMS, "rows": len(blocks),
                                      "row_bytes": 9 * C, "dram_addr": op.p_addr + g0 * 9 * C,
                                      "dram_stride": 9 * C, "sram_addr": slot0},
                    writes=[(PAR, _rows(slot0, len(blocks)))], base="p")
            for ci in range(kchunks):
                k0 = ci * kc
                kn = min(kc, kb - k0)
                load_x = not resident or g0 == 0
                if not resident:
                    xb = x_base[b.x_turn % len(x_base)]
                    b.x_turn += 1
                wb = w_base[b.w_turn % len(w_base)]
                b.w_turn += 1
                split = first_chunk and s.first_ms and load_x
                step = max(1, min(s.first_ms if split else ms, mrows))
                if load_x and not split:
                    _load_x(b, op, xb, mrows, m0, 0, mrows, k0, kn)
                for r0 in range(0, mrows, step):
                    rr = min(step, mrows - r0)
                    if split:
                        _load_x(b, op, xb, mrows, m0, r0, rr, k0, kn)
                    for gi, blk in enumerate(blocks):
                        wrow = wb + gi * kn * R
                        if r0 == 0:
                            b._queue(isa.Opcode.LOAD,
                                    {"mem": isa.Mem.SCRATCHPAD, "rows": kn * R, "row_bytes": C,
                                     "dram_addr": op.w_addr + blk * block_bytes + k0 * R * C,
                                     "dram_stride": C, "sram_addr": wrow},
                                    writes=[(SP, _rows(wrow, kn * R))], base="w")
                        acc = acc0 + gi * mg + r0
                        xrows = (xb + r0 + mrows * np.arange(kn)[:, None]
                                 + np.arange(rr)[None, :]).ravel()
                        b._queue(isa.Opcode.MATMUL,
                                {"sp_addr": xb + r0, "sp_stride": 1, "rows": rr,
                                 "acc_addr": acc, "accumulate": int(ci > 0), "k_steps": kn,
                                 "w_addr": wrow, "a_step": mrows},
                                reads=[(SP, xrows), (SP, _rows(wrow, kn * R))]
                                + ([(ACC, _rows(acc, rr))] if ci else []),
                                # The group's first MATMUL claims its whole region, so it
                                # waits for every store of the region's previous group
                                # (and can vouch for them to a later parameter LOAD).
                                writes=[(ACC, _rows(acc0, mg * g) if ci == r0 == gi == 0
                                         else _rows(acc, rr))])
                        if ci == kchunks - 1:
                            cc = min(C, n - blk * C)
                            b._queue(isa.Opcode.STORE,
                                    {"rows": rr, "cols": cc, "acc_addr": acc,
                                     "param_addr": par[blk],
                                     "dram_addr": op.y_addr + (m0 + r0) * op.y_stride + blk * C,
                                     "dram_stride": op.y_stride},
                                    reads=[(ACC, _rows(acc, rr)), (PAR, _rows(par[blk], 1))],
                                    base="y")
                first_chunk = False


def _load_x(b: ProgramBuilder, op: GemmOp, xb: int, mrows: int, m0: int, r0: int, rr: int,
            k0: int, kn: int) -> None:
    """Load rows ``m0 + r0 ..`` (``rr`` of them) of K steps ``k0 .. k0 + kn - 1`` of X.

    The slab is slice-major (K step ``kk`` of row ``i`` at ``xb + kk * mrows + i``), so each
    K step is one 2D LOAD; a single-row slab (a GEMV) has consecutive slices in both DRAM
    and the scratchpad, and its full slices come in with one LOAD.
    """
    R = b.config.rows
    first = 0
    if mrows == 1:
        full = min(kn, op.k // R - k0)
        if full > 1:
            b._queue(isa.Opcode.LOAD,
                    {"mem": isa.Mem.SCRATCHPAD, "rows": full, "row_bytes": R,
                     "dram_addr": op.x_addr + m0 * op.x_stride + k0 * R, "dram_stride": R,
                     "sram_addr": xb},
                    writes=[(SP, _rows(xb, full))], base="x")
            first = full
    for kk in range(first, kn):
        kstart = (k0 + kk) * R
        row = xb + kk * mrows + r0
        b._queue(isa.Opcode.LOAD,
                {"mem": isa.Mem.SCRATCHPAD, "rows": rr, "row_bytes": min(R, op.k - kstart),
                 "dram_addr": op.x_addr + (m0 + r0) * op.x_stride + kstart,
                 "dram_stride": op.x_stride, "sram_addr": row},
                writes=[(SP, _rows(row, rr))], base="x")


# -- schedule choice ---------------------------------------------------------------------------

def candidate_schedules(config: AcceleratorConfig, m: int, k: int, n: int) -> list[Schedule]:
    """Return the schedules that fit ``config`` for an ``m x k x n`` GEMM.

    Schedules that keep activations and weights in different scratchpad banks come
    first; only when none fits are the others offered.
    """
    R, C = config.rows, config.cols
    kb, nb = _ceil_div(k, R), _ceil_div(n, C)
    op = GemmOp(m, k, n, 0, 0, 0, 0)
    for strict in (True, False):
        out = []
        for mg in sorted({min(m, x) for x in (m, 256, 128, 64, 32, 16, 8, 4, 2, 1)}):
            for g in sorted({min(nb, x) for x in (1, 2, 4, 8)}):
                kcs = {kb, max(1, kb // 2), max(1, kb // 4)} | {x for x in (8, 4, 2, 1)
                                                                if x < kb}
                for kc in sorted(kcs):
                    for ms in sorted({mg, min(mg, 64), min(mg, 2 * R), min(mg, R)}):
                        for first in (0, min(ms, R) if ms > R else 0):
                            sch = Schedule(mg, g, kc, ms, first)
                            if sch in out:
                                continue
                            try:
                                _layout(config, op, sch, strict)
                            except CompileError:
                                continue
                            out.append(sch)
        if out:
            return out
    return []


@functools.cache
def _schedule_cache() -> Path | None:
    """Folder of chosen schedules, keyed by this compiler's and performance model's
    source (a change to either starts a new folder), or None if it cannot be made."""
    from . import perf
    digest = hashlib.sha256()
    for mod in (perf, sys.modules[__name__]):
        digest.update(Path(mod.__file__).read_bytes())
    folder = cache_root() / "schedules" / digest.hexdigest()[:16]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder


def _schedule_file(config: AcceleratorConfig, m: int, k: int, n: int) -> Path | None:
    folder = _schedule_cache()
    if folder is None:
        return None
    key = json.dumps(config.to_dict()["config"], sort_keys=True) + f"|{m}x{k}x{n}"
    return folder / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


@functools.lru_cache(maxsize=4096)
def choose_schedule(config: AcceleratorConfig, m: int, k: int, n: int) -> Schedule:
    """Return :func:`search_schedule`'s choice, kept on disk under the cache folder
    (``$LLMCHIP_CACHE/schedules``) so later runs skip the search."""
    path = _schedule_file(config, m, k, n)
    if path is not None:
        try:
            return Schedule(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            pass
    sch = search_schedule(config, m, k, n)
    if path is not None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(dataclasses.asdict(sch)))
            os.replace(tmp, path)
        except OSError:
            pass
    return sch


def search_schedule(config: AcceleratorConfig, m: int, k: int, n: int) -> Schedule:
    """Return the schedule with the fewest predicted cycles for an ``m x k x n`` GEMM.

    Every candidate is ranked by :func:`llmchip.sw.perf.estimate_schedule` (traffic,
    compute and instruction counts). For a GEMM whose roofline is under 50,000 cycles every
    candidate within 1.5x of the best estimate (at most 64) is compiled and timed with
    :func:`llmchip.sw.perf.simulate`; for longer ones the best three are.

    Raises
    ------
    CompileError
        If no schedule fits the accelerator's memories.
    """
    from . import perf

    cands = candidate_schedules(config, m, k, n)
    if not cands:
        raise CompileError(f"no schedule of a {m}x{k}x{n} GEMM fits the accelerator "
                           f"(sp_rows={config.sp_rows}, acc_rows={config.acc_rows}, "
                           f"param_rows={config.param_rows})")
    est = {s: perf.estimate_schedule(config, m, k, n, s) for s in cands}
    ranked = sorted(cands, key=est.get)
    # The estimate misses fill and dispatch effects that decide short GEMMs: time every
    # plausible candidate of a short GEMM (cheap: small programs), and the best three of
    # a long one.
    short = perf.roofline(config, m, k, n)["ideal_cycles"] < 50_000
    timed = [s for s in ranked if est[s] <= 1.5 * est[ranked[0]]][:64] if short else ranked[:3]
    best, best_cycles = None, None
    for sch in timed:
        prog = compile_gemm(config, GemmOp(m, k, n, 0, 0, 0, 0), sch)
        cycles = perf.simulate(prog).cycles
        if best_cycles is None or cycles < best_cycles:
            best, best_cycles = sch, cycles
    return best


def compile_gemm(config: AcceleratorConfig, op: GemmOp,
                 schedule: Schedule | None = None) -> Program:
    """Return the program of a single GEMM."""
    b = ProgramBuilder(config)
    b.add_gemm(op, schedule)
    return b.finish()


# -- a self-contained GEMM: program plus DRAM image (testbenches and benchmarks) -----------

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
    schedule: str            #: "resident" (X loaded once) or "streaming" (K in chunks)

    def read_y(self, read) -> np.ndarray:
        """Return Y (int8, ``m x n``) using ``read(addr, nbytes) -> bytes``."""
        raw = read(self.y_addr, self.m * self.n)
        return np.frombuffer(raw, dtype=np.int8).reshape(self.m, self.n).astype(np.int64)


def plan_gemm(config: AcceleratorConfig, x: np.ndarray, w: np.ndarray, bias, mult, shift, *,
              zero_point: int = 0, relu: bool = False, base: int = 0,
              m_tile: int | None = None, schedule: Schedule | None = None) -> GemmPlan:
    """Lay out ``Y = requantize(X @ W + bias)`` in DRAM from ``base`` and compile it.

    ``m_tile`` forces output groups of that many rows with K walked one step at a time
    (the streaming case); ``schedule`` forces a schedule; by default
    :func:`choose_schedule` picks one. Returns a :class:`GemmPlan` with the expected Y.

    Raises
    ------
    ValueError
        If shapes do not chain or a value is out of range (CompileError is a ValueError).
    """
    x = golden.check_operand("x", x, 8)
    w = golden.check_operand("w", w, 8)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0] or 0 in x.shape + w.shape:
        raise ValueError(f"cannot multiply shapes {x.shape} and {w.shape}")
    m, k = x.shape
    n = w.shape[1]
    if m_tile is not None:
        schedule = Schedule(m_tile, 1, 1, m_tile)
    bias = np.broadcast_to(np.asarray(bias, dtype=np.int64), (n,))
    mult = np.broadcast_to(np.asarray(mult, dtype=np.int64), (n,))
    shift = np.broadcast_to(np.asarray(shift, dtype=np.int64), (n,))
    expected = golden.requantize(golden.matmul(x, w), bias, mult, shift,
                                 zero_point=zero_point, relu=relu)
    x_addr = _align(base)
    w_addr = _align(x_addr + m * k)
    p_addr = _align(w_addr + packed_weight_bytes(config, k, n))
    y_addr = _align(p_addr + param_bytes(config, n))
    prog_addr = _align(y_addr + m * n)
    op = GemmOp(m, k, n, x_addr, w_addr, p_addr, y_addr, zero_point=zero_point, relu=relu)
    program = compile_gemm(config, op, schedule)
    image = DramImage()
    image.add(x_addr, x.astype(np.int8).tobytes())
    image.add(w_addr, pack_weights(config, w))
    image.add(p_addr, pack_params(config, bias, mult, shift, n))
    image.add(prog_addr, program.image())
    sch = program.schedules[0]
    kind = "resident" if min(sch.kc, _ceil_div(k, config.rows)) >= _ceil_div(k, config.rows) \
        else "streaming"
    return GemmPlan(config, m, k, n, list(program.insns), image, prog_addr, y_addr, expected,
                    m * k * n, _align(image.end, 4096), kind)
