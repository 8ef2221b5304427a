"""Cycle-exact reference model of the DVFS/thermal controller, its platform and its traces.

This module is the single source of the controller's parameters (:class:`DvfsParams`)
and behaviour; ``rtl/dvfs.py`` implements the same machine and is checked against
:class:`DvfsModel` cycle by cycle. The control laws follow ``docs/dvfs.md``:

* a prescaler makes a ``tick`` every ``tick_cycles`` cycles; all times are in ticks;
* every ``DVFS_SAMPLE_PERIOD`` ticks a sample latches ``busy``/``total``, a 7-cycle
  divider computes ``load = 100 * busy // total``, and one cycle later (*eval*) the
  governor, the step-wise thermal cap, the PID power cap and the stuck-sensor check
  update; the cycle after (*apply*) is the only one in which the target may rise;
* hot, critical and sensor-fault conditions are checked every cycle and pull the target
  down at once;
* the sequencer moves the applied index one transition at a time (up: voltage, v_ack,
  settle, frequency with the clock gated until PLL lock; down: frequency, lock, voltage).
  An upward transition follows the target of the current cycle (the value the target
  register takes at its end) until the frequency rises: if that target falls to or
  below the frequency in effect during V_WAIT or V_SETTLE, the transition is aborted
  (frequency unchanged, the voltage may stay raised, no rate-limit reload, no
  ``transition`` event) and the sequencer is idle in the next cycle, from where a
  downward transition starts at once; if it falls but stays above, the frequency rises
  only to ``min(goal, target)``;
* the clock enable is a Bresenham pattern of ``f / fmax`` (times the modulation duty),
  gated while relocking or tripped and by the ``pll_lock`` input itself.

Fixed-point formats: temperatures are signed 20-bit milli-degrees C; PID gains are
unsigned Q8.12 mW per milli-degree C; the integrator is a signed 25-bit sum of errors
(milli-degree-C samples); power is an unsigned 16-bit mW figure. Every product is exact
and every right shift floors, in the model and the RTL alike.
"""

from __future__ import annotations

import copy
import csv
import enum
from dataclasses import dataclass, field, fields
from pathlib import Path

from llmchip.config import check_int
from llmchip.sw import regs

__all__ = ["DEFAULT_OPPS", "P_MAX_MW", "Governor", "Reason", "SeqState", "DvfsParams",
           "DvfsInputs", "DvfsOutputs", "DvfsState", "DvfsModel", "PlatformModel",
           "TRACE_COLUMNS", "read_trace", "write_trace", "replay", "LOCKED_REGISTERS",
           "DIV_CYCLES", "EVAL_PHASE", "APPLY_PHASE", "TEMP_BITS", "GAIN_FRAC",
           "dvfs_registers", "normalize_writes", "limited"]

#: Power of the top operating point at full load; the table's mW follow
#: P = P_MAX_MW * (f / fmax) * (V / Vmax)^2, rounded.
P_MAX_MW = 4000
#: The specification's operating points (RK3399 GPU) as (MHz, mV, mW at full load).
DEFAULT_OPPS = tuple((f, v, round(P_MAX_MW * f / 800 * (v / 1100) ** 2))
                     for f, v in ((200, 800), (297, 800), (400, 825), (500, 875),
                                  (600, 925), (800, 1100)))

#: Bits of a temperature (signed milli-degrees C: about +-524 C).
TEMP_BITS = 20
#: Fractional bits of the PID gains.
GAIN_FRAC = 12
#: Bits of the signed PID integrator.
INTEG_BITS = 25
#: Bits of every tick timer (saturating).
TIMER_BITS = 16
#: Cycles of the load divider; the eval and apply phases follow it.
DIV_CYCLES = 7
EVAL_PHASE = DIV_CYCLES + 1
APPLY_PHASE = DIV_CYCLES + 2

_T_MASK = (1 << TEMP_BITS) - 1
_T_HALF = 1 << (TEMP_BITS - 1)
_TIMER_MAX = (1 << TIMER_BITS) - 1
_STUCK_MAX = 255
_M32 = (1 << 32) - 1


class Governor(enum.IntEnum):
    """Utilization governor (DVFS_CTRL.governor)."""

    ONDEMAND = 0      #: load > up -> top; else the lowest point >= fmin + load*(fmax-fmin)/100
    SCHEDUTIL = 1     #: the lowest point >= 1.25 * fmax * load / 100
    CONSERVATIVE = 2  #: one point up above ``up``, one down below ``down``
    PERFORMANCE = 3   #: always the top point (the host limits with DVFS_PMAX)


class Reason(enum.IntEnum):
    """Why the target is below the top point (DVFS_STATUS.reason), highest priority last."""

    NONE = 0          #: not limited
    IDLE = 1          #: the governor asks for less (low load)
    HOST = 2          #: DVFS_PMAX holds it down
    POWER_CAP = 3     #: the PID power cap
    THERMAL = 4       #: the step-wise passive cap
    HOT = 5           #: hot state (T >= t_hot or PROCHOT input)
    SENSOR_FAULT = 6  #: the sensor failed: lowest point
    CRITICAL = 7      #: critical trip latched


#: Reasons counted as throttling (throttle events, count and time).
_LIMITED = frozenset({Reason.POWER_CAP, Reason.THERMAL, Reason.HOT, Reason.SENSOR_FAULT,
                      Reason.CRITICAL})


def limited(reason: int) -> bool:
    """Return whether ``reason`` is a thermal or power limit (counted as throttling)."""
    return reason in _LIMITED


class SeqState(enum.IntEnum):
    """Transition sequencer state (DVFS_STATUS.seq)."""

    IDLE = 0
    V_WAIT = 1    #: voltage requested, waiting for v_ack
    V_SETTLE = 2  #: v_ack seen, waiting v_settle ticks before raising the frequency
    F_WAIT = 3    #: frequency changed, clock gated until the PLL locks again


#: Registers frozen by DVFS_LOCK.lock (the OPP table is added per entry).
LOCKED_REGISTERS = frozenset(
    ["DVFS_PMAX", "DVFS_T_PASSIVE", "DVFS_T_PASSIVE_HYST", "DVFS_T_HOT", "DVFS_T_HOT_HYST",
     "DVFS_T_CRIT", "DVFS_HOT_DWELL", "DVFS_SENSOR_TIMEOUT", "DVFS_SENSOR_MIN",
     "DVFS_SENSOR_MAX", "DVFS_SENSOR_STUCK", "DVFS_V_SETTLE", "DVFS_PLL_TIMEOUT"]
    + [f"DVFS_OPP{i}{s}" for i in range(regs.DVFS_MAX_OPPS) for s in ("", "_MW")])


