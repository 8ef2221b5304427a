"""The accelerator's control/status register map, defined once for the RTL, software and docs.

All registers are 32 bits wide at 4-byte aligned byte offsets on the AXI4-Lite port.
64-bit counters are two registers, low word first; reading the low word latches the high
word, so a 64-bit value is read consistently as (low, high).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Access", "Field", "Register", "REGISTERS", "by_name", "ID_MAGIC", "VERSION",
           "ErrorCode", "IRQ_DONE", "IRQ_ERROR", "fields_of"]

#: Value of the ID register: ASCII "LLMC".
ID_MAGIC = 0x4C4C4D43
#: Hardware version (major, minor, patch), readable from VERSION.
VERSION = (0, 1, 0)

#: Interrupt bits in IRQ_ENABLE / IRQ_STATUS.
IRQ_DONE = 1 << 0
IRQ_ERROR = 1 << 1


class Access(enum.Enum):
    """How software may access a register."""

    RO = "read-only"
    RW = "read/write"
    W1P = "write 1 to pulse (reads 0)"
    RW1C = "read, write 1 to clear"


class ErrorCode(enum.IntEnum):
    """STATUS.error: why the accelerator stopped (0 while running or after success)."""

    NONE = 0
    ILLEGAL_OPCODE = 1   #: an instruction with an undefined opcode
    BAD_OPERAND = 2      #: rows == 0, or an on-chip address range outside its memory
    DMA_SLVERR = 3       #: a DRAM access returned SLVERR
    DMA_DECERR = 4       #: a DRAM access returned DECERR
    DMA_WINDOW = 5       #: a DRAM access outside [DRAM_BASE, DRAM_BASE + DRAM_SIZE)
    DMA_BAD_COMMAND = 6  #: a DMA transfer with zero rows or zero bytes per row
    QUEUE_CONFIG = 7     #: IQ_SIZE is 0 or IQ_TAIL >= IQ_SIZE at a doorbell


@dataclass(frozen=True)
class Field:
    """A bit field of a register."""

    name: str
    lsb: int
    width: int
    desc: str


@dataclass(frozen=True)
class Register:
    """One 32-bit register."""

    name: str
    offset: int
    access: Access
    desc: str
    fields: tuple[Field, ...] = ()
    reset: int = 0


def _counter(name: str, offset: int, desc: str) -> tuple[Register, Register]:
    return (Register(f"{name}_LO", offset, Access.RO, f"{desc} (bits 31:0; reading latches "
                     f"the high word)"),
            Register(f"{name}_HI", offset + 4, Access.RO, f"{desc} (bits 63:32, as latched)"))


#: Every register, in address order.
REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x000, Access.RO, "identification: ASCII 'LLMC'", reset=ID_MAGIC),
    Register("VERSION", 0x004, Access.RO, "hardware version",
             (Field("patch", 0, 8, ""), Field("minor", 8, 8, ""), Field("major", 16, 8, ""))),
    Register("CFG_ARRAY", 0x008, Access.RO, "systolic array shape",
             (Field("rows", 0, 9, "PE rows"), Field("cols", 9, 9, "PE columns"),
              Field("dataflow", 18, 1, "0 weight-stationary, 1 output-stationary"))),
    Register("CFG_WIDTHS", 0x00C, Access.RO, "datapath widths",
             (Field("in_width", 0, 8, "operand bits"), Field("acc_width", 8, 8,
                                                               "accumulator bits"),
              Field("bus_bits", 16, 16, "AXI4 data width of the DMA port"))),
    Register("CFG_SP", 0x010, Access.RO, "scratchpad geometry",
             (Field("rows", 0, 20, "rows"), Field("banks", 20, 8, "banks"))),
    Register("CFG_SP_ROW", 0x014, Access.RO, "scratchpad row width",
             (Field("row_bytes", 0, 10, "bytes per row: max(array rows, array cols)"),)),
    Register("CFG_ACC", 0x018, Access.RO, "accumulator rows",
             (Field("rows", 0, 20, "rows of cols x acc_width bits"),)),
    Register("CTRL", 0x040, Access.W1P, "control",
             (Field("start", 0, 1, "start fetching at IQ_HEAD (same as a doorbell)"),
              Field("soft_reset", 1, 1, "abort the program, wait for the bus to go idle, "
                                        "reset every unit; registers other than CTRL keep "
                                        "their values, IQ_HEAD returns to 0"),
              Field("clear_counters", 2, 1, "zero the performance counters"))),
    Register("STATUS", 0x044, Access.RO, "status",
             (Field("busy", 0, 1, "a program is running"),
              Field("idle", 1, 1, "no program, no unit busy, no bus transaction outstanding"),
              Field("done", 2, 1, "the last program reached END (cleared by the next start)"),
              Field("error", 8, 8, "ErrorCode of the fault that stopped the program"))),
    Register("ERROR_INFO", 0x048, Access.RO,
             "index of the instruction that faulted (valid when STATUS.error != 0)"),
    Register("IQ_BASE", 0x050, Access.RW, "DRAM byte address of instruction slot 0 "
             "(16-byte aligned)"),
    Register("IQ_SIZE", 0x054, Access.RW, "instruction slots in the ring (>= 1)"),
    Register("IQ_HEAD", 0x058, Access.RO, "index of the next instruction to fetch"),
    Register("IQ_TAIL", 0x05C, Access.RW, "doorbell: index one past the last instruction "
             "written; writing it starts fetching up to it"),
    Register("IRQ_ENABLE", 0x060, Access.RW, "interrupt enables",
             (Field("done", 0, 1, "END reached"), Field("error", 1, 1, "a fault"))),
    Register("IRQ_STATUS", 0x064, Access.RW1C, "pending interrupts (the irq line is "
             "high while any enabled bit is set)",
             (Field("done", 0, 1, "END reached"), Field("error", 1, 1, "a fault"))),
    Register("DRAM_BASE", 0x070, Access.RW, "lowest DRAM byte address the DMA may touch"),
    Register("DRAM_SIZE", 0x074, Access.RW, "bytes of DRAM the DMA may touch from DRAM_BASE "
             "(0: none)"),
    *_counter("PERF_CYCLES", 0x100, "cycles since the counters were cleared"),
    *_counter("PERF_BUSY", 0x108, "cycles with a program running"),
    *_counter("PERF_ARRAY_BUSY", 0x110, "cycles in which an activation row entered the array"),
    *_counter("PERF_STALL_WEIGHTS", 0x118, "cycles the array waited for a weight tile"),
    *_counter("PERF_STALL_OPERAND", 0x120, "cycles a MATMUL was active but no activation row "
              "was ready (scratchpad conflict or latency)"),
    *_counter("PERF_STALL_TOKEN", 0x128, "cycles the execute queue waited for a dependency "
              "token"),
    *_counter("PERF_DMA_RD_BYTES", 0x130, "bytes read from DRAM (instructions included)"),
    *_counter("PERF_DMA_WR_BYTES", 0x138, "bytes written to DRAM"),
    *_counter("PERF_MACS", 0x140, "multiply-accumulates executed (rows x cols per array "
              "row, padding included)"),
)

_BY_NAME = {r.name: r for r in REGISTERS}


def by_name(name: str) -> Register:
    """Return the register called ``name``. Raises KeyError naming it if there is none."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no register named {name!r}") from None


def fields_of(name: str, value: int) -> dict[str, int]:
    """Split a register value into its named fields (how software reads CFG_* registers)."""
    return {f.name: (value >> f.lsb) & ((1 << f.width) - 1) for f in by_name(name).fields}


def _check() -> None:
    offsets = [r.offset for r in REGISTERS]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for r in REGISTERS:
        assert r.offset % 4 == 0
        used = 0
        for f in r.fields:
            mask = ((1 << f.width) - 1) << f.lsb
            assert not used & mask and f.lsb + f.width <= 32, (r.name, f.name)
            used |= mask


_check()
