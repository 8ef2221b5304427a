"""Power and thermal model of the accelerator: energy per operation, leakage and a
two-node RC thermal plant (used by the energy reports of model runs and by the
closed-loop DVFS studies in :mod:`llmchip.sw.dvfs_sim`).

Dynamic energy per operation at 45 nm (Horowitz, ISSCC 2014), as listed in the DVFS
specification: an int8 multiply 0.2 pJ and an int32 add 0.1 pJ per MAC; a 64-bit SRAM
access 10 pJ at 8 KB, 20 pJ at 32 KB and 100 pJ at 1 MB (interpolated in log size);
DRAM 1.3-2.6 nJ per 64 bits (the midpoint is used). These are taken at 0.9 V and scale
with the square of the supply voltage. Static (leakage) power rises with the supply
voltage and doubles about every 19 K (HotSpot's leakage example). The thermal plant is a
die node (time constant ~0.3 ms) on a heat sink (0.1 K/W, 140 J/K, ~14 s) to ambient
(45 C), integrated with forward Euler. Every constant lives in :class:`PowerConstants`
and can be overridden from a JSON or TOML file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from llmchip.config import AcceleratorConfig

__all__ = ["EnergyModel", "OPERATING_POINTS", "Activity", "PowerConstants", "ThermalPlant",
           "estimate_energy", "energy_per_cycle_pj", "dynamic_power_w", "leakage_power_w",
           "full_load_activity", "opp_power_mw"]

#: (MHz, mV) operating points of the DVFS specification, lowest first.
OPERATING_POINTS = ((200, 800), (297, 800), (400, 825), (500, 875), (600, 925), (800, 1100))


def _interp_sram(pts, size_bytes: int) -> float:
    if size_bytes <= pts[0][0]:
        return pts[0][1]
    for (s0, e0), (s1, e1) in zip(pts, pts[1:], strict=False):
        if size_bytes <= s1:
            t = math.log(size_bytes / s0) / math.log(s1 / s0)
            return e0 + t * (e1 - e0)
    s0, e0 = pts[-2]
    s1, e1 = pts[-1]
    return e1 + (e1 - e0) * math.log(size_bytes / s1) / math.log(s1 / s0)


@dataclass(frozen=True)
class EnergyModel:
    """Energies in picojoules at ``v_ref`` volts."""

    mac_pj: float = 0.2 + 0.1
    sram_pj_per_64b: tuple = ((8 << 10, 10.0), (32 << 10, 20.0), (1 << 20, 100.0))
    dram_pj_per_64b: float = (1300.0 + 2600.0) / 2
    v_ref: float = 0.9

    def sram_pj(self, size_bytes: int) -> float:
        """Return the energy of one 64-bit access to an SRAM of ``size_bytes``."""
        return _interp_sram(self.sram_pj_per_64b, size_bytes)


def _parts_pj(config: AcceleratorConfig, counters: Mapping, em) -> dict[str, float]:
    """Dynamic energy by component at ``em.v_ref`` for a dict of run counters."""
    derived = config.to_dict()["derived"]
    width = max(config.rows, config.cols)
    dram_bytes = counters.get("dram_read_bytes", 0) + counters.get("dram_write_bytes", 0)
    sp_words = (counters.get("sram_reads", 0) * width
                + counters.get("dram_read_bytes", 0)) / 8      # reads plus DMA fills
    acc_words = counters.get("acc_accesses", 0) * config.cols * config.acc_width / 8 / 8
    return {
        "mac": counters.get("macs", 0) * em.mac_pj,
        "scratchpad": sp_words * em.sram_pj(derived["sp_bytes"]),
        "accumulator": acc_words * em.sram_pj(derived["acc_bytes"]),
        "dram": dram_bytes / 8 * em.dram_pj_per_64b,
    }


def estimate_energy(config: AcceleratorConfig, counters: dict, *, mhz: int = 800,
                    mv: int = 1100, model: EnergyModel | None = None) -> dict:
    """Return the dynamic energy of a run in microjoules, by component, and its power.

    ``counters`` holds ``macs``, ``dram_read_bytes``, ``dram_write_bytes``, ``cycles`` and,
    when known, ``sram_reads`` (scratchpad rows read by the array) and ``acc_accesses``
    (accumulator rows written or read), as :attr:`llmchip.sw.runtime.Device.totals` does.
    """
    em = model or EnergyModel()
    scale = (mv / 1000.0 / em.v_ref) ** 2
    parts_pj = _parts_pj(config, counters, em)
    total_uj = sum(parts_pj.values()) * scale * 1e-6
    seconds = counters.get("cycles", 0) / (mhz * 1e6)
    return {"total_uj": total_uj,
            "parts_uj": {k: v * scale * 1e-6 for k, v in parts_pj.items()},
            "mhz": mhz, "mv": mv, "seconds": seconds,
            "avg_power_w": total_uj * 1e-6 / seconds if seconds else 0.0}


@dataclass(frozen=True)
class Activity:
    """Operations per busy accelerator cycle (the rates of a workload phase).

    Parameters
    ----------
    macs : float
        Multiply-accumulates per cycle (at most the number of PEs).
    sram_reads : float
        Scratchpad rows read by the array per cycle.
    acc_accesses : float
        Accumulator rows written or read per cycle.
    dram_bytes : float
        DRAM bytes moved (read plus written) per cycle; the DMA also writes what it
        reads into the scratchpad.
    dram_read_share : float
        Fraction of ``dram_bytes`` that are reads (they also fill the scratchpad).
    """

    macs: float = 0.0
    sram_reads: float = 0.0
    acc_accesses: float = 0.0
    dram_bytes: float = 0.0
    dram_read_share: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v < 0:
                raise ValueError(f"activity {f.name} must be a finite number >= 0, not {v!r}")
        if self.dram_read_share > 1:
            raise ValueError(f"activity dram_read_share must be at most 1, not "
                             f"{self.dram_read_share!r}")

    def counters(self, cycles: float = 1.0) -> dict[str, float]:
        """Return run counters (as :func:`estimate_energy` takes) for ``cycles`` cycles."""
        rd = self.dram_bytes * self.dram_read_share * cycles
        return {"macs": self.macs * cycles, "sram_reads": self.sram_reads * cycles,
                "acc_accesses": self.acc_accesses * cycles, "dram_read_bytes": rd,
                "dram_write_bytes": self.dram_bytes * cycles - rd, "cycles": cycles}


def _finite(name: str, value, lo: float = 0.0, *, strict: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} {value!r}")
    if not math.isfinite(value) or (value <= lo if strict else value < lo):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {lo:g}, "
                         f"not {value!r}")


@dataclass(frozen=True)
class PowerConstants:
    """Every constant of the power and thermal model, with the specification's values.

    Energies are in picojoules at ``v_ref`` volts and scale with ``(V / v_ref) ** 2``.

    Parameters
    ----------
    mac_pj : float
        One int8 multiply (0.2 pJ) plus one int32 add (0.1 pJ).
    sram_pj_per_64b : tuple of (bytes, pJ)
        64-bit SRAM access energy by array size, interpolated in log size.
    dram_pj_per_64b : float
        DRAM access energy per 64 bits (midpoint of 1.3-2.6 nJ).
    dram_die_fraction : float
        Share of the DRAM access energy dissipated in the thermal package of the die (1:
        DRAM in the same package, as with stacked or package-on-package memory).
    clock_pj_per_pe_cycle : float
        Clock distribution and pipeline registers per PE and enabled cycle, busy or idle
        (an assumption: about 48 flip-flops per int8 PE at ~2 fJ of clock-pin energy).
    v_ref : float
        Supply voltage (V) at which the energies above hold.
    leak_mw_per_pe, leak_mw_per_kib : float
        Leakage at ``v_ref`` and ``leak_t_ref_c`` per PE (logic) and per KiB of SRAM
        (scratchpad, accumulator, parameters).
    leak_t_ref_c : float
        Temperature of the leakage reference values (C).
    leak_doubling_k : float
        Temperature rise that doubles leakage (HotSpot's example: ~19 K).
    leak_v_exponent : float
        Leakage power scales as ``(V / v_ref) ** leak_v_exponent`` (V times a
        subthreshold current that rises with V through DIBL).
    die_tau_s, die_r_k_per_w : float
        Die node: time constant (~0.3 ms) and resistance to the heat sink (junction to
        sink, through the package and the interface material); ``C = tau / R``.
    sink_r_k_per_w, sink_c_j_per_k : float
        Heat sink to ambient: 0.1 K/W and 140 J/K (tau 14 s).
    ambient_c : float
        Ambient temperature (C).
    dt_s : float
        Forward-Euler step; at most a tenth of the die time constant.
    sensor_lsb_mc : int
        Resolution of the temperature sensor in milli-degrees C (0.1 C, typical of
        on-die digital sensors; readings are reported in mC).
    trip_cuts_power : bool
        The board removes the supply when the controller asserts ``thermtrip`` (dynamic
        and leakage power drop to zero), as a PMIC does on a THERMTRIP# signal.

    Raises
    ------
    TypeError, ValueError
        If a constant has the wrong type or is out of range (the message names it).
    """

    mac_pj: float = 0.2 + 0.1
    sram_pj_per_64b: tuple = ((8 << 10, 10.0), (32 << 10, 20.0), (1 << 20, 100.0))
    dram_pj_per_64b: float = (1300.0 + 2600.0) / 2
    dram_die_fraction: float = 1.0
    clock_pj_per_pe_cycle: float = 0.1
    v_ref: float = 0.9
    leak_mw_per_pe: float = 0.5
    leak_mw_per_kib: float = 0.05
    leak_t_ref_c: float = 45.0
    leak_doubling_k: float = 19.0
    leak_v_exponent: float = 3.0
    die_tau_s: float = 0.3e-3
    die_r_k_per_w: float = 1.0
    sink_r_k_per_w: float = 0.1
    sink_c_j_per_k: float = 140.0
    ambient_c: float = 45.0
    dt_s: float = 10e-6
    sensor_lsb_mc: int = 100
    trip_cuts_power: bool = True

    def __post_init__(self) -> None:
        for name in ("mac_pj", "dram_pj_per_64b", "clock_pj_per_pe_cycle", "leak_mw_per_pe",
                     "leak_mw_per_kib", "leak_v_exponent", "dram_die_fraction"):
            _finite(name, getattr(self, name), strict=False)
        for name in ("v_ref", "leak_doubling_k", "die_tau_s", "die_r_k_per_w",
                     "sink_r_k_per_w", "sink_c_j_per_k", "dt_s"):
            _finite(name, getattr(self, name))
        for name in ("leak_t_ref_c", "ambient_c"):
            _finite(name, getattr(self, name), -273.15)
        if self.dram_die_fraction > 1:
            raise ValueError(f"dram_die_fraction must be at most 1, not "
                             f"{self.dram_die_fraction!r}")
        if self.ambient_c > 200:
            raise ValueError(f"ambient_c must be at most 200, not {self.ambient_c!r}")
        if self.dt_s > self.die_tau_s / 10 * (1 + 1e-9):
            raise ValueError(f"dt_s must be at most a tenth of die_tau_s "
                             f"({self.die_tau_s / 10:g}) for a stable forward-Euler step, "
                             f"not {self.dt_s!r}")
        if isinstance(self.sensor_lsb_mc, bool) or not isinstance(self.sensor_lsb_mc, int) \
                or not 1 <= self.sensor_lsb_mc <= 10000:
            raise ValueError(f"sensor_lsb_mc must be an int between 1 and 10000, not "
                             f"{self.sensor_lsb_mc!r}")
        if not isinstance(self.trip_cuts_power, bool):
            raise TypeError(f"trip_cuts_power must be a bool, not {self.trip_cuts_power!r}")
        pts = self.sram_pj_per_64b
        ok = isinstance(pts, tuple | list) and len(pts) >= 2 and all(
            isinstance(p, tuple | list) and len(p) == 2 for p in pts)
        if not ok:
            raise ValueError(f"sram_pj_per_64b must be at least two (bytes, pJ) pairs, "
                             f"not {pts!r}")
        for size, pj in pts:
            _finite("sram_pj_per_64b size", size)
            _finite("sram_pj_per_64b energy", pj)
        sizes = [p[0] for p in pts]
        if sizes != sorted(set(sizes)):
            raise ValueError(f"sram_pj_per_64b sizes must be increasing, not {sizes!r}")
        object.__setattr__(self, "sram_pj_per_64b", tuple(tuple(p) for p in pts))

    # -- derived ------------------------------------------------------------------------

    @property
    def die_c_j_per_k(self) -> float:
        """Heat capacity of the die node (J/K)."""
        return self.die_tau_s / self.die_r_k_per_w

    @property
    def sink_tau_s(self) -> float:
        """Time constant of the heat sink (s)."""
        return self.sink_r_k_per_w * self.sink_c_j_per_k

    @property
    def r_total_k_per_w(self) -> float:
        """Thermal resistance from the die to ambient (K/W)."""
        return self.die_r_k_per_w + self.sink_r_k_per_w

    def energy_model(self) -> EnergyModel:
        """Return the per-operation energies as an :class:`EnergyModel`."""
        return EnergyModel(mac_pj=self.mac_pj, sram_pj_per_64b=self.sram_pj_per_64b,
                           dram_pj_per_64b=self.dram_pj_per_64b * self.dram_die_fraction,
                           v_ref=self.v_ref)

    def replace(self, **changes) -> PowerConstants:
        """Return a copy with ``changes`` applied (validated)."""
        return self.from_dict(changes, base=self)

    # -- files --------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, values: Mapping, base: PowerConstants | None = None
                  ) -> PowerConstants:
        """Return constants with ``values`` overriding ``base`` (default: the spec's).

        Raises
        ------
        ValueError
            If a key is not a constant's name; TypeError/ValueError for a bad value.
        """
        if not isinstance(values, Mapping):
            raise TypeError(f"power constants must be a table of name = value, not "
                            f"{type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown power constant {unknown[0]!r}; known: "
                             f"{', '.join(sorted(names))}")
        return dataclasses.replace(base or cls(), **dict(values))

    @classmethod
    def from_file(cls, path: str | Path) -> PowerConstants:
        """Read overrides from a ``.json`` or ``.toml`` file (a flat table of names).

        Raises
        ------
        ValueError
            If the file is not valid JSON/TOML, has another suffix, or holds an unknown
            or out-of-range constant (the message names the file and the value).
        OSError
            If the file cannot be read.
        """
        path = Path(path)
        text = path.read_text()
        try:
            if path.suffix.lower() == ".json":
                values = json.loads(text)
            elif path.suffix.lower() == ".toml":
                values = tomllib.loads(text)
            else:
                raise ValueError(f"constants file must end in .json or .toml, not "
                                 f"{path.name!r}")
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from None
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None

    def to_dict(self) -> dict:
        """Return the constants as a JSON-ready dict (what :meth:`from_dict` reads)."""
        d = dataclasses.asdict(self)
        d["sram_pj_per_64b"] = [list(p) for p in self.sram_pj_per_64b]
        return d


def energy_per_cycle_pj(config: AcceleratorConfig, activity: Activity,
                        constants: PowerConstants | None = None) -> float:
    """Return the dynamic energy of one busy cycle at ``v_ref`` (pJ), clock excluded."""
    c = constants or PowerConstants()
    return sum(_parts_pj(config, activity.counters(1.0), c.energy_model()).values())


def dynamic_power_w(config: AcceleratorConfig, activity: Activity, mhz: float, mv: float,
                    constants: PowerConstants | None = None, *,
                    busy: float = 1.0) -> float:
    """Return the dynamic power (W) at ``mhz`` effective clock and ``mv`` supply.

    ``busy`` is the fraction of enabled cycles doing ``activity``; the clock network
    switches on every enabled cycle.
    """
    c = constants or PowerConstants()
    if not 0 <= busy <= 1:
        raise ValueError(f"busy must be between 0 and 1, not {busy!r}")
    pj = busy * energy_per_cycle_pj(config, activity, c) \
        + config.pes * c.clock_pj_per_pe_cycle
    return pj * 1e-12 * mhz * 1e6 * (mv / 1000.0 / c.v_ref) ** 2


def _leak_ref_w(config: AcceleratorConfig, c: PowerConstants) -> float:
    d = config.to_dict()["derived"]
    kib = (d["sp_bytes"] + d["acc_bytes"] + config.param_rows * config.cols * 8) / 1024
    return (config.pes * c.leak_mw_per_pe + kib * c.leak_mw_per_kib) * 1e-3


def leakage_power_w(config: AcceleratorConfig, mv: float, temp_c: float,
                    constants: PowerConstants | None = None) -> float:
    """Return the static power (W) at supply ``mv`` and die temperature ``temp_c``.

    ``P = P_ref * (V / v_ref) ** leak_v_exponent * 2 ** ((T - T_ref) / leak_doubling_k)``.
    """
    c = constants or PowerConstants()
    return _leak_ref_w(config, c) * (mv / 1000.0 / c.v_ref) ** c.leak_v_exponent \
        * 2.0 ** ((temp_c - c.leak_t_ref_c) / c.leak_doubling_k)


def full_load_activity(config: AcceleratorConfig) -> Activity:
    """Return the worst-case activity: every PE, a scratchpad row, an accumulator row and
    a full DMA beat (read) in every cycle."""
    return Activity(macs=config.pes, sram_reads=1.0, acc_accesses=1.0,
                    dram_bytes=config.bus_bytes, dram_read_share=1.0)


def opp_power_mw(config: AcceleratorConfig, opps: Sequence[Sequence[int]] = OPERATING_POINTS,
                 constants: PowerConstants | None = None, *,
                 activity: Activity | None = None, temp_c: float = 85.0) -> list[int]:
    """Return each operating point's full-load power in mW (dynamic plus leakage).

    ``opps`` are ``(MHz, mV, ...)`` tuples; the power is the dynamic power of
    ``activity`` (default :func:`full_load_activity`) plus leakage at ``temp_c``, so an
    OPP table's mW column can come from this model.
    """
    c = constants or PowerConstants()
    act = activity or full_load_activity(config)
    return [round(1e3 * (dynamic_power_w(config, act, p[0], p[1], c)
                         + leakage_power_w(config, p[1], temp_c, c))) for p in opps]


class ThermalPlant:
    """Two RC nodes: the die on a heat sink, the heat sink to ambient (forward Euler).

    ``C_die dT_die/dt = P - (T_die - T_sink) / R_die`` and
    ``C_sink dT_sink/dt = (T_die - T_sink) / R_die - (T_sink - T_amb) / R_sink``.

    Parameters
    ----------
    constants : PowerConstants, optional
        Resistances, capacities, ambient and step.
    die_c, sink_c : float, optional
        Initial temperatures (default: ambient).
    """

    def __init__(self, constants: PowerConstants | None = None, *,
                 die_c: float | None = None, sink_c: float | None = None):
        self.constants = c = constants or PowerConstants()
        self.die_c = c.ambient_c if die_c is None else float(die_c)
        self.sink_c = c.ambient_c if sink_c is None else float(sink_c)
        self.t = 0.0

    def steady_state(self, power_w: float) -> tuple[float, float]:
        """Return ``(die, sink)`` temperatures in equilibrium with a constant power."""
        c = self.constants
        sink = c.ambient_c + power_w * c.sink_r_k_per_w
        return sink + power_w * c.die_r_k_per_w, sink

    def step(self, power_w: float, n: int = 1) -> float:
        """Advance ``n`` Euler steps of ``dt_s`` at constant power; return the die C."""
        c = self.constants
        dt = c.dt_s
        a_d = dt / c.die_c_j_per_k
        a_s = dt / c.sink_c_j_per_k
        g_d, g_s = 1.0 / c.die_r_k_per_w, 1.0 / c.sink_r_k_per_w
        amb = c.ambient_c
        d, s = self.die_c, self.sink_c
        for _ in range(n):
            q = (d - s) * g_d
            d, s = d + a_d * (power_w - q), s + a_s * (q - (s - amb) * g_s)
        self.die_c, self.sink_c = d, s
        self.t += n * dt
        return d

    def step_with_leakage(self, dyn_w: float, leak_ref_w: float, n: int = 1, *,
                          above_c: float = math.inf) -> tuple:
        """Advance ``n`` steps with power ``dyn_w + leak_ref_w * 2 ** ((T_die - T_ref) / k)``
        (leakage follows the die temperature each step).

        Returns
        -------
        die_c : float
            The die temperature after the last step.
        energy_j : float
            Energy dissipated over the ``n`` steps.
        peak_c : float
            The highest die temperature seen.
        n_above : int
            Steps that ended with the die at or above ``above_c``.
        """
        c = self.constants
        dt = c.dt_s
        a_d = dt / c.die_c_j_per_k
        a_s = dt / c.sink_c_j_per_k
        g_d, g_s = 1.0 / c.die_r_k_per_w, 1.0 / c.sink_r_k_per_w
        amb, t_ref = c.ambient_c, c.leak_t_ref_c
        kt = math.log(2.0) / c.leak_doubling_k
        d, s = self.die_c, self.sink_c
        peak = d
        energy = 0.0
        above = 0
        for _ in range(n):
            p = dyn_w + leak_ref_w * math.exp((d - t_ref) * kt)
            energy += p
            q = (d - s) * g_d
            d, s = d + a_d * (p - q), s + a_s * (q - (s - amb) * g_s)
            if d > peak:
                peak = d
            if d >= above_c:
                above += 1
        self.die_c, self.sink_c = d, s
        self.t += n * dt
        return d, energy * dt, peak, above