def dvfs_registers() -> tuple[regs.Register, ...]:
    """Return the controller's registers from :data:`llmchip.sw.regs.REGISTERS`."""
    return tuple(r for r in regs.REGISTERS if regs.DVFS_BASE <= r.offset < 0x300)


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


@dataclass(frozen=True)
class DvfsParams:
    """Structural parameters and CSR reset values of one DVFS controller.

    Parameters
    ----------
    opps : tuple of (int, int, int)
        Operating points ``(MHz, mV, mW at full load)``, lowest first, 2 to 8 of them;
        MHz strictly increasing, 1 to 4095; mV non-decreasing, 1 to 4095; mW 0 to 65535.
    tick_cycles : int
        Clock cycles per tick, 1 to 65535.
    count_width : int
        Bits of the ``busy``/``total`` inputs, 8 to 40.
    governor : Governor
    pc_en : bool
        Enable the PID power cap.
    mod_duty : int
        Clock-modulation duty ``(mod_duty + 1) / 16``, 0 to 15 (7: 50%).
    pmin, pmax : int
        Index limits of the governor's request; ``pmax`` defaults to the top index.
    up_threshold, down_threshold : int
        Governor load thresholds in percent, ``down <= up <= 100``.
    sample_period, rate_limit, hot_dwell, sensor_timeout, v_settle, pll_timeout : int
        Times in ticks, 0 to 65535 (``sample_period`` >= 1).
    t_passive, t_hot, t_crit, sensor_min, sensor_max, t_control : int
        Temperatures in milli-degrees C (signed 20 bits); ``t_passive <= t_crit``,
        ``t_hot <= t_crit``, ``sensor_min < sensor_max``.
    t_passive_hyst, t_hot_hyst : int
        Hysteresis in milli-degrees C, 0 to 65535.
    stuck_samples : int
        Samples of an unchanged reading that make a stuck sensor, 0 (off) to 255.
    p_sustain : int
        Sustainable power in mW, 0 to 65535.
    kp_po, kp_pu, ki, kd : int
        PID gains, unsigned Q8.12 mW per milli-degree C (``kp_po`` when T > T_control).
    cutoff : int
        Integrate only while ``|T_control - T| <= cutoff`` (milli-degrees C, 0 to 2**20-1).
    integ_max : int
        Integrator bound, 0 to 2**24-1.
    irq_en : int
        Reset value of DVFS_IRQ_EN (bits of :data:`llmchip.sw.regs.DVFS_EVENT_BITS`).

    Raises
    ------
    TypeError, ValueError
        Naming the first invalid field.
    """

    opps: tuple = DEFAULT_OPPS
    tick_cycles: int = 1
    count_width: int = 32
    governor: Governor = Governor.ONDEMAND
    pc_en: bool = False
    mod_duty: int = 7
    pmin: int = 0
    pmax: int | None = None
    up_threshold: int = 80
    down_threshold: int = 20
    sample_period: int = 250
    rate_limit: int = 100
    t_passive: int = 85000
    t_passive_hyst: int = 2000
    t_hot: int = 89000
    t_hot_hyst: int = 3000
    t_crit: int = 92000
    hot_dwell: int = 1000
    sensor_timeout: int = 1000
    sensor_min: int = -40000
    sensor_max: int = 150000
    stuck_samples: int = 0
    v_settle: int = 10
    pll_timeout: int = 100
    t_control: int = 80000
    p_sustain: int = 2000
    kp_po: int = 1638
    kp_pu: int = 410
    ki: int = 41
    kd: int = 0
    cutoff: int = 3000
    integ_max: int = 200000
    irq_en: int = 0x1E

    def __post_init__(self) -> None:
        opps = self.opps
        if not isinstance(opps, (tuple, list)):
            raise TypeError(f"opps must be a tuple of (MHz, mV, mW), not {opps!r}")
        check_int("len(opps)", len(opps), 2, regs.DVFS_MAX_OPPS)
        norm = []
        for i, opp in enumerate(opps):
            if not isinstance(opp, (tuple, list)) or len(opp) != 3:
                raise TypeError(f"opps[{i}] must be (MHz, mV, mW), not {opp!r}")
            check_int(f"opps[{i}] MHz", opp[0], 1, 4095)
            check_int(f"opps[{i}] mV", opp[1], 1, 4095)
            check_int(f"opps[{i}] mW", opp[2], 0, 65535)
            if i and opp[0] <= opps[i - 1][0]:
                raise ValueError(f"opps MHz must increase, not {opps[i - 1][0]} then "
                                 f"{opp[0]} at opps[{i}]")
            if i and opp[1] < opps[i - 1][1]:
                raise ValueError(f"opps mV must not decrease, not {opps[i - 1][1]} then "
                                 f"{opp[1]} at opps[{i}]")
            norm.append(tuple(opp))
        object.__setattr__(self, "opps", tuple(norm))
        n1 = len(norm) - 1
        if self.pmax is None:
            object.__setattr__(self, "pmax", n1)
        check_int("tick_cycles", self.tick_cycles, 1, 65535)
        check_int("count_width", self.count_width, 8, 40)
        if not isinstance(self.governor, int) or isinstance(self.governor, bool):
            raise TypeError(f"governor must be a Governor, not {self.governor!r}")
        if self.governor not in set(Governor):
            raise ValueError(f"governor must be one of {[g.name for g in Governor]}, "
                             f"not {self.governor!r}")
        object.__setattr__(self, "governor", Governor(self.governor))
        if not isinstance(self.pc_en, bool):
            raise TypeError(f"pc_en must be a bool, not {self.pc_en!r}")
        check_int("mod_duty", self.mod_duty, 0, 15)
        check_int("pmin", self.pmin, 0, n1)
        check_int("pmax", self.pmax, 0, n1)
        check_int("up_threshold", self.up_threshold, 0, 100)
        check_int("down_threshold", self.down_threshold, 0, self.up_threshold)
        check_int("sample_period", self.sample_period, 1, _TIMER_MAX)
        for name in ("rate_limit", "hot_dwell", "sensor_timeout", "v_settle", "pll_timeout"):
            check_int(name, getattr(self, name), 0, _TIMER_MAX)
        lo, hi = -_T_HALF, _T_HALF - 1
        for name in ("t_passive", "t_hot", "t_crit", "sensor_min", "sensor_max",
                     "t_control"):
            check_int(name, getattr(self, name), lo, hi)
        check_int("t_passive_hyst", self.t_passive_hyst, 0, 65535)
        check_int("t_hot_hyst", self.t_hot_hyst, 0, 65535)
        if self.t_passive > self.t_crit:
            raise ValueError(f"t_passive must be <= t_crit ({self.t_crit}), "
                             f"not {self.t_passive!r}")
        if self.t_hot > self.t_crit:
            raise ValueError(f"t_hot must be <= t_crit ({self.t_crit}), not {self.t_hot!r}")
        if self.sensor_min >= self.sensor_max:
            raise ValueError(f"sensor_min must be < sensor_max ({self.sensor_max}), "
                             f"not {self.sensor_min!r}")
        check_int("stuck_samples", self.stuck_samples, 0, _STUCK_MAX)
        check_int("p_sustain", self.p_sustain, 0, 65535)
        for name in ("kp_po", "kp_pu", "ki", "kd"):
            check_int(name, getattr(self, name), 0, (1 << 20) - 1)
        check_int("cutoff", self.cutoff, 0, (1 << 20) - 1)
        check_int("integ_max", self.integ_max, 0, (1 << 24) - 1)
        check_int("irq_en", self.irq_en, 0, (1 << len(regs.DVFS_EVENT_BITS)) - 1)

    @property
    def n_opps(self) -> int:
        """Number of operating points."""
        return len(self.opps)

    @property
    def index_width(self) -> int:
        """Bits of an operating-point index."""
        return max(1, (self.n_opps - 1).bit_length())

    def csr_reset(self) -> dict[str, int]:
        """Return the reset value of every writable DVFS register, by register name."""
        t = _T_MASK
        out = {
            "DVFS_CTRL": int(self.governor) | int(self.pc_en) << 2 | self.mod_duty << 4,
            "DVFS_LOCK": 0,
            "DVFS_IRQ_EN": self.irq_en,
            "DVFS_PMIN": self.pmin,
            "DVFS_PMAX": self.pmax,
            "DVFS_GOV_TUNE": self.up_threshold | self.down_threshold << 8,
            "DVFS_SAMPLE_PERIOD": self.sample_period,
            "DVFS_RATE_LIMIT": self.rate_limit,
            "DVFS_T_PASSIVE": self.t_passive & t,
            "DVFS_T_PASSIVE_HYST": self.t_passive_hyst,
            "DVFS_T_HOT": self.t_hot & t,
            "DVFS_T_HOT_HYST": self.t_hot_hyst,
            "DVFS_T_CRIT": self.t_crit & t,
            "DVFS_HOT_DWELL": self.hot_dwell,
            "DVFS_SENSOR_TIMEOUT": self.sensor_timeout,
            "DVFS_SENSOR_MIN": self.sensor_min & t,
            "DVFS_SENSOR_MAX": self.sensor_max & t,
            "DVFS_SENSOR_STUCK": self.stuck_samples,
            "DVFS_V_SETTLE": self.v_settle,
            "DVFS_PLL_TIMEOUT": self.pll_timeout,
            "DVFS_PC_T_CONTROL": self.t_control & t,
            "DVFS_PC_SUSTAIN": self.p_sustain,
            "DVFS_PC_KP_PO": self.kp_po,
            "DVFS_PC_KP_PU": self.kp_pu,
            "DVFS_PC_KI": self.ki,
            "DVFS_PC_KD": self.kd,
            "DVFS_PC_CUTOFF": self.cutoff,
            "DVFS_PC_INTEG_MAX": self.integ_max,
        }
        for i, (mhz, mv, mw) in enumerate(self.opps):
            out[f"DVFS_OPP{i}"] = mhz | mv << 12
            out[f"DVFS_OPP{i}_MW"] = mw
        return out

    def writable(self) -> dict[str, regs.Register]:
        """Return the RW registers this controller implements, by name."""
        names = set(self.csr_reset())
        return {r.name: r for r in dvfs_registers() if r.name in names}

    def sample_cycles(self) -> int:
        """Return the clock cycles of one sample period at reset."""
        return self.sample_period * self.tick_cycles

    def transition_ticks_bound(self, v_delay: int, lock_delay: int) -> int:
        """Return the most ticks one transition can take (plus its rate-limit wait).

        ``v_delay``/``lock_delay`` are the platform's acknowledge and relock times; a lock
        that never comes ends at the lock timeout.
        """
        lock = min(lock_delay + 1, self.pll_timeout) + 1
        return self.rate_limit + 2 * (v_delay + 2) + self.v_settle + 1 + lock + 4


