"""The accelerator's control/status register map, defined once for the RTL, software and docs.

All registers are 32 bits wide at 4-byte aligned byte offsets on the AXI4-Lite port.
64-bit counters are two registers, low word first; reading the low word latches the high
word, so a 64-bit value is read consistently as (low, high).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Access", "Field", "Register", "REGISTERS", "by_name", "ID_MAGIC", "VERSION",
           "ErrorCode", "IRQ_DONE", "IRQ_ERROR", "IRQ_DVFS", "DVFS_BASE", "DVFS_MAX_OPPS",
           "DVFS_EVENT_BITS", "fields_of"]

#: Value of the ID register: ASCII "LLMC".
ID_MAGIC = 0x4C4C4D43
#: Hardware version (major, minor, patch), readable from VERSION.
VERSION = (0, 1, 0)

#: Interrupt bits in IRQ_ENABLE / IRQ_STATUS.
IRQ_DONE = 1 << 0
IRQ_ERROR = 1 << 1
#: A DVFS event (DVFS_EVENTS & DVFS_IRQ_EN is not zero).
IRQ_DVFS = 1 << 2

#: Byte offset of the first DVFS/thermal controller register (they end at 0x2FC).
DVFS_BASE = 0x200
#: Operating-point table entries the DVFS register map has room for.
DVFS_MAX_OPPS = 8
#: Bits of DVFS_EVENTS and DVFS_IRQ_EN, by field name.
DVFS_EVENT_BITS = {"throttle": 0, "hot": 1, "critical": 2, "sensor_fault": 3,
                   "pll_timeout": 4, "transition": 5}


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


def _events(what: str) -> tuple[Field, ...]:
    descs = {"throttle": "a thermal or power limit started to hold the index down",
             "hot": "the hot state was entered (T >= t_hot or PROCHOT input)",
             "critical": "critical trip: clocks gated, thermtrip latched",
             "sensor_fault": "the sensor failed (timeout, out of range or stuck)",
             "pll_timeout": "the PLL did not lock within the lock timeout",
             "transition": "an operating-point transition completed"}
    return tuple(Field(name, bit, 1, f"{what}: {descs[name]}")
                 for name, bit in DVFS_EVENT_BITS.items())


def _dvfs_registers() -> tuple[Register, ...]:
    """The DVFS/thermal controller's registers (reset values: ``DvfsParams()`` defaults).

    Temperatures are milli-degrees Celsius in two's complement; times are in ticks of
    the controller's prescaler. Registers marked "locked" ignore writes once
    DVFS_LOCK.lock is set.
    """
    def mc(name, off, desc, reset, signed=True):
        kind = "signed" if signed else "unsigned"
        return Register(name, off, Access.RW, desc,
                        (Field("mc", 0, 20, f"milli-degrees C ({kind}, 20 bits)"),), reset)

    def ticks(name, off, desc, reset):
        return Register(name, off, Access.RW, desc, (Field("ticks", 0, 16, "ticks"),), reset)

    def gain(name, off, desc, reset):
        return Register(name, off, Access.RW, desc,
                        (Field("gain", 0, 20, "mW per milli-degree C, unsigned Q8.12"),), reset)

    opps = ((200, 800, 529), (297, 800, 785), (400, 825, 1125), (500, 875, 1582),
            (600, 925, 2121), (800, 1100, 4000))
    table = []
    for i in range(DVFS_MAX_OPPS):
        mhz, mv, mw = opps[i] if i < len(opps) else (0, 0, 0)
        table += [Register(f"DVFS_OPP{i}", 0x2C0 + 8 * i, Access.RW,
                           f"operating point {i}: frequency and voltage (locked)",
                           (Field("mhz", 0, 12, "MHz"), Field("mv", 12, 12, "mV")),
                           mhz | mv << 12),
                  Register(f"DVFS_OPP{i}_MW", 0x2C4 + 8 * i, Access.RW,
                           f"operating point {i}: power at full load (locked)",
                           (Field("mw", 0, 16, "mW"),), mw)]
    return (
        Register("DVFS_CTRL", 0x200, Access.RW, "governor and power-cap control",
                 (Field("governor", 0, 2, "0 ondemand, 1 schedutil, 2 conservative, "
                        "3 performance"),
                  Field("pc_en", 2, 1, "enable the PID power cap"),
                  Field("mod_duty", 4, 4, "clock-modulation duty while hot at the lowest "
                        "point: (mod_duty + 1) / 16")), 7 << 4),
        Register("DVFS_LOCK", 0x204, Access.RW, "write 1 to freeze the locked registers "
                 "until reset (writing 0 has no effect)", (Field("lock", 0, 1, "locked"),)),
        Register("DVFS_STATUS", 0x208, Access.RO, "controller state",
                 (Field("index", 0, 4, "applied operating point"),
                  Field("target", 4, 4, "arbitrated target operating point"),
                  Field("f_index", 8, 4, "operating point of the frequency in effect"),
                  Field("v_index", 12, 4, "operating point of the requested voltage"),
                  Field("reason", 16, 4, "Reason the index is limited"),
                  Field("hot", 20, 1, "hot state (PROCHOT output)"),
                  Field("tripped", 21, 1, "critical trip latched"),
                  Field("sensor_fault", 22, 1, "sensor fault present"),
                  Field("modulating", 23, 1, "clock modulation active"),
                  Field("seq", 24, 2, "sequencer: 0 idle, 1 wait v_ack, 2 voltage "
                        "settle, 3 wait PLL lock"))),
        Register("DVFS_EVENTS", 0x20C, Access.RW1C, "sticky events", _events("event")),
        Register("DVFS_IRQ_EN", 0x210, Access.RW, "events that raise the interrupt",
                 _events("enable"), 0x1E),
        Register("DVFS_PMIN", 0x214, Access.RW, "lowest operating point the governors "
                 "may pick (thermal limits go below it)", (Field("index", 0, 4, ""),)),
        Register("DVFS_PMAX", 0x218, Access.RW, "highest operating point (locked)",
                 (Field("index", 0, 4, ""),), 5),
        Register("DVFS_GOV_TUNE", 0x21C, Access.RW, "governor thresholds",
                 (Field("up", 0, 7, "load percent above which ondemand goes to the top "
                        "and conservative steps up"),
                  Field("down", 8, 7, "load percent below which conservative steps down")),
                 80 | 20 << 8),
        ticks("DVFS_SAMPLE_PERIOD", 0x220, "ticks between control samples", 250),
        ticks("DVFS_RATE_LIMIT", 0x224, "least ticks from the end of one transition to "
              "the start of the next", 100),
        mc("DVFS_T_PASSIVE", 0x228, "passive trip of the step-wise cap (locked)", 85000),
        mc("DVFS_T_PASSIVE_HYST", 0x22C, "hysteresis of the passive trip (locked)", 2000,
           False),
        mc("DVFS_T_HOT", 0x230, "hot trip: lowest point, then clock modulation (locked)",
           89000),
        mc("DVFS_T_HOT_HYST", 0x234, "hysteresis of the hot trip (locked)", 3000, False),
        mc("DVFS_T_CRIT", 0x238, "critical trip (locked)", 92000),
        ticks("DVFS_HOT_DWELL", 0x23C, "ticks below t_hot - hyst before hot is released "
              "(locked)", 1000),
        ticks("DVFS_SENSOR_TIMEOUT", 0x240, "ticks the sensor may stay invalid (locked)",
              1000),
        mc("DVFS_SENSOR_MIN", 0x244, "lowest plausible reading (locked)", -40000 & 0xFFFFF),
        mc("DVFS_SENSOR_MAX", 0x248, "highest plausible reading (locked)", 150000),
        Register("DVFS_SENSOR_STUCK", 0x24C, Access.RW, "samples with an unchanged reading "
                 "that count as a stuck sensor, 0: off (locked)",
                 (Field("samples", 0, 8, "samples"),)),
        ticks("DVFS_V_SETTLE", 0x250, "ticks after v_ack before the frequency rises "
              "(locked)", 10),
        ticks("DVFS_PLL_TIMEOUT", 0x254, "ticks to wait for PLL lock (locked)", 100),
        mc("DVFS_PC_T_CONTROL", 0x258, "power cap: temperature the PID controls to", 80000),
        Register("DVFS_PC_SUSTAIN", 0x25C, Access.RW, "power cap: sustainable power",
                 (Field("mw", 0, 16, "mW"),), 2000),
        gain("DVFS_PC_KP_PO", 0x260, "power cap: proportional gain when T > T_control",
             1638),
        gain("DVFS_PC_KP_PU", 0x264, "power cap: proportional gain when T <= T_control",
             410),
        gain("DVFS_PC_KI", 0x268, "power cap: integral gain (per sample)", 41),
        gain("DVFS_PC_KD", 0x26C, "power cap: derivative gain (per sample)", 0),
        mc("DVFS_PC_CUTOFF", 0x270, "power cap: integrate only while |error| <= this",
           3000, False),
        Register("DVFS_PC_INTEG_MAX", 0x274, Access.RW, "power cap: integrator bound",
                 (Field("value", 0, 24, "milli-degree-C samples"),), 200000),
        Register("DVFS_TEMP", 0x278, Access.RO, "last valid temperature reading",
                 (Field("mc", 0, 20, "milli-degrees C (signed)"),)),
        Register("DVFS_LOAD", 0x27C, Access.RO, "utilization of the last sample",
                 (Field("percent", 0, 7, "100 * busy / total"),)),
        Register("DVFS_CAPS", 0x280, Access.RO, "per-law requests",
                 (Field("governor", 0, 4, "utilization governor's request"),
                  Field("step", 4, 4, "step-wise thermal cap"),
                  Field("power", 8, 4, "power cap"),
                  Field("budget", 16, 16, "power budget (mW)"))),
        Register("DVFS_INTEG", 0x284, Access.RO, "power-cap integrator",
                 (Field("value", 0, 25, "milli-degree-C samples (signed)"),)),
        Register("DVFS_THROTTLE_COUNT", 0x288, Access.RO, "times a thermal or power limit "
                 "started to hold the index down"),
        Register("DVFS_THROTTLE_TIME", 0x28C, Access.RO, "ticks spent limited by a thermal "
                 "or power limit"),
        Register("DVFS_TRANSITIONS", 0x290, Access.RO, "completed operating-point "
                 "transitions"),
        *table,
    )


#: Every register, in address order.
REGISTERS: tuple[Register, ...] = (
    Register("ID", 0x000, Access.RO, "identification: ASCII 'LLMC'", reset=ID_MAGIC),
    Register("VERSION", 0x004, Access.RO, "hardware version",
             (Field("patch", 0, 8, ""), Field("minor", 8, 8, ""), Field("major", 16, 8, ""))),
    Register("CFG_ARRAY", 0x008, Access.RO, "systolic array shape",
             (Field("rows", 0, 9, "PE rows"), Field("cols", 9, 9, "PE columns"),
              Field("dataflow", 18, 1, "0 weight-stationary, 1 output-stationary"),
              Field("dvfs", 19, 1, "1: the DVFS/thermal controller and its registers "
                    "(0x200-0x2FC) are built; 0: those offsets answer SLVERR"))),
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
             (Field("done", 0, 1, "END reached"), Field("error", 1, 1, "a fault"),
              Field("dvfs", 2, 1, "a DVFS event"))),
    Register("IRQ_STATUS", 0x064, Access.RW1C, "pending interrupts (the irq line is "
             "high while any enabled bit is set)",
             (Field("done", 0, 1, "END reached"), Field("error", 1, 1, "a fault"),
              Field("dvfs", 2, 1, "a DVFS event"))),
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
    *_dvfs_registers(),
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
