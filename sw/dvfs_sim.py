"""Closed-loop DVFS studies: the DVFS controller, the power model and the thermal plant
driven by workloads measured on the accelerator's runtime (MiniLM, SmolLM2) or made up
(idle, burst, steady, a worst-case power step).

A workload is one request: a sequence of phases, each a number of accelerator cycles with
per-cycle activity. A serving loop repeats requests with idle gaps; the work progresses at
the controller's effective frequency (its clock-enable ratio), so lower operating points
cost wall-clock time, and the die temperature the controller sees comes from the plant.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmchip.cache import cache_root
from llmchip.config import AcceleratorConfig

from .power import (
    Activity,
    PowerConstants,
    ThermalPlant,
    energy_per_cycle_pj,
    full_load_activity,
)

if TYPE_CHECKING:
    from .dvfs import DvfsParams

__all__ = ["Phase", "Workload", "WORKLOADS", "SYNTHETIC", "workload", "workload_from_history",
           "minilm_workload", "smollm2_workload", "arrivals", "POLICIES", "policy_params",
           "SimResult", "simulate"]

#: Bumped when the cached trace format or the way traces are measured changes.
TRACE_VERSION = 1


@dataclass(frozen=True)
class Phase:
    """A stretch of one request with constant per-cycle activity.

    Parameters
    ----------
    cycles : int
        Accelerator cycles of work (clock cycles the accelerator needs, at any frequency).
    activity : Activity
        Operations per cycle during the phase.
    busy : float
        Fraction of the phase's cycles in which the array or the DMA is active (what the
        controller's utilization counters see).
    """

    cycles: int
    activity: Activity
    busy: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.cycles, bool) or not isinstance(self.cycles, int) \
                or self.cycles < 1:
            raise ValueError(f"phase cycles must be an int >= 1, not {self.cycles!r}")
        if not isinstance(self.activity, Activity):
            raise TypeError(f"phase activity must be an Activity, not "
                            f"{type(self.activity).__name__}")
        if not 0 <= self.busy <= 1:
            raise ValueError(f"phase busy must be between 0 and 1, not {self.busy!r}")


@dataclass(frozen=True)
class Workload:
    """One request (its phases) and how a serving loop issues it.

    Parameters
    ----------
    name : str
        Workload name (as the command line takes it).
    phases : tuple of Phase
        The request; empty for an idle workload.
    config : AcceleratorConfig
        The accelerator the phases were measured (or made) for.
    load : float
        Default offered load: the request's time at the highest frequency divided by
        the mean time between requests (1 = back to back).
    description : str
        What the request is.
    """

    name: str
    phases: tuple
    config: AcceleratorConfig
    load: float = 0.5
    description: str = ""

    @property
    def cycles(self) -> int:
        """Accelerator cycles of one request."""
        return sum(p.cycles for p in self.phases)

    def seconds_at(self, mhz: float) -> float:
        """Return the time of one request at a constant ``mhz``."""
        return self.cycles / (mhz * 1e6)

    def cumulative(self, constants: PowerConstants) -> tuple[np.ndarray, ...]:
        """Return ``(cycles, energy_pj, busy_cycles)`` cumulative at the phase ends, each
        starting with 0 (energy at ``v_ref``, clock network excluded)."""
        cyc = np.array([0] + [p.cycles for p in self.phases], dtype=np.float64)
        epc = np.array([0.0] + [energy_per_cycle_pj(self.config, p.activity, constants)
                                for p in self.phases])
        busy = np.array([0.0] + [p.busy for p in self.phases])
        return np.cumsum(cyc), np.cumsum(cyc * epc), np.cumsum(cyc * busy)

    def to_dict(self) -> dict:
        """Return a JSON-ready dict (what :meth:`from_dict` reads)."""
        return {"version": TRACE_VERSION, "name": self.name, "load": self.load,
                "description": self.description, "config": dataclasses.asdict(self.config),
                "phases": [[p.cycles, p.busy, dataclasses.asdict(p.activity)]
                           for p in self.phases]}

    @classmethod
    def from_dict(cls, d: dict) -> Workload:
        """Rebuild a workload written by :meth:`to_dict`."""
        return cls(d["name"], tuple(Phase(c, Activity(**a), b) for c, b, a in d["phases"]),
                   AcceleratorConfig(**d["config"]), d["load"], d["description"])


def _history_phase(config: AcceleratorConfig, h: dict) -> Phase:
    cycles = int(h["cycles"])
    rd, wr = h.get("dram_read_bytes", 0), h.get("dram_write_bytes", 0)
    dram = rd + wr
    # The array and the DMA overlap (double buffering): the larger of the two is a lower
    # bound of the cycles in which either is active.
    busy = min(1.0, max(h.get("array_busy", 0), dram / config.bus_bytes) / cycles)
    act = Activity(macs=h.get("macs", 0) / cycles, sram_reads=h.get("sram_reads", 0) / cycles,
                   acc_accesses=h.get("acc_accesses", 0) / cycles, dram_bytes=dram / cycles,
                   dram_read_share=rd / dram if dram else 1.0)
    return Phase(cycles, act, busy)


def workload_from_history(name: str, config: AcceleratorConfig, history: Sequence[dict], *,
                          load: float = 0.5, description: str = "") -> Workload:
    """Return a workload with one phase per device program of ``history``
    (:attr:`llmchip.sw.runtime.Device.history`: cycles, MACs, array busy cycles, DRAM bytes,
    scratchpad reads, accumulator accesses per program)."""
    phases = tuple(_history_phase(config, h) for h in history if h.get("cycles", 0) > 0)
    return Workload(name, phases, config, load, description)


# -- measured workloads ------------------------------------------------------------------

def _cache_path(name: str, config: AcceleratorConfig, spec: dict) -> Path:
    key = json.dumps({"v": TRACE_VERSION, "name": name, "config": dataclasses.asdict(config),
                      "spec": spec}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_root() / "dvfs-traces" / f"{name}-{digest}.json"


def _cached(name: str, config: AcceleratorConfig, spec: dict, build: Callable[[], Workload],
            cache: bool) -> Workload:
    path = _cache_path(name, config, spec)
    if cache and path.is_file():
        try:
            return Workload.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError):
            pass        # a damaged or older file: measure again
    wl = build()
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{time.monotonic_ns()}.tmp")
        tmp.write_text(json.dumps(wl.to_dict()))
        tmp.replace(path)
    return wl


def _model_config(config: AcceleratorConfig | None) -> AcceleratorConfig:
    from .models.run import DEFAULT_CONFIG
    return config or AcceleratorConfig(**DEFAULT_CONFIG)


def minilm_workload(config: AcceleratorConfig | None = None, *, texts: int = 8,
                    n_layers: int | None = None, cache: bool = True,
                    log: Callable[[str], object] = lambda s: None) -> Workload:
    """Measure one MiniLM request: embedding a batch of ``texts`` sample sentences on the
    model backend (one phase per device program). Cached on disk per config.

    Raises
    ------
    ValueError
        If ``texts`` is not between 1 and the number of sample sentences.
    FileNotFoundError
        If the model weights are not installed.
    """
    from llmchip.config import check_int

    from .models.minilm import SAMPLE_SENTENCES

    check_int("texts", texts, 1, len(SAMPLE_SENTENCES))
    cfg = _model_config(config)
    spec = {"texts": texts, "layers": n_layers}

    def build() -> Workload:
        from .models.run import run_minilm
        from .runtime import open_device
        log(f"measuring MiniLM on {texts} sentences (model backend; cached afterwards)")
        with open_device(cfg, "model", dram_bytes=1 << 26) as dev:
            run_minilm(list(SAMPLE_SENTENCES[:texts]), device=dev, n_layers=n_layers)
            hist = list(dev.history)
        return workload_from_history(
            "minilm", cfg, hist, load=0.5,
            description=f"all-MiniLM-L6-v2 embedding a batch of {texts} sentences")

    return _cached("minilm", cfg, spec, build, cache)


def smollm2_workload(config: AcceleratorConfig | None = None, *, decode_tokens: int = 16,
                     prefill: bool = True, measured_steps: int = 3,
                     n_layers: int | None = None, cache: bool = True,
                     log: Callable[[str], object] = lambda s: None) -> Workload:
    """Measure one SmolLM2 request: the prefill of a chat prompt and ``decode_tokens``
    decode steps on the model backend. ``measured_steps`` decode steps are run; the
    request repeats them in turn (a decode step's programs do not depend on the token and
    their cycles hardly on the cache length). Cached on disk per config.

    Raises
    ------
    ValueError
        If a count is out of range.
    FileNotFoundError
        If the model weights are not installed.
    """
    from llmchip.config import check_int

    check_int("decode_tokens", decode_tokens, 0 if prefill else 1, 4096)
    check_int("measured_steps", measured_steps, 1, 64)
    cfg = _model_config(config)
    name = "smollm2" if prefill else "smollm2-decode"
    spec = {"steps": measured_steps, "layers": n_layers}

    def measure() -> dict:
        from .models.run import DEFAULT_SCHEMES, _scheme, dram_for
        from .models.smollm2 import SmolLM2, chat_prompt
        from .models.texts import CALIBRATION_TEXT
        from .quant import QuantExecutor, calibrate
        from .runtime import open_device

        log(f"measuring SmolLM2 prefill and {measured_steps} decode steps (model backend, "
            f"about a minute; cached afterwards)")
        model = SmolLM2.load(n_layers=n_layers)
        cal_ids = model.encode(CALIBRATION_TEXT)
        cal = calibrate(lambda ex: model.forward(cal_ids, ex), model.layers,
                        _scheme(DEFAULT_SCHEMES["smollm2"]))
        ids = model.encode(chat_prompt("What is the capital of France?"))
        with open_device(cfg, "model", dram_bytes=dram_for(model.layers)) as dev:
            qx = QuantExecutor(dev, model.layers, cal, out_groups=model.quant_groups(),
                               refine=model.quant_refine())
            start = len(dev.history)
            marks: list[int] = []
            model.generate(ids, qx, measured_steps + 1, stop_at_eos=False,
                           on_token=lambda t: marks.append(len(dev.history)))
            hist = list(dev.history)
        steps = [hist[a:b] for a, b in zip(marks, marks[1:], strict=False)]
        return {"prompt_tokens": len(ids), "prefill": hist[start:marks[0]], "steps": steps}

    def build_raw() -> Workload:
        raw = measure()
        # Stored as a workload whose phases are prefill then the measured steps; the
        # request is assembled below.
        phases = [_history_phase(cfg, h) for h in raw["prefill"]]
        bounds = [len(phases)]
        for s in raw["steps"]:
            phases += [_history_phase(cfg, h) for h in s]
            bounds.append(len(phases))
        return Workload("smollm2-raw", tuple(phases), cfg, 0.0,
                        json.dumps({"bounds": bounds, "prompt_tokens": raw["prompt_tokens"]}))

    raw = _cached("smollm2-raw", cfg, spec, build_raw, cache)
    info = json.loads(raw.description)
    b = info["bounds"]
    steps = [raw.phases[b[i]:b[i + 1]] for i in range(len(b) - 1)]
    phases = list(raw.phases[:b[0]]) if prefill else []
    for i in range(decode_tokens):
        phases += steps[i % len(steps)]
    what = (f"prefill of a {info['prompt_tokens']}-token chat prompt and " if prefill
            else "") + f"{decode_tokens} decode steps"
    return Workload(name, tuple(phases), cfg, 0.5,
                    f"SmolLM2-135M-Instruct: {what}")


# -- synthetic workloads -----------------------------------------------------------------

def _typical_gemm(config: AcceleratorConfig) -> Activity:
    """A compute-bound GEMM: PEs 95% busy, one scratchpad row and one accumulator row per
    cycle, a quarter of the bus for weights and activations."""
    return Activity(macs=0.95 * config.pes, sram_reads=0.95, acc_accesses=0.95,
                    dram_bytes=config.bus_bytes / 4, dram_read_share=0.9)


def _synthetic(name: str, config: AcceleratorConfig) -> Workload:
    if name == "idle":
        return Workload("idle", (), config, 0.0, "no requests: the accelerator idles")
    if name == "steady":
        return Workload("steady", (Phase(800_000, _typical_gemm(config), 1.0),), config, 1.0,
                        "back-to-back 1 ms GEMMs (compute-bound, 95% of the PEs)")
    if name == "burst":
        return Workload("burst", (Phase(1_600_000, _typical_gemm(config), 1.0),), config,
                        0.2, "2 ms GEMM bursts at 20% load")
    if name == "power-step":
        return Workload("power-step", (Phase(800_000, full_load_activity(config), 1.0),),
                        config, 1.0,
                        "worst case: every PE, SRAM port and DMA beat busy every cycle, "
                        "back to back")
    raise ValueError(f"unknown synthetic workload {name!r}")


#: Made-up workloads (no model weights needed).
SYNTHETIC = ("idle", "burst", "steady", "power-step")
#: Every workload name :func:`workload` takes.
WORKLOADS = SYNTHETIC + ("minilm", "smollm2", "smollm2-decode")


def workload(name: str, config: AcceleratorConfig | None = None, *, cache: bool = True,
             log: Callable[[str], object] = lambda s: None) -> Workload:
    """Return the workload ``name`` (one of :data:`WORKLOADS`) for ``config`` (default:
    the 16x16 accelerator the model runs use).

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    """
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r}; choose one of {', '.join(WORKLOADS)}")
    cfg = _model_config(config)
    if name in SYNTHETIC:
        return _synthetic(name, cfg)
    if name == "minilm":
        return minilm_workload(cfg, cache=cache, log=log)
    return smollm2_workload(cfg, prefill=name == "smollm2", cache=cache, log=log)


def arrivals(wl: Workload, duration_s: float, *, load: float | None = None,
             fmax_mhz: float = 800.0, poisson: bool = True, seed: int = 0) -> np.ndarray:
    """Return the request arrival times (s) in ``[0, duration_s)``.

    The mean gap is the request's time at ``fmax_mhz`` divided by ``load``; gaps are
    exponential (Poisson arrivals) with ``poisson``, else equal. A load of 1 or more
    issues every request at time 0 (a backlog served back to back).

    Raises
    ------
    ValueError
        If ``duration_s`` or ``load`` is out of range.
    """
    load = wl.load if load is None else load
    if not (isinstance(duration_s, int | float) and math.isfinite(duration_s)
            and 0 < duration_s <= 3600):
        raise ValueError(f"duration must be between 0 and 3600 s, not {duration_s!r}")
    if not (isinstance(load, int | float) and math.isfinite(load) and 0 <= load <= 1):
        raise ValueError(f"load must be between 0 and 1, not {load!r}")
    if not wl.phases or load == 0:
        return np.zeros(0)
    t_req = wl.seconds_at(fmax_mhz)
    n = max(1, math.ceil(duration_s * load / t_req))
    if load >= 1:
        return np.zeros(n)
    gap = t_req / load
    if poisson:
        rng = np.random.default_rng(seed)
        t = np.concatenate([[0.0], np.cumsum(rng.exponential(gap, size=int(n * 1.5) + 16))])
    else:
        t = np.arange(n) * gap
    return t[t < duration_s]


# -- closed loop -------------------------------------------------------------------------

#: Policies :func:`simulate` takes: the utilization governors, the PID power cap (on
#: top of ondemand) and a fixed top-frequency baseline.
POLICIES = ("ondemand", "schedutil", "conservative", "powercap", "performance")


def policy_params(policy: str, config: AcceleratorConfig | None = None,
                  constants: PowerConstants | None = None, *, sample_us: int = 500,
                  model_mw: bool = True, **overrides) -> DvfsParams:
    """Return the controller parameters of a closed-loop study.

    One controller cycle is 1 us (``tick_cycles`` 1): sample periods, transition times
    and timeouts are in microseconds. With ``model_mw`` the OPP table's full-load mW
    come from :func:`llmchip.sw.power.opp_power_mw` for ``config`` and the power cap's
    sustainable power from the plant, ``(t_control - ambient) / R_total`` (else the
    controller's defaults). ``overrides`` are further
    :class:`~llmchip.sw.dvfs.DvfsParams` fields.

    Raises
    ------
    ValueError
        If ``policy`` is unknown or a parameter is out of range.
    """
    from .dvfs import DEFAULT_OPPS, DvfsParams, Governor
    from .power import opp_power_mw

    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
    gov = {"ondemand": Governor.ONDEMAND, "schedutil": Governor.SCHEDUTIL,
           "conservative": Governor.CONSERVATIVE, "powercap": Governor.ONDEMAND,
           "performance": Governor.PERFORMANCE}[policy]
    opps = DEFAULT_OPPS
    if model_mw:
        mw = opp_power_mw(_model_config(config), DEFAULT_OPPS, constants)
        opps = tuple((f, v, min(w, 65535)) for (f, v, _), w in zip(DEFAULT_OPPS, mw,
                                                                   strict=True))
    fields = dict(opps=opps, tick_cycles=1, sample_period=sample_us, governor=gov,
                  pc_en=policy == "powercap")
    if model_mw:
        # The power the plant sustains at the PID's control temperature (IPA's
        # P_sustainable): (T_control - ambient) / R_total.
        c = constants or PowerConstants()
        t_control = overrides.get("t_control", DvfsParams.t_control)
        sustain = (t_control / 1000 - c.ambient_c) / c.r_total_k_per_w
        fields["p_sustain"] = max(0, min(65535, round(sustain * 1000)))
    fields.update(overrides)
    return DvfsParams(**fields)


@dataclass
class SimResult:
    """What :func:`simulate` returns: a time series and a summary.

    ``series`` holds equal-length lists: ``t`` (s, end of each recorded interval),
    ``index``, ``mhz`` (frequency of the operating point in effect), ``eff_mhz`` (clock
    enables included), ``mv`` (regulator output), ``power_w`` (average over the
    interval), ``die_c``, ``sink_c``, ``reason`` (name).
    """

    summary: dict
    series: dict

    def to_dict(self) -> dict:
        """Return a JSON-ready dict."""
        return {"summary": self.summary, "series": self.series}


class _Cum:
    """Cumulative work quantities of a request, repeated for every request."""

    def __init__(self, cycles: np.ndarray, values: np.ndarray):
        self.x = cycles.tolist()
        self.y = values.tolist()
        self.length = self.x[-1]
        self.per_request = self.y[-1]

    def __call__(self, pos: float) -> float:
        if self.length <= 0:
            return 0.0
        k = int(pos // self.length)
        r = pos - k * self.length
        i = bisect.bisect_right(self.x, r) - 1
        if i >= len(self.x) - 1:
            return (k + 1) * self.per_request
        x0, x1 = self.x[i], self.x[i + 1]
        y0, y1 = self.y[i], self.y[i + 1]
        return k * self.per_request + y0 + (y1 - y0) * (r - x0) / (x1 - x0)


def simulate(wl: Workload, policy: str = "ondemand", *, ambient_c: float | None = None,
             duration_s: float = 10.0, constants: PowerConstants | None = None,
             params: DvfsParams | None = None, load: float | None = None,
             poisson: bool = True, seed: int = 0, sensor_us: int = 100,
             sample_us: int = 500, die_c: float | None = None, sink_c: float | None = None,
             max_time_s: float | None = None, record_points: int = 4000,
             v_delay: int = 5, lock_delay: int = 5, t_control_c: float | None = None,
             progress: Callable[[float], object] | None = None) -> SimResult:
    """Run the controller, the power model and the thermal plant over a serving loop.

    Requests of ``wl`` arrive in ``[0, duration_s)`` (see :func:`arrivals`); the loop
    runs until every request is done (at most ``max_time_s``, default four times the
    duration plus a second) or, with no work, for ``duration_s``. Every ``sensor_us``
    the controller gets the die temperature (quantized to the sensor's LSB), the busy and
    total cycles of the last completed sample window, and the platform's ``pll_lock`` /
    ``v_ack``; it runs with :meth:`~llmchip.sw.dvfs.DvfsModel.advance` over quiet
    stretches. The work advances by the enabled clock cycles (the clock-enable ratio
    times ``fmax``), the power is the model's dynamic power at the regulator's voltage
    plus leakage at the die temperature, and the plant integrates it. A latched
    thermal trip removes the supply (``constants.trip_cuts_power``) and stops the work.

    Parameters
    ----------
    wl : Workload
    policy : str
        One of :data:`POLICIES` (ignored when ``params`` is given).
    ambient_c : float, optional
        Overrides ``constants.ambient_c``.
    params : DvfsParams, optional
        The controller (default :func:`policy_params`); ``tick_cycles`` must be 1 (one
        controller cycle is 1 us).
    die_c, sink_c : float, optional
        Initial temperatures (default ambient).
    t_control_c : float, optional
        The power cap's control temperature in C (default the controller's 80 C); the
        sustainable power follows it. Ignored when ``params`` is given.
    progress : callable, optional
        Called with the fraction of ``duration_s`` simulated, now and then.

    Raises
    ------
    ValueError
        For an unknown policy, an out-of-range ambient, duration or period.
    """
    from .dvfs import DvfsInputs, DvfsModel, PlatformModel, Reason, limited
    from .power import leakage_power_w

    c = constants or PowerConstants()
    if ambient_c is not None:
        if isinstance(ambient_c, bool) or not isinstance(ambient_c, int | float) \
                or not math.isfinite(ambient_c) or not -40 <= ambient_c <= 150:
            raise ValueError(f"ambient must be between -40 and 150 C, not {ambient_c!r}")
        c = c.replace(ambient_c=float(ambient_c))
    cfg = wl.config
    extra = {}
    if t_control_c is not None:
        if isinstance(t_control_c, bool) or not isinstance(t_control_c, int | float) \
                or not math.isfinite(t_control_c) or not 0 <= t_control_c <= 150:
            raise ValueError(f"t_control must be between 0 and 150 C, not {t_control_c!r}")
        extra["t_control"] = round(t_control_c * 1000)
    p = params or policy_params(policy, cfg, c, sample_us=sample_us, **extra)
    if p.tick_cycles != 1:
        raise ValueError(f"the closed loop runs the controller at one cycle per us: "
                         f"tick_cycles must be 1, not {p.tick_cycles}")
    from llmchip.config import check_int
    check_int("sensor_us", sensor_us, 1, p.sample_period)
    if p.sample_period % sensor_us:
        raise ValueError(f"sensor_us must divide the sample period ({p.sample_period}), "
                         f"not {sensor_us}")
    dt_us = c.dt_s * 1e6
    euler = round(sensor_us / dt_us)
    if euler < 1 or abs(euler * dt_us - sensor_us) > 1e-6:
        raise ValueError(f"sensor_us ({sensor_us}) must be a multiple of the plant step "
                         f"({dt_us:g} us)")
    arr = arrivals(wl, duration_s, load=load, fmax_mhz=p.opps[-1][0], poisson=poisson,
                   seed=seed)
    limit_s = max_time_s if max_time_s is not None else 4 * duration_s + 1.0

    model = DvfsModel(p)
    plat = PlatformModel(p, v_delay, lock_delay)
    plant = ThermalPlant(c, die_c=die_c, sink_c=sink_c)
    fmax = p.opps[-1][0]
    mhz_of = [o[0] for o in p.opps]
    leak_at = {}            # leakage at the reference temperature, per mV
    cum_c, cum_e, cum_b = wl.cumulative(c)
    energy_at = _Cum(cum_c, cum_e)
    busy_at = _Cum(cum_c, cum_b)
    length = float(cum_c[-1])
    clock_pj = cfg.pes * c.clock_pj_per_pe_cycle
    n_req = len(arr)
    arr_list = arr.tolist()
    done_t: list[float] = []
    pos = 0.0               # accelerator cycles of work done
    arrived = 0
    lsb = c.sensor_lsb_mc
    period = p.sample_period
    win_busy = win_total = 0.0
    last_busy = last_total = 0
    reason_us: dict[str, int] = {}
    energy = 0.0
    peak = plant.die_c
    peak_t = 0.0
    throttled_us = 0
    first_trip = None
    over_crit_steps = 0
    t_crit_c = p.t_crit / 1000
    rec_every = max(1, round((duration_s * 1e6 / sensor_us) / max(record_points, 1)))
    series: dict[str, list] = {k: [] for k in ("t", "index", "mhz", "eff_mhz", "mv",
                                               "power_w", "die_c", "sink_c", "reason")}
    acc = {"e": 0.0, "en": 0, "n": 0}
    reasons = {int(r): r.name.lower() for r in Reason}
    t_us = 0
    out = None
    wall0 = time.perf_counter()
    next_progress = 0.0
    while True:
        t_s = t_us * 1e-6
        finished = arrived == n_req and pos >= n_req * length - 1e-6
        if t_s >= duration_s and (finished or t_s >= limit_s
                                  or (out is not None and out.thermtrip)):
            break
        while arrived < n_req and arr_list[arrived] <= t_s:
            arrived += 1
        temp_mc = int(round(plant.die_c * 1000 / lsb)) * lsb
        inputs = DvfsInputs(temp_mc=temp_mc, temp_valid=True, busy=int(last_busy),
                            total=int(last_total), prochot_i=False, pll_lock=plat.pll_lock,
                            v_ack=plat.v_ack)
        en0 = model.state.en_cycles
        mv_hi = plat.mv
        left = sensor_us
        # A new reading changes the controller's temperature register in the first
        # cycle: step it before looking for a quiet stretch.
        fresh = temp_mc != model.state.temp
        while left:
            if left > 3 and not fresh and plat.quiet(model.state):
                k = model.quiet_cycles(inputs, left - 1)
                if k:
                    # As the model's own replay does: skip the counters-only stretch
                    # (the platform holds still through it).
                    model._skip(inputs, k)
                    left -= k
                    continue
            fresh = False
            out = model.step(inputs)
            plat.step(out)
            mv_hi = max(mv_hi, plat.mv)
            left -= 1
            inputs = DvfsInputs(temp_mc=temp_mc, temp_valid=True, busy=int(last_busy),
                                total=int(last_total), prochot_i=False,
                                pll_lock=plat.pll_lock, v_ack=plat.v_ack)
        en = model.state.en_cycles - en0
        work = en * fmax                   # accelerator cycles the clock allowed
        avail = arrived * length - pos
        dp = min(work, max(avail, 0.0))
        if dp > 0:
            e_pj = energy_at(pos + dp) - energy_at(pos)
            b = busy_at(pos + dp) - busy_at(pos)
            busy_us = b / work * sensor_us
            target = (len(done_t) + 1) * length
            while len(done_t) < n_req and pos + dp >= target - 1e-6:
                done_t.append(t_s + (target - pos) / work * sensor_us * 1e-6)
                target += length
            pos += dp
        else:
            e_pj = 0.0
            busy_us = sensor_us if avail > 0 else 0
        win_busy += busy_us
        win_total += sensor_us
        if (t_us + sensor_us) % period == 0:
            last_busy, last_total = round(win_busy), round(win_total)
            win_busy = win_total = 0.0
        vs = (mv_hi / 1000 / c.v_ref) ** 2
        dyn_w = (e_pj + clock_pj * work) * vs * 1e-12 / (sensor_us * 1e-6)
        if out.thermtrip and c.trip_cuts_power:
            dyn_w, leak_ref = 0.0, 0.0
        else:
            leak_ref = leak_at.get(mv_hi)
            if leak_ref is None:
                leak_ref = leak_at[mv_hi] = leakage_power_w(cfg, mv_hi, c.leak_t_ref_c, c)
        die, e_j, pk, above = plant.step_with_leakage(dyn_w, leak_ref, euler,
                                                      above_c=t_crit_c)
        energy += e_j
        if pk > peak:
            peak, peak_t = pk, t_s
        over_crit_steps += above
        if out.thermtrip and first_trip is None:
            first_trip = t_s
        rname = reasons.get(out.reason, str(out.reason))
        reason_us[rname] = reason_us.get(rname, 0) + sensor_us
        if limited(out.reason):
            throttled_us += sensor_us
        acc["e"] += e_j
        acc["en"] += en
        acc["n"] += 1
        t_us += sensor_us
        if acc["n"] >= rec_every:
            span = acc["n"] * sensor_us
            series["t"].append(t_us * 1e-6)
            series["index"].append(out.index)
            series["mhz"].append(mhz_of[out.f_index])
            series["eff_mhz"].append(fmax * acc["en"] / span)
            series["mv"].append(plat.mv)
            series["power_w"].append(acc["e"] / (span * 1e-6))
            series["die_c"].append(die)
            series["sink_c"].append(plant.sink_c)
            series["reason"].append(rname)
            acc = {"e": 0.0, "en": 0, "n": 0}
        if progress is not None and t_s >= next_progress:
            progress(min(1.0, t_s / duration_s))
            next_progress = t_s + duration_s / 100
    if progress is not None:
        progress(1.0)
    sim_s = t_us * 1e-6
    lat = np.array(done_t) - arr[:len(done_t)] if done_t else np.zeros(0)
    finish = done_t[-1] if done_t and len(done_t) == n_req else None
    mean_lat = float(lat.mean()) if len(lat) else None
    summary = {
        "workload": wl.name, "policy": policy if params is None else "custom",
        "ambient_c": c.ambient_c, "duration_s": duration_s, "simulated_s": sim_s,
        "load": wl.load if load is None else load, "seed": seed,
        "requests": n_req, "completed": len(done_t),
        "energy_j": energy, "avg_power_w": energy / sim_s if sim_s else 0.0,
        "time_to_finish_s": finish,
        "mean_latency_s": mean_lat,
        "p95_latency_s": float(np.percentile(lat, 95)) if len(lat) else None,
        "edp_js": energy * mean_lat if mean_lat is not None else None,
        "energy_per_request_j": energy / len(done_t) if done_t else None,
        "peak_die_c": peak, "peak_t_s": peak_t, "final_sink_c": plant.sink_c,
        "throttled_s": throttled_us * 1e-6,
        "reason_s": {k: v * 1e-6 for k, v in sorted(reason_us.items())},
        "thermtrip": bool(out is not None and out.thermtrip),
        "first_trip_s": first_trip, "over_t_crit_s": over_crit_steps * c.dt_s,
        "over_t_crit_cycles": round(over_crit_steps * c.dt_s * fmax * 1e6),
        "transitions": model.state.transitions,
        "opps": [list(o) for o in p.opps], "t_passive_mc": p.t_passive,
        "t_hot_mc": p.t_hot, "t_crit_mc": p.t_crit, "sensor_us": sensor_us,
        "sample_us": p.sample_period, "wall_s": time.perf_counter() - wall0,
    }
    return SimResult(summary, series)