@dataclass(frozen=True)
class DvfsInputs:
    """The controller's inputs during one clock cycle."""

    temp_mc: int = 25000
    temp_valid: bool = True
    busy: int = 0
    total: int = 0
    prochot_i: bool = False
    pll_lock: bool = True
    v_ack: bool = False


@dataclass(frozen=True)
class DvfsOutputs:
    """The controller's outputs during one clock cycle."""

    index: int
    target: int
    v_req_mv: int
    v_req_valid: bool
    f_index: int
    clk_en: bool
    duty: int          #: clock duty in sixteenths (16: no modulation)
    prochot_o: bool
    thermtrip: bool
    irq: bool
    reason: int
    tick: bool
    sensor_fault: bool
    modulating: bool
    seq: int


@dataclass
class DvfsState:
    """Every register of the controller (the RTL has one of each, same name and value)."""

    pre: int = 0          #: tick prescaler
    scnt: int = 0         #: ticks since the last sample
    ph: int = 0           #: sample pipeline phase: 0 idle, 1-7 divide, 8 eval, 9 apply
    busy_s: int = 0       #: busy latched at the sample (clamped to total)
    total_s: int = 0      #: total latched at the sample
    load: int = 0         #: 100 * busy // total of the last sample
    temp: int = 0         #: last valid reading (signed mC)
    range_bad: bool = False
    inval: int = 0        #: ticks the sensor has been invalid (saturating)
    fault_r: bool = False  #: sensor fault in the previous cycle (for the event edge)
    t_prev: int = 0       #: temperature at the previous eval
    crossed: bool = False  #: passive trip crossed (threshold is trip - hyst)
    step_cap: int = 0
    stuck: int = 0        #: evals with an unchanged reading (saturating at 255)
    gov: int = 0          #: governor request
    integ: int = 0        #: PID integrator
    e_prev: int = 0       #: PID error at the previous eval
    budget: int = 0       #: PID power budget (mW)
    pc_cap: int = 0
    hot: bool = False
    dwell: int = 0        #: ticks below the hot release threshold
    tripped: bool = False
    target: int = 0
    reason: int = 0
    seq: int = 0
    up: bool = False      #: direction of the transition in flight
    goal: int = 0         #: index the transition in flight goes to
    index: int = 0
    v_idx: int = 0
    f_index: int = 0
    v_valid: bool = False
    gate: bool = False    #: clock gated while the PLL relocks
    stimer: int = 0       #: sequencer timer (ticks)
    seen: bool = False    #: PLL lock loss seen in F_WAIT
    rate: int = 0         #: ticks until the next transition may start
    acc: int = 0          #: clock-enable pattern accumulator
    events: int = 0
    locked: bool = False
    thr_count: int = 0
    thr_time: int = 0
    transitions: int = 0
    # Not registers: statistics of the model.
    cycle: int = field(default=0, compare=False)
    en_cycles: int = field(default=0, compare=False)


