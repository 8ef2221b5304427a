"""The accelerator's instruction set, defined once for the RTL decoder, the software and the docs.

Every instruction is 128 bits (four little-endian 32-bit words in DRAM). Bits ``[3:0]``
hold the opcode and bits ``[7:4]`` the dependency-token flags shared by all instructions;
the remaining fields of each opcode are packed upward from bit 8 in the order listed in
:data:`FORMATS`. :func:`layout` turns the same table into an Amaranth ``StructLayout``, so
the hardware decoder cannot disagree with :func:`encode`/:func:`decode`.

Instructions go to one of three queues: *load* (DRAM to on-chip memory), *execute*
(array work) and *store* (accumulator through the post-processor to DRAM). The token flags
order the queues the way VTA does: an instruction may wait for (``pop``) or signal
(``push``) a token to its previous or next stage (load -> execute -> store).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Opcode", "Queue", "Mem", "INSN_BITS", "INSN_BYTES", "FLAGS", "FORMATS", "QUEUE",
           "Insn", "flag_bit", "encode", "decode", "assemble", "disassemble", "layout",
           "field_table", "IsaError"]

INSN_BITS = 128
INSN_BYTES = INSN_BITS // 8


class IsaError(ValueError):
    """An instruction that cannot be encoded or decoded; the message names the field."""


class Opcode(enum.IntEnum):
    """Operation codes (bits [3:0])."""

    CONFIG = 1   #: set post-processing globals (zero point, ReLU)
    LOAD = 2     #: 2D copy DRAM -> scratchpad, accumulator or parameter memory
    LOAD_W = 3   #: stream a weight tile from the scratchpad into the array's shadow weights
    MATMUL = 4   #: stream activation rows through the array into the accumulator
    STORE = 5    #: accumulator rows -> post-processor -> int8 rows in DRAM (2D)
    FENCE = 6    #: wait until every earlier instruction has completed
    END = 7      #: finish the program: wait for completion, then raise the done interrupt


class Queue(enum.IntEnum):
    """The unit an instruction runs on."""

    LOAD = 0
    EXECUTE = 1
    STORE = 2
    CONTROL = 3  #: handled by the command processor itself (FENCE, END)


class Mem(enum.IntEnum):
    """Destination memory of a LOAD."""

    SCRATCHPAD = 0  #: int8 rows for activations and weights
    ACCUMULATOR = 1  #: int32 rows (for example a bias or partial sums to continue)
    PARAMS = 2       #: per-output-channel requantization parameters (bias, mult, shift)


#: Dependency-token flags in bits [7:4] of every instruction.
FLAGS = ("pop_prev", "pop_next", "push_prev", "push_next")


def flag_bit(name: str) -> int:
    """Bit position of token flag ``name`` in an instruction word (hardware decoders use it)."""
    return 4 + FLAGS.index(name)

#: Fields of each opcode after the 8-bit header, LSB first: (name, width, description).
FORMATS: dict[Opcode, tuple[tuple[str, int, str], ...]] = {
    Opcode.CONFIG: (
        ("zero_point", 8, "output zero point added after scaling"),
        ("relu", 1, "clamp outputs below the zero point (ReLU)"),
    ),
    Opcode.LOAD: (
        ("mem", 2, "destination: 0 scratchpad, 1 accumulator, 2 parameters"),
        ("rows", 14, "rows to copy (>= 1)"),
        ("row_bytes", 16, "bytes per DRAM row (>= 1; at most one on-chip row)"),
        ("dram_addr", 32, "byte address of the first DRAM row"),
        ("dram_stride", 32, "bytes between DRAM rows"),
        ("sram_addr", 16, "first on-chip row"),
    ),
    Opcode.LOAD_W: (
        ("sp_addr", 16, "scratchpad row of weight row 0 (rows of the tile follow)"),
        ("sp_stride", 16, "scratchpad rows between weight rows (1: contiguous)"),
    ),
    Opcode.MATMUL: (
        ("sp_addr", 16, "scratchpad row of the first activation row"),
        ("sp_stride", 16, "scratchpad rows between activation rows"),
        ("rows", 14, "activation rows T streamed through the current weight tile (>= 1)"),
        ("acc_addr", 16, "accumulator row receiving the first result row"),
        ("accumulate", 1, "add to the accumulator rows instead of overwriting them"),
        ("k_steps", 12, "0: stream through the oldest LOAD_W tile not yet used (the array "
                        "pairs tiles with MATMUL steps in order; with none, the MATMUL waits); "
                        "n >= 1: run n steps, step s loading the weight tile at "
                        "w_addr + s * rows of the array, then streaming the activation rows "
                        "at sp_addr + s * a_step (every step after the first accumulates)"),
        ("w_addr", 16, "scratchpad row of the first weight tile (k_steps >= 1)"),
        ("a_step", 16, "scratchpad rows between the activation slices of two steps"),
    ),
    Opcode.STORE: (
        ("rows", 14, "accumulator rows to store (>= 1)"),
        ("cols", 9, "bytes (output channels) per row, 1 to cols of the array"),
        ("acc_addr", 16, "first accumulator row"),
        ("param_addr", 16, "parameter row holding this block's per-channel bias/mult/shift"),
        ("dram_addr", 32, "byte address of the first output row"),
        ("dram_stride", 32, "bytes between output rows"),
    ),
    Opcode.FENCE: (),
    Opcode.END: (),
}

#: Which queue runs each opcode.
QUEUE: dict[Opcode, Queue] = {
    Opcode.CONFIG: Queue.STORE,  # the post-processor lives in the store unit
    Opcode.LOAD: Queue.LOAD,
    Opcode.LOAD_W: Queue.EXECUTE,
    Opcode.MATMUL: Queue.EXECUTE,
    Opcode.STORE: Queue.STORE,
    Opcode.FENCE: Queue.CONTROL,
    Opcode.END: Queue.CONTROL,
}

_SIGNED = {"zero_point"}
_HEADER = 8

for _op, _fields in FORMATS.items():
    _used = _HEADER + sum(w for _, w, _ in _fields)
    assert _used <= INSN_BITS, f"{_op.name} needs {_used} bits"


@dataclass(frozen=True)
class Insn:
    """One decoded instruction: opcode, token flags and fields."""

    op: Opcode
    fields: Mapping[str, int]
    pop_prev: bool = False
    pop_next: bool = False
    push_prev: bool = False
    push_next: bool = False

    def __str__(self) -> str:
        flags = [f for f in FLAGS if getattr(self, f)]
        body = " ".join(f"{k}={v}" for k, v in self.fields.items())
        return " ".join(x for x in (self.op.name.lower(), body,
                                    "[" + ",".join(flags) + "]" if flags else "") if x)


def encode(op: Opcode | str, *, pop_prev=False, pop_next=False, push_prev=False,
           push_next=False, **fields: int) -> int:
    """Return the 128-bit encoding of one instruction as an int.

    Unset fields are 0. Raises :class:`IsaError` naming a missing/unknown field or a value
    that does not fit.
    """
    op = _opcode(op)
    known = {name for name, _, _ in FORMATS[op]}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise IsaError(f"{op.name} has no field {unknown[0]!r} (fields: "
                       f"{', '.join(sorted(known)) or 'none'})")
    word = int(op)
    for name, flag in zip(FLAGS, (pop_prev, pop_next, push_prev, push_next), strict=True):
        word |= int(bool(flag)) << flag_bit(name)
    pos = _HEADER
    for name, width, _ in FORMATS[op]:
        value = fields.get(name, 0)
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int):
            raise IsaError(f"{op.name}.{name} must be an int, not {value!r}")
        lo, hi = ((-(1 << (width - 1)), (1 << (width - 1)) - 1) if name in _SIGNED
                  else (0, (1 << width) - 1))
        if not lo <= value <= hi:
            raise IsaError(f"{op.name}.{name} must be in [{lo}, {hi}], not {value}")
        word |= (value & ((1 << width) - 1)) << pos
        pos += width
    return word


def decode(word: int) -> Insn:
    """Decode one 128-bit instruction. Raises :class:`IsaError` on an unknown opcode."""
    if not 0 <= word < (1 << INSN_BITS):
        raise IsaError(f"instruction word must be a {INSN_BITS}-bit unsigned int")
    try:
        op = Opcode(word & 0xF)
    except ValueError:
        raise IsaError(f"illegal opcode {word & 0xF}") from None
    flags = {f: bool((word >> flag_bit(f)) & 1) for f in FLAGS}
    fields, pos = {}, _HEADER
    for name, width, _ in FORMATS[op]:
        value = (word >> pos) & ((1 << width) - 1)
        if name in _SIGNED and value >> (width - 1):
            value -= 1 << width
        fields[name] = value
        pos += width
    return Insn(op, fields, **flags)


def assemble(program: Iterable[int | Insn]) -> bytes:
    """Return the DRAM image of a program (encoded ints or :class:`Insn`), little-endian."""
    out = bytearray()
    for insn in program:
        if isinstance(insn, Insn):
            insn = encode(insn.op, **dict(insn.fields), pop_prev=insn.pop_prev,
                          pop_next=insn.pop_next, push_prev=insn.push_prev,
                          push_next=insn.push_next)
        out += int(insn).to_bytes(INSN_BYTES, "little")
    return bytes(out)


def disassemble(image: bytes) -> list[Insn]:
    """Decode a DRAM image produced by :func:`assemble`."""
    if len(image) % INSN_BYTES:
        raise IsaError(f"program image is {len(image)} bytes, not a multiple of {INSN_BYTES}")
    return [decode(int.from_bytes(image[i:i + INSN_BYTES], "little"))
            for i in range(0, len(image), INSN_BYTES)]


def _opcode(op: Opcode | str) -> Opcode:
    if isinstance(op, Opcode):
        return op
    try:
        return Opcode[str(op).upper()]
    except KeyError:
        raise IsaError(f"unknown opcode {op!r}") from None


def layout(op: Opcode):
    """Return the Amaranth ``StructLayout`` of ``op``'s full 128-bit word (header included)."""
    from amaranth.hdl import signed, unsigned
    from amaranth.lib import data

    members = {"opcode": unsigned(4)}
    members.update({f: unsigned(1) for f in FLAGS})
    used = _HEADER
    for name, width, _ in FORMATS[op]:
        members[name] = signed(width) if name in _SIGNED else unsigned(width)
        used += width
    if used < INSN_BITS:
        members["_reserved"] = unsigned(INSN_BITS - used)
    return data.StructLayout(members)


def field_table() -> list[dict]:
    """Return every field of every opcode with its bit range (for docs and tools)."""
    rows = []
    for op, fields in FORMATS.items():
        rows.append({"op": op.name, "field": "opcode", "lsb": 0, "width": 4,
                     "desc": f"{int(op)}", "queue": QUEUE[op].name.lower()})
        for f in FLAGS:
            rows.append({"op": op.name, "field": f, "lsb": flag_bit(f), "width": 1,
                         "desc": "dependency token flag", "queue": QUEUE[op].name.lower()})
        pos = _HEADER
        for name, width, desc in fields:
            rows.append({"op": op.name, "field": name, "lsb": pos, "width": width,
                         "desc": desc + (" (signed)" if name in _SIGNED else ""),
                         "queue": QUEUE[op].name.lower()})
            pos += width
    return rows