class _Cfg:
    """Decoded CSR values (what the RTL's registers hold, as integers)."""

    __slots__ = ("governor", "pc_en", "mod_duty", "irq_en", "pmin", "pmax", "up", "down",
                 "sample_period", "rate_limit", "t_passive", "p_hyst", "t_hot", "h_hyst",
                 "t_crit", "hot_dwell", "sensor_timeout", "smin", "smax", "stuck_n",
                 "v_settle", "pll_timeout", "t_control", "p_sustain", "kp_po", "kp_pu", "ki",
                 "kd", "cutoff", "integ_max", "mhz", "mv", "mw")

    def __init__(self, raw: dict[str, int], n: int):
        ctrl = raw["DVFS_CTRL"]
        self.governor, self.pc_en, self.mod_duty = ctrl & 3, bool(ctrl >> 2 & 1), ctrl >> 4 & 15
        self.irq_en = raw["DVFS_IRQ_EN"]
        self.pmin, self.pmax = raw["DVFS_PMIN"], raw["DVFS_PMAX"]
        tune = raw["DVFS_GOV_TUNE"]
        self.up, self.down = tune & 0x7F, tune >> 8 & 0x7F
        self.sample_period = raw["DVFS_SAMPLE_PERIOD"]
        self.rate_limit = raw["DVFS_RATE_LIMIT"]
        self.t_passive = _signed(raw["DVFS_T_PASSIVE"], TEMP_BITS)
        self.p_hyst = raw["DVFS_T_PASSIVE_HYST"]
        self.t_hot = _signed(raw["DVFS_T_HOT"], TEMP_BITS)
        self.h_hyst = raw["DVFS_T_HOT_HYST"]
        self.t_crit = _signed(raw["DVFS_T_CRIT"], TEMP_BITS)
        self.hot_dwell = raw["DVFS_HOT_DWELL"]
        self.sensor_timeout = raw["DVFS_SENSOR_TIMEOUT"]
        self.smin = _signed(raw["DVFS_SENSOR_MIN"], TEMP_BITS)
        self.smax = _signed(raw["DVFS_SENSOR_MAX"], TEMP_BITS)
        self.stuck_n = raw["DVFS_SENSOR_STUCK"]
        self.v_settle = raw["DVFS_V_SETTLE"]
        self.pll_timeout = raw["DVFS_PLL_TIMEOUT"]
        self.t_control = _signed(raw["DVFS_PC_T_CONTROL"], TEMP_BITS)
        self.p_sustain = raw["DVFS_PC_SUSTAIN"]
        self.kp_po, self.kp_pu = raw["DVFS_PC_KP_PO"], raw["DVFS_PC_KP_PU"]
        self.ki, self.kd = raw["DVFS_PC_KI"], raw["DVFS_PC_KD"]
        self.cutoff = raw["DVFS_PC_CUTOFF"]
        self.integ_max = raw["DVFS_PC_INTEG_MAX"]
        self.mhz = [raw[f"DVFS_OPP{i}"] & 0xFFF for i in range(n)]
        self.mv = [raw[f"DVFS_OPP{i}"] >> 12 & 0xFFF for i in range(n)]
        self.mw = [raw[f"DVFS_OPP{i}_MW"] for i in range(n)]


def _field_mask(reg: regs.Register) -> int:
    if not reg.fields:
        return _M32
    mask = 0
    for f in reg.fields:
        mask |= ((1 << f.width) - 1) << f.lsb
    return mask


class DvfsModel:
    """The controller, one clock cycle per :meth:`step`, cycle-exact with the RTL.

    Parameters
    ----------
    params : DvfsParams, optional
        Defaults to ``DvfsParams()``.

    Notes
    -----
    Outputs are functions of the registers at the start of the cycle, except ``clk_en``,
    which is also ANDed with this cycle's ``pll_lock`` input. CSR writes queued with
    :meth:`csr_write` are presented on the CSR port one per cycle, in the following
    :meth:`step` calls, and take effect at the end of that cycle (as a write with
    ``csr_we`` in that cycle does in the RTL). :meth:`csr_read` returns what the RTL's
    ``csr_rdata`` shows in the cycle after a ``csr_re`` issued now.
    """

    def __init__(self, params: DvfsParams | None = None):
        self.params = p = params or DvfsParams()
        if not isinstance(p, DvfsParams):
            raise TypeError(f"params must be a DvfsParams, not {type(p).__name__}")
        self.n1 = p.n_opps - 1
        self._tc1 = p.tick_cycles - 1
        self._cmask = (1 << p.count_width) - 1
        self._raw = p.csr_reset()
        self._writable = p.writable()
        self._masks = {name: _field_mask(r) for name, r in self._writable.items()}
        self._by_offset = {r.offset: r for r in dvfs_registers()}
        self._c = _Cfg(self._raw, p.n_opps)
        self._writes: list[tuple[int, int]] = []
        self.state = DvfsState(step_cap=self.n1, pc_cap=self.n1, budget=p.opps[-1][2])

    # -- CSR port -------------------------------------------------------------------------
    def csr_write(self, offset: int, value: int) -> None:
        """Queue a write of ``value`` to the DVFS register at byte ``offset`` (0x200-0x2FC).

        Raises
        ------
        TypeError, ValueError
            If ``offset`` is not a word offset in the DVFS range or ``value`` is not a
            32-bit unsigned integer.
        """
        check_int("offset", offset, regs.DVFS_BASE, 0x2FC)
        if offset % 4:
            raise ValueError(f"offset must be a multiple of 4, not {offset:#x}")
        check_int("value", value, 0, _M32)
        self._writes.append((offset, value))

    def csr_read(self, offset: int) -> int:
        """Return the value of the DVFS register at byte ``offset`` (0 if unmapped).

        Raises
        ------
        TypeError, ValueError
            If ``offset`` is not a word offset in the DVFS range.
        """
        check_int("offset", offset, regs.DVFS_BASE, 0x2FC)
        if offset % 4:
            raise ValueError(f"offset must be a multiple of 4, not {offset:#x}")
        reg = self._by_offset.get(offset)
        if reg is None:
            return 0
        return self._read(reg.name)

    def _read(self, name: str) -> int:
        s = self.state
        if name in self._raw:
            if name == "DVFS_LOCK":
                return int(s.locked)
            return self._raw[name]
        if name == "DVFS_STATUS":
            return (s.index | s.target << 4 | s.f_index << 8 | s.v_idx << 12 | s.reason << 16
                    | s.hot << 20 | s.tripped << 21 | self._fault(s, self._c) << 22
                    | self._mod(s) << 23 | s.seq << 24)
        if name == "DVFS_EVENTS":
            return s.events
        if name == "DVFS_TEMP":
            return s.temp & _T_MASK
        if name == "DVFS_LOAD":
            return s.load
        if name == "DVFS_CAPS":
            return s.gov | s.step_cap << 4 | s.pc_cap << 8 | s.budget << 16
        if name == "DVFS_INTEG":
            return s.integ & ((1 << INTEG_BITS) - 1)
        if name == "DVFS_THROTTLE_COUNT":
            return s.thr_count
        if name == "DVFS_THROTTLE_TIME":
            return s.thr_time
        if name == "DVFS_TRANSITIONS":
            return s.transitions
        return 0  # OPP entries beyond the table

    # -- combinational helpers ---------------------------------------------------------
    @staticmethod
    def _fault(s: DvfsState, c: _Cfg) -> bool:
        return (s.inval > c.sensor_timeout or s.range_bad
                or (c.stuck_n != 0 and s.stuck >= c.stuck_n))

    @staticmethod
    def _mod(s: DvfsState) -> bool:
        return s.hot and s.f_index == 0 and s.seq == SeqState.IDLE

    def _arbitrate(self, s: DvfsState, c: _Cfg) -> tuple[int, int]:
        n1 = self.n1
        pmin, pmax = min(c.pmin, n1), min(c.pmax, n1)
        floor = max(s.gov, pmin)
        want = min(floor, pmax)
        arb = min(want, s.step_cap, s.pc_cap)
        if s.tripped:
            return 0, Reason.CRITICAL
        if self._fault(s, c):
            return 0, Reason.SENSOR_FAULT
        if s.hot:
            return 0, Reason.HOT
        if s.step_cap < want:
            return arb, Reason.THERMAL
        if s.pc_cap < want:
            return arb, Reason.POWER_CAP
        if pmax < floor:
            return arb, Reason.HOST
        if arb < n1:
            return arb, Reason.IDLE
        return arb, Reason.NONE

    def outputs(self, inputs: DvfsInputs) -> DvfsOutputs:
        """Return this cycle's outputs for ``inputs`` without advancing."""
        return self._outputs(self.state, self._c, inputs)[0]

    def _outputs(self, s: DvfsState, c: _Cfg, i: DvfsInputs):
        mod = self._mod(s)
        fmax = c.mhz[self.n1]
        inc = c.mhz[s.f_index]
        if mod:
            inc = (inc * (c.mod_duty + 1)) >> 4
        inc = min(inc, fmax)
        total = s.acc + inc
        carry = total >= fmax
        clk_en = carry and not s.gate and not s.tripped and bool(i.pll_lock)
        out = DvfsOutputs(
            index=s.index, target=s.target, v_req_mv=c.mv[s.v_idx], v_req_valid=s.v_valid,
            f_index=s.f_index, clk_en=clk_en, duty=c.mod_duty + 1 if mod else 16,
            prochot_o=s.hot, thermtrip=s.tripped,
            irq=bool(s.events & c.irq_en), reason=s.reason, tick=s.pre == self._tc1,
            sensor_fault=self._fault(s, c), modulating=mod, seq=s.seq)
        return out, total, carry, fmax

    # -- one cycle ---------------------------------------------------------------------
    def step(self, inputs: DvfsInputs) -> DvfsOutputs:
        """Advance one clock cycle with ``inputs``; return the outputs of that cycle."""
        s, c = self.state, self._c
        out, total, carry, fmax = self._outputs(s, c, inputs)
        n = copy.copy(s)
        tick = out.tick
        n.cycle += 1
        if out.clk_en:
            n.en_cycles += 1
        n.acc = total - fmax if carry else total
        n.pre = 0 if tick else s.pre + 1

        # Sensor.
        temp_in = ((inputs.temp_mc + _T_HALF) & _T_MASK) - _T_HALF
        if inputs.temp_valid:
            n.temp = temp_in
            n.range_bad = temp_in < c.smin or temp_in > c.smax
            n.inval = 0
        elif tick:
            n.inval = min(s.inval + 1, _TIMER_MAX)
        fault = out.sensor_fault
        n.fault_r = fault
        n.tripped = s.tripped or s.temp >= c.t_crit

        # Hot / PROCHOT.
        prochot = bool(inputs.prochot_i)
        if not s.hot:
            n.hot = s.temp >= c.t_hot or prochot
            n.dwell = 0
        elif s.temp < c.t_hot - c.h_hyst and not prochot:
            if s.dwell >= c.hot_dwell:
                n.hot, n.dwell = False, 0
            elif tick:
                n.dwell = min(s.dwell + 1, _TIMER_MAX)
        else:
            n.dwell = 0

        # Sample pipeline.
        sample = tick and s.scnt + 1 >= c.sample_period
        if tick:
            n.scnt = 0 if s.scnt + 1 >= c.sample_period else s.scnt + 1
        if s.ph == 0:
            if sample:
                busy, tot = inputs.busy & self._cmask, inputs.total & self._cmask
                n.ph, n.busy_s, n.total_s = 1, min(busy, tot), tot
        elif s.ph < EVAL_PHASE:
            n.ph = s.ph + 1
            if s.ph == DIV_CYCLES:
                n.load = 100 * s.busy_s // s.total_s if s.total_s else 0
        elif s.ph == EVAL_PHASE:
            n.ph = APPLY_PHASE
            self._eval(s, n, c)
        else:
            n.ph = 0

        # Arbitration: down at once, up only in the apply phase.
        arb, reason = self._arbitrate(s, c)
        if arb < s.target or (arb > s.target and s.ph == APPLY_PHASE):
            n.target = arb
        n.reason = reason
        ev = 0
        if limited(reason):
            if not limited(s.reason):
                ev |= 1 << regs.DVFS_EVENT_BITS["throttle"]
                n.thr_count = (s.thr_count + 1) & _M32
            if tick:
                n.thr_time = (s.thr_time + 1) & _M32
        if n.hot and not s.hot:
            ev |= 1 << regs.DVFS_EVENT_BITS["hot"]
        if n.tripped and not s.tripped:
            ev |= 1 << regs.DVFS_EVENT_BITS["critical"]
        if fault and not s.fault_r:
            ev |= 1 << regs.DVFS_EVENT_BITS["sensor_fault"]

        # Transition sequencer.
        ev |= self._sequence(s, n, c, inputs, tick)

        # CSR write (at most one per cycle).
        clear = 0
        if self._writes:
            offset, value = self._writes.pop(0)
            name = self._by_offset[offset].name if offset in self._by_offset else None
            if name == "DVFS_EVENTS":
                clear = value
            elif name == "DVFS_LOCK":
                n.locked = s.locked or bool(value & 1)
            elif name in self._writable and not (s.locked and name in LOCKED_REGISTERS):
                self._raw[name] = value & self._masks[name]
                self._c = _Cfg(self._raw, self.params.n_opps)
        n.events = (s.events & ~clear & 0x3F) | ev
        self.state = n
        return out

    def _sequence(self, s: DvfsState, n: DvfsState, c: _Cfg, i: DvfsInputs, tick: bool) -> int:
        ev = 0
        done = 1 << regs.DVFS_EVENT_BITS["transition"]
        if s.seq == SeqState.IDLE:
            if s.target != s.index and s.rate == 0:
                n.goal = s.target
                n.up = s.target > s.index
                n.stimer, n.seen = 0, False
                if n.up:
                    n.v_idx, n.v_valid, n.seq = s.target, True, SeqState.V_WAIT
                else:
                    n.f_index, n.gate, n.seq = s.target, True, SeqState.F_WAIT
            elif tick and s.rate > 0:
                n.rate = s.rate - 1
        elif s.seq == SeqState.V_WAIT:
            if s.up and n.target <= s.f_index:
                # Abort: the target fell to or below the frequency in effect. The request
                # is withdrawn; an acknowledge in this very cycle leaves the voltage raised.
                n.seq, n.v_valid = SeqState.IDLE, False
                if not i.v_ack:
                    n.v_idx = s.index
            elif i.v_ack:
                n.v_valid, n.stimer = False, 0
                if s.up:
                    n.seq = SeqState.V_SETTLE
                else:
                    n.seq, n.index, n.rate = SeqState.IDLE, s.goal, c.rate_limit
                    n.transitions = (s.transitions + 1) & _M32
                    ev |= done
        elif s.seq == SeqState.V_SETTLE:
            if n.target <= s.f_index:
                n.seq = SeqState.IDLE  # abort; the raised voltage stays
            elif s.stimer >= c.v_settle:
                f = min(s.goal, n.target)
                n.f_index, n.goal, n.gate, n.seq, n.stimer, n.seen = (
                    f, f, True, SeqState.F_WAIT, 0, False)
            elif tick:
                n.stimer = min(s.stimer + 1, _TIMER_MAX)
        else:
            if not i.pll_lock:
                n.seen = True
            timeout = s.stimer >= c.pll_timeout
            if (s.seen and i.pll_lock) or timeout:
                n.gate = False
                if timeout and not (s.seen and i.pll_lock):
                    ev |= 1 << regs.DVFS_EVENT_BITS["pll_timeout"]
                if s.up:
                    n.seq, n.index, n.rate = SeqState.IDLE, s.goal, c.rate_limit
                    n.transitions = (s.transitions + 1) & _M32
                    ev |= done
                else:
                    n.v_idx, n.v_valid, n.seq = s.goal, True, SeqState.V_WAIT
            elif tick:
                n.stimer = min(s.stimer + 1, _TIMER_MAX)
        return ev

    def _eval(self, s: DvfsState, n: DvfsState, c: _Cfg) -> None:
        n1, t, load = self.n1, s.temp, s.load
        mhz, mw = c.mhz, c.mw
        # Governor.
        g = c.governor
        if g == Governor.PERFORMANCE:
            n.gov = n1
        elif g == Governor.CONSERVATIVE:
            if load > c.up:
                n.gov = min(s.gov + 1, n1)
            elif load < c.down:
                n.gov = max(s.gov - 1, 0)
        else:
            if g == Governor.ONDEMAND:
                if load > c.up:
                    need = None
                else:
                    need = (mhz[0] * 100 + load * (mhz[n1] - mhz[0]), 100)
            else:
                need = (5 * mhz[n1] * load, 400)
            gov = n1
            if need is not None:
                for k in range(n1, -1, -1):
                    if mhz[k] * need[1] >= need[0]:
                        gov = k
            n.gov = gov
        # Step-wise passive cap.
        threshold = c.t_passive - c.p_hyst if s.crossed else c.t_passive
        above = t >= threshold
        rising = t > s.t_prev
        if above and rising:
            n.step_cap = max(s.step_cap - 1, 0)
        elif not above and not rising:
            n.step_cap = min(s.step_cap + 1, n1)
        n.crossed = above
        n.t_prev = t
        n.stuck = min(s.stuck + 1, _STUCK_MAX) if t == s.t_prev else 0
        # PID power cap.
        e = c.t_control - t
        if c.pc_en:
            kp = c.kp_po if e < 0 else c.kp_pu
            integ = s.integ
            if -c.cutoff <= e <= c.cutoff:
                integ = max(-c.integ_max, min(c.integ_max, integ + e))
            power = (c.p_sustain + (kp * e >> GAIN_FRAC) + (c.ki * integ >> GAIN_FRAC)
                     + (c.kd * (e - s.e_prev) >> GAIN_FRAC))
            budget = max(0, min(mw[n1], power))
            cap = 0
            for k in range(n1 + 1):
                if mw[k] * load <= budget * 100:
                    cap = k
            n.integ, n.budget, n.pc_cap = integ, budget, cap
        else:
            n.integ, n.budget, n.pc_cap = 0, mw[n1], n1
        n.e_prev = e

    # -- many cycles ---------------------------------------------------------------------
    def advance(self, inputs: DvfsInputs, n: int) -> DvfsOutputs:
        """Advance ``n`` cycles with constant ``inputs``; return the last cycle's outputs.

        Equal to ``n`` :meth:`step` calls, but stretches in which only counters change
        (prescaler, sample counter, timers, clock pattern, throttle time) are skipped
        arithmetically.

        Raises
        ------
        TypeError, ValueError
            If ``n`` is not an integer >= 1.
        """
        check_int("n", n, 1, 1 << 62)
        while n > 1:
            k = self.quiet_cycles(inputs, n - 1)
            if k:
                self._skip(inputs, k)
                n -= k
            else:
                self.step(inputs)
                n -= 1
        return self.step(inputs)

    def quiet_cycles(self, inputs: DvfsInputs, limit: int) -> int:
        """Return how many of the next ``limit`` cycles only advance counters (0 if unsure)."""
        s, c, p = self.state, self._c, self.params
        if (limit < 4 or self._writes or s.ph != 0 or s.seq != SeqState.IDLE
                or not inputs.pll_lock or inputs.v_ack):
            return 0
        fmax = c.mhz[self.n1]
        if fmax == 0 or s.acc >= fmax:
            return 0
        # The registers that are not counters must already be at their fixed point.
        trial = copy.copy(self)
        trial.state = copy.copy(s)
        trial._writes = []
        trial.step(inputs)
        t = trial.state
        for name in _STABLE:
            if getattr(t, name) != getattr(s, name):
                return 0
        # Counters that other registers depend on must be at rest or bounded so that no
        # threshold is reached within the stretch.
        allowed = c.sample_period - s.scnt - 1
        if inputs.temp_valid:
            if s.inval:
                return 0
        elif s.inval <= c.sensor_timeout:
            allowed = min(allowed, c.sensor_timeout - s.inval)
        if self._dwelling(s, c, inputs):
            allowed = min(allowed, c.hot_dwell - s.dwell - 1)
        elif s.dwell:
            return 0
        if s.target != s.index:
            allowed = min(allowed, s.rate - 1)
        if allowed < 0:
            return 0
        tc = p.tick_cycles
        cycles = (allowed + 1) * tc - s.pre - 1
        return max(0, min(limit, cycles))

    @staticmethod
    def _dwelling(s: DvfsState, c: _Cfg, inputs: DvfsInputs) -> bool:
        return s.hot and s.temp < c.t_hot - c.h_hyst and not inputs.prochot_i

    def _skip(self, inputs: DvfsInputs, k: int) -> None:
        s, c, p = self.state, self._c, self.params
        tc = p.tick_cycles
        ticks = (s.pre + k) // tc
        n = copy.copy(s)
        n.pre = (s.pre + k) % tc
        n.scnt = s.scnt + ticks
        n.cycle += k
        if not inputs.temp_valid:
            n.inval = min(s.inval + ticks, _TIMER_MAX)
        if self._dwelling(s, c, inputs):
            n.dwell = s.dwell + ticks
        n.rate = max(0, s.rate - ticks)
        if limited(s.reason):
            n.thr_time = (s.thr_time + ticks) & _M32
        fmax = c.mhz[self.n1]
        inc = c.mhz[s.f_index]
        if self._mod(s):
            inc = (inc * (c.mod_duty + 1)) >> 4
        inc = min(inc, fmax)
        total = s.acc + k * inc
        carries = total // fmax
        n.acc = total % fmax
        if not s.gate and not s.tripped and inputs.pll_lock:
            n.en_cycles += carries
        self.state = n


#: State fields that must not change for a stretch of cycles to be skipped.
_STABLE = tuple(f.name for f in fields(DvfsState)
                if f.name not in ("pre", "scnt", "inval", "dwell", "rate", "thr_time", "acc",
                                  "cycle", "en_cycles"))


class PlatformModel:
    """An ideal voltage regulator and PLL around the controller.

    The regulator raises ``v_ack`` ``v_delay`` ticks after ``v_req_valid`` rises and
    drops it when the request goes away; the PLL drops ``pll_lock`` in the cycle after
    ``f_index`` changes and locks again ``lock_delay`` ticks later. Both are registered,
    so :meth:`pll_lock`/:meth:`v_ack` are this cycle's values before :meth:`step`.

    Parameters
    ----------
    params : DvfsParams
        For the reset voltage (the lowest point's).
    v_delay, lock_delay : int
        Ticks, 0 to 65535.

    Raises
    ------
    TypeError, ValueError
        If a delay is out of range.
    """

    def __init__(self, params: DvfsParams | None = None, v_delay: int = 5,
                 lock_delay: int = 5):
        params = params or DvfsParams()
        check_int("v_delay", v_delay, 0, _TIMER_MAX)
        check_int("lock_delay", lock_delay, 0, _TIMER_MAX)
        self.v_delay, self.lock_delay = v_delay, lock_delay
        self.v_cnt = 0
        self.v_ack = False
        self.mv = params.opps[0][1]
        self.f_prev = 0
        self.pll_lock = True
        self.l_cnt = 0

    def quiet(self, state: DvfsState) -> bool:
        """Return whether the platform holds still while the controller's ``state`` does."""
        return (self.pll_lock and not self.v_ack and self.v_cnt == 0 and not state.v_valid
                and state.f_index == self.f_prev)

    def step(self, out: DvfsOutputs) -> None:
        """Advance one cycle seeing the controller's outputs ``out``."""
        if out.v_req_valid:
            if not self.v_ack:
                if self.v_cnt >= self.v_delay:
                    self.v_ack, self.mv = True, out.v_req_mv
                elif out.tick:
                    self.v_cnt = min(self.v_cnt + 1, _TIMER_MAX)
        else:
            self.v_cnt, self.v_ack = 0, False
        if out.f_index != self.f_prev:
            self.pll_lock, self.l_cnt, self.f_prev = False, 0, out.f_index
        elif not self.pll_lock:
            if self.l_cnt >= self.lock_delay:
                self.pll_lock = True
            elif out.tick:
                self.l_cnt = min(self.l_cnt + 1, _TIMER_MAX)


# -- traces ------------------------------------------------------------------------------

#: Columns of a trace CSV, in order.
TRACE_COLUMNS = ("cycle", "temperature_mC", "temp_valid", "busy", "total", "prochot")


def _check_rows(rows) -> list[dict]:
    out = []
    prev = -1
    for k, row in enumerate(rows):
        try:
            r = {name: row[name] for name in TRACE_COLUMNS}
        except KeyError as exc:
            raise ValueError(f"trace row {k} has no column {exc.args[0]!r}") from None
        for name in TRACE_COLUMNS:
            check_int(f"trace row {k} {name}", int(r[name]) if isinstance(r[name], bool)
                      else r[name], -(1 << 40), 1 << 40)
        if r["cycle"] <= prev:
            raise ValueError(f"trace cycles must increase, not {prev} then {r['cycle']} "
                             f"(row {k})")
        if k == 0 and r["cycle"] != 0:
            raise ValueError(f"the first trace row must be at cycle 0, not {r['cycle']}")
        check_int(f"trace row {k} temperature_mC", r["temperature_mC"], -_T_HALF,
                  _T_HALF - 1)
        prev = r["cycle"]
        out.append({name: int(r[name]) for name in TRACE_COLUMNS})
    if not out:
        raise ValueError("a trace needs at least one row")
    return out


def read_trace(path: str | Path) -> list[dict]:
    """Read a trace CSV (header :data:`TRACE_COLUMNS`) into a list of row dicts.

    Raises
    ------
    ValueError
        If a column is missing, a value is not an integer, or cycles do not increase
        from 0.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in TRACE_COLUMNS if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path}: trace header lacks {missing}")
        rows = []
        for k, row in enumerate(reader):
            try:
                rows.append({c: int(row[c]) for c in TRACE_COLUMNS})
            except ValueError:
                raise ValueError(f"{path}: row {k} has a non-integer value: {row}") from None
    return _check_rows(rows)


def write_trace(path: str | Path, rows) -> Path:
    """Write ``rows`` (dicts with :data:`TRACE_COLUMNS`) as a trace CSV; return the path."""
    rows = _check_rows(rows)
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TRACE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def normalize_writes(writes) -> list[tuple[int, int, int]]:
    """Sort register writes ``(cycle, offset, value)``; writes sharing a cycle move to the
    following cycles (the CSR port takes one write per cycle).

    Raises
    ------
    TypeError, ValueError
        If a write is malformed or its offset is outside the DVFS range.
    """
    out = []
    last = -1
    for k, w in enumerate(sorted(writes, key=lambda w: w[0])):
        if len(w) != 3:
            raise ValueError(f"write {k} must be (cycle, offset, value), not {w!r}")
        cycle, offset, value = w
        check_int(f"write {k} cycle", cycle, 0, 1 << 40)
        check_int(f"write {k} offset", offset, regs.DVFS_BASE, 0x2FC)
        check_int(f"write {k} value", value, 0, _M32)
        cycle = max(cycle, last + 1)
        out.append((cycle, offset, value))
        last = cycle
    return out


def trace_spans(trace, params: DvfsParams) -> list[tuple[int, int, DvfsInputs]]:
    """Return ``(start, end, inputs)`` per trace row (the last row lasts one sample period).

    ``pll_lock``/``v_ack`` in the inputs are placeholders the platform fills in.
    """
    rows = _check_rows(trace)
    spans = []
    for k, r in enumerate(rows):
        end = rows[k + 1]["cycle"] if k + 1 < len(rows) else r["cycle"] + params.sample_cycles()
        spans.append((r["cycle"], end, DvfsInputs(
            temp_mc=r["temperature_mC"], temp_valid=bool(r["temp_valid"]), busy=r["busy"],
            total=r["total"], prochot_i=bool(r["prochot"]))))
    return spans


def replay(trace, params: DvfsParams | None = None, writes=(), *, v_delay: int = 5,
           lock_delay: int = 5) -> list[dict]:
    """Run the controller and :class:`PlatformModel` over a trace.

    Parameters
    ----------
    trace : list of dict or path
        Rows with :data:`TRACE_COLUMNS` (or a CSV path); row ``i`` applies from its
        ``cycle`` until the next row's (the last row for one sample period).
    params : DvfsParams, optional
    writes : iterable of (cycle, offset, value)
        Register writes at byte offsets 0x200-0x2FC, see :func:`normalize_writes`.
    v_delay, lock_delay : int
        The platform's regulator and PLL delays in ticks.

    Returns
    -------
    list of dict
        Per row: ``cycle``, ``index``, ``v_req_mv``, ``clk_en_ratio`` (enabled cycles /
        cycles of the row), ``clk_en``, ``reason``, ``thermtrip``, ``irq`` (sampled at the
        row's last cycle).
    """
    params = params or DvfsParams()
    if isinstance(trace, (str, Path)):
        trace = read_trace(trace)
    spans = trace_spans(trace, params)
    pending = normalize_writes(writes)
    model = DvfsModel(params)
    plat = PlatformModel(params, v_delay, lock_delay)
    results = []
    w = 0
    for start, end, base in spans:
        en0 = model.state.en_cycles
        cycle = start
        out = None
        while cycle < end:
            while w < len(pending) and pending[w][0] <= cycle:
                if pending[w][0] == cycle:
                    model.csr_write(pending[w][1], pending[w][2])
                w += 1
            inputs = _with_platform(base, plat)
            horizon = end - cycle - 1
            if w < len(pending):
                horizon = min(horizon, pending[w][0] - cycle)
            k = 0
            if horizon > 3 and plat.quiet(model.state):
                k = model.quiet_cycles(inputs, horizon)
            if k:
                model._skip(inputs, k)
                cycle += k
                continue
            out = model.step(inputs)
            plat.step(out)
            cycle += 1
        results.append({"cycle": start, "index": out.index, "v_req_mv": out.v_req_mv,
                        "clk_en_ratio": (model.state.en_cycles - en0) / (end - start),
                        "clk_en": int(out.clk_en), "reason": int(out.reason),
                        "thermtrip": int(out.thermtrip), "irq": int(out.irq)})
    return results


def _with_platform(base: DvfsInputs, plat: PlatformModel) -> DvfsInputs:
    return DvfsInputs(temp_mc=base.temp_mc, temp_valid=base.temp_valid, busy=base.busy,
                      total=base.total, prochot_i=base.prochot_i, pll_lock=plat.pll_lock,
                      v_ack=plat.v_ack)
