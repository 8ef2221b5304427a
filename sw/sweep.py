"""Design-space sweeps: predicted performance, energy and FPGA cost over a grid of
accelerator configurations, for the GEMMs of real transformer workloads.

A :class:`SweepGrid` spans array rows, columns, dataflow, scratchpad rows and bus width.
For every point, :func:`evaluate_point` compiles each distinct GEMM of the workloads
(:mod:`llmchip.sw.workloads`) into the program the runtime would run (same schedule
choice, same DRAM layout, attention heads batched into one program) and predicts its
counters with the performance model, without executing it; energy comes from
:func:`llmchip.sw.power.estimate_energy`, and, on request, resources and Fmax from
:func:`llmchip.fpga.run_flow`. :func:`run_sweep` fans the points out over local processes
or a Dask cluster, optionally checks a few GEMMs on the Verilator RTL
(:func:`rtl_checks`), and :func:`write_results` / :func:`plot_results` /
:func:`summarize` turn the result into CSV, JSON, PNG plots and a best-per-metric table.
See ``docs/sweeps.md``.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmchip.config import AcceleratorConfig, check_int

from . import perf
from .compile import (
    CompileError,
    GemmOp,
    ProgramBuilder,
    choose_schedule,
    packed_weight_bytes,
    param_bytes,
)
from .power import OPERATING_POINTS, estimate_energy
from .workloads import Gemm, check_workload, expand_workloads, workload_gemms

__all__ = ["SweepGrid", "point_id", "predict_program", "evaluate_point", "run_sweep",
           "check_options", "point_rows", "gemm_rows",
           "rtl_checks", "write_results", "plot_results", "summarize", "format_table",
           "SUMMARY_METRICS", "CSV_COLUMNS", "GEMM_CSV_COLUMNS"]

_ALIGN = 64     # the runtime's DRAM alignment (llmchip.sw.runtime)

#: Columns of ``sweep.csv`` (one row per point and workload).
CSV_COLUMNS = (
    "point", "rows", "cols", "pes", "dataflow", "sp_rows", "bus_bits", "acc_rows",
    "param_rows", "workload", "gemms", "macs", "cycles", "ideal_cycles", "utilization",
    "roofline_efficiency", "macs_per_cycle", "dram_read_bytes", "dram_write_bytes",
    "energy_uj", "pj_per_mac", "fpga_target", "fpga_top", "luts", "ffs", "dsps", "brams",
    "fmax_mhz", "fits", "mult_mapping", "gops", "gops_per_dsp", "gops_per_klut",
    "macs_per_cycle_per_dsp", "macs_per_cycle_per_klut", "note")

#: Columns of ``sweep_gemms.csv`` (one row per point, workload and GEMM).
GEMM_CSV_COLUMNS = (
    "point", "rows", "cols", "pes", "dataflow", "sp_rows", "bus_bits", "workload", "name",
    "kind", "m", "k", "n", "batch", "macs", "cycles", "ideal_cycles", "compute_cycles",
    "memory_cycles", "bound", "utilization", "roofline_efficiency", "dram_read_bytes",
    "dram_write_bytes", "energy_uj", "schedule", "error")

#: Metrics of the summary table: (column, "min" or "max", description, per workload).
SUMMARY_METRICS = (
    ("cycles", "min", "fewest cycles", True),
    ("utilization", "max", "highest utilization", True),
    ("roofline_efficiency", "max", "highest roofline efficiency", True),
    ("energy_uj", "min", "least energy", True),
    ("macs_per_cycle", "max", "most MACs per cycle", True),
    ("gops", "max", "most GOPS at Fmax", True),
    ("gops_per_dsp", "max", "most GOPS per DSP", True),
    ("gops_per_klut", "max", "most GOPS per 1000 LUTs", True),
    ("fmax_mhz", "max", "highest Fmax", False),
    ("luts", "min", "fewest LUTs", False),
    ("dsps", "min", "fewest DSPs", False),
)

_AXES = ("rows", "cols", "dataflow", "sp_rows", "bus_bits")


def _as_tuple(name: str, values) -> tuple:
    if isinstance(values, str | int):
        values = (values,)
    try:
        out = tuple(dict.fromkeys(values))       # order kept, repeats dropped
    except TypeError:
        raise TypeError(f"{name} must be a sequence of values, not {values!r}") from None
    if not out:
        raise ValueError(f"{name} needs at least one value")
    return out


@dataclass(frozen=True)
class SweepGrid:
    """The points of a sweep: every combination of the listed values.

    Parameters
    ----------
    rows, cols : sequence of int
        Array sizes (1 to 256).
    dataflow : sequence of {"ws", "os"}
        Only the weight-stationary accelerator has a compiler and a performance model;
        output-stationary points exist only as the bare array (see :func:`run_sweep`).
    sp_rows : sequence of int
        Scratchpad rows (power of two).
    bus_bits : sequence of int
        DMA data widths (64, 128, 256, 512).
    acc_rows, param_rows : int
        Accumulator and parameter rows, the same at every point.

    Raises
    ------
    TypeError, ValueError
        If a list is empty or a value is not valid for :class:`AcceleratorConfig`; the
        message names the field and the value.
    """

    rows: Sequence[int] = (8, 16)
    cols: Sequence[int] = (8, 16)
    dataflow: Sequence[str] = ("ws",)
    sp_rows: Sequence[int] = (4096,)
    bus_bits: Sequence[int] = (128,)
    acc_rows: int = 512
    param_rows: int = 128
    _configs: tuple = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self):
        for name in _AXES:
            object.__setattr__(self, name, _as_tuple(name, getattr(self, name)))
        base = AcceleratorConfig(acc_rows=self.acc_rows, param_rows=self.param_rows)
        # Each value on its own first, so the message names the value that is wrong.
        for name in _AXES:
            for value in getattr(self, name):
                base.replace(**{name: value})
        configs = tuple(base.replace(**dict(zip(_AXES, combo, strict=True)))
                        for combo in itertools.product(*(getattr(self, n) for n in _AXES)))
        object.__setattr__(self, "_configs", configs)

    def configs(self) -> list[AcceleratorConfig]:
        """Return the configuration of every point, in grid order."""
        return list(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    def to_dict(self) -> dict:
        """Return the axes and fixed values as a JSON-ready dictionary."""
        return {**{n: list(getattr(self, n)) for n in _AXES}, "acc_rows": self.acc_rows,
                "param_rows": self.param_rows}


def point_id(config: AcceleratorConfig) -> str:
    """Return a short name of a sweep point, e.g. ``16x16-ws-sp4096-bus128``."""
    return (f"{config.rows}x{config.cols}-{config.dataflow}-sp{config.sp_rows}"
            f"-bus{config.bus_bits}")


def _align(x: int) -> int:
    return (x + _ALIGN - 1) // _ALIGN * _ALIGN


def predict_program(config: AcceleratorConfig, m: int, k: int, n: int, batch: int = 1,
                    timing: perf.Timing | None = None) -> dict:
    """Predict one device program of ``batch`` independent ``m x k x n`` GEMMs.

    The program is the one :class:`llmchip.sw.runtime.Device` runs for the same
    operations (each operand and result in its own DRAM region, laid out in the same
    order and alignment, the schedule from :func:`~llmchip.sw.compile.choose_schedule`),
    so the predicted cycles equal the model backend's; nothing is executed.

    Returns
    -------
    dict
        ``cycles``, ``array_busy``, ``dram_read_bytes``, ``dram_write_bytes``,
        ``sram_reads``, ``acc_accesses``, ``macs``, ``ideal_cycles`` (the roofline of
        every operation, summed), ``compute_cycles``, ``memory_cycles``, ``bound``,
        ``utilization``, ``roofline_efficiency`` and ``schedule``.

    Raises
    ------
    CompileError
        If no schedule fits the configuration's memories.
    ValueError
        If the configuration is not the weight-stationary accelerator.
    """
    for name, value in (("m", m), ("k", k), ("n", n), ("batch", batch)):
        check_int(name, value, 1, 1 << 31)
    sch = choose_schedule(config, m, k, n)
    builder = ProgramBuilder(config)
    top = 0
    for _ in range(batch):
        x = top
        w = _align(x + m * k)
        p = _align(w + packed_weight_bytes(config, k, n))
        y = _align(p + param_bytes(config, n))
        top = _align(y + m * n)
        builder.add_gemm(GemmOp(m, k, n, x, w, p, y), sch)
    res = perf.simulate(builder.finish(), timing=timing)
    roof = perf.roofline(config, m, k, n)
    macs = batch * m * k * n
    ideal = batch * roof["ideal_cycles"]
    return {"cycles": res.cycles, "array_busy": res.array_busy,
            "dram_read_bytes": res.dram_read_bytes, "dram_write_bytes": res.dram_write_bytes,
            "sram_reads": res.sram_reads, "acc_accesses": res.acc_accesses, "macs": macs,
            "ideal_cycles": ideal, "compute_cycles": batch * roof["compute_cycles"],
            "memory_cycles": batch * roof["memory_cycles"], "bound": roof["bound"],
            "utilization": macs / config.pes / res.cycles,
            "roofline_efficiency": ideal / res.cycles, "schedule": sch.describe()}


def _ratio(a, b):
    return a / b if a is not None and b else None


def _fpga_report(config: AcceleratorConfig, target: str, top: str, out_dir) -> dict:
    from llmchip import fpga

    try:
        rep = fpga.run_flow(config, target, top=top, out_dir=out_dir)
    except (RuntimeError, TimeoutError, OSError) as exc:
        return {"target": target, "top": top, "error": f"{type(exc).__name__}: {exc}"}
    mapping = rep.get("mult_mapping")
    return {"target": rep["target"], "top": rep["top"], "luts": rep["luts"],
            "ffs": rep["ffs"], "dsps": rep["dsps"], "brams": rep["brams"],
            "fmax_mhz": rep["fmax_mhz"], "fits": bool(rep["fits"]),
            "utilization": rep.get("utilization"),
            "mult_mapping": mapping.get("mode") if isinstance(mapping, dict) else mapping,
            "log_dir": rep.get("log_dir")}


def _totals(config: AcceleratorConfig, gemms: list[dict], fpga: dict | None) -> dict:
    if any(g.get("error") for g in gemms):
        return {"gemms": len(gemms), "macs": sum(g["macs"] for g in gemms), "cycles": None,
                "error": next(g["error"] for g in gemms if g.get("error"))}
    t = {"gemms": len(gemms)}
    for key in ("macs", "cycles", "ideal_cycles", "dram_read_bytes", "dram_write_bytes"):
        t[key] = sum(g[key] for g in gemms)
    t["energy_uj"] = math.fsum(g["energy_uj"] for g in gemms)
    t["utilization"] = t["macs"] / config.pes / t["cycles"]
    t["roofline_efficiency"] = t["ideal_cycles"] / t["cycles"]
    t["macs_per_cycle"] = t["macs"] / t["cycles"]
    t["pj_per_mac"] = t["energy_uj"] * 1e6 / t["macs"]
    if fpga and not fpga.get("error"):
        fmax = fpga["fmax_mhz"] if fpga["fits"] else None
        t["seconds_at_fmax"] = t["cycles"] / (fmax * 1e6) if fmax else None
        t["gops"] = 2 * t["macs"] / t["seconds_at_fmax"] / 1e9 if fmax else None
        t["gops_per_dsp"] = _ratio(t["gops"], fpga["dsps"])
        t["gops_per_klut"] = _ratio(t["gops"], fpga["luts"] / 1000)
        t["macs_per_cycle_per_dsp"] = _ratio(t["macs_per_cycle"], fpga["dsps"])
        t["macs_per_cycle_per_klut"] = _ratio(t["macs_per_cycle"], fpga["luts"] / 1000)
    return t


def evaluate_point(config: dict | AcceleratorConfig, gemms: Sequence[Gemm], *,
                   fpga: str | None = None, fpga_top: str = "array",
                   fpga_dir: str | None = None,
                   op_point: tuple[int, int] = OPERATING_POINTS[-1]) -> dict:
    """Evaluate one sweep point: every GEMM's prediction and energy, per-workload totals,
    and the FPGA report when ``fpga`` names a target.

    Parameters
    ----------
    config : AcceleratorConfig or dict
        The point (a dict of config fields is accepted, for workers).
    gemms : sequence of Gemm
        The workloads' GEMMs; each distinct shape is compiled and predicted once.
    fpga : str, optional
        An :mod:`llmchip.fpga` target name.
    fpga_top : {"array", "accelerator"}
    fpga_dir : str, optional
        Folder for the FPGA report and logs of this point.
    op_point : (MHz, mV)
        Operating point of the energy estimate (dynamic energy scales with mV squared).

    Returns
    -------
    dict
        ``point``, ``config``, ``pes``, ``workloads`` (name -> ``{"totals", "gemms"}``),
        ``fpga`` (or None) and ``note``. An output-stationary point has no workloads:
        only the bare array exists for that dataflow.
    """
    cfg = config if isinstance(config, AcceleratorConfig) else AcceleratorConfig(**config)
    mhz, mv = op_point
    fp = _fpga_report(cfg, fpga, fpga_top, fpga_dir) if fpga else None
    out = {"point": point_id(cfg), "config": cfg.to_dict()["config"], "pes": cfg.pes,
           "workloads": {}, "fpga": fp, "note": ""}
    if cfg.dataflow != "ws":
        out["note"] = ("output-stationary: only the bare array exists (no accelerator, "
                       "compiler or performance model), so no workload figures")
        return out
    memo: dict = {}
    per_workload: dict[str, list[dict]] = {}
    for g in gemms:
        if g.shape not in memo:
            try:
                pred = predict_program(cfg, *g.shape)
                energy = estimate_energy(cfg, pred, mhz=mhz, mv=mv)
                pred["energy_uj"] = energy["total_uj"]
            except CompileError as exc:
                pred = {"macs": g.macs, "error": str(exc)}
            memo[g.shape] = pred
        rec = {"workload": g.workload, "name": g.name, "kind": g.kind, "m": g.m, "k": g.k,
               "n": g.n, "batch": g.batch, **memo[g.shape]}
        per_workload.setdefault(g.workload, []).append(rec)
    for name, recs in per_workload.items():
        out["workloads"][name] = {"totals": _totals(cfg, recs, fp), "gemms": recs}
    return out


# -- running a sweep ---------------------------------------------------------------------------

def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="sweep", unit="point", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)


def _run_local(tasks: list[tuple], jobs: int, bar) -> list[dict]:
    results: list = [None] * len(tasks)
    if jobs == 1:
        for i, (args, kwargs) in enumerate(tasks):
            results[i] = evaluate_point(*args, **kwargs)
            bar.update()
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn, not fork: forking a parent that runs threads (progress bar, BLAS) can leave
    # a worker waiting on a lock whose owner was not copied.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(evaluate_point, *args, **kwargs): i
                   for i, (args, kwargs) in enumerate(tasks)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.update()
    return results


def _run_dask(tasks: list[tuple], address: str, bar) -> list[dict]:
    from distributed import Client, as_completed

    results: list = [None] * len(tasks)
    with Client(address, timeout=30) as client:
        futures = {client.submit(evaluate_point, *args, pure=False, **kwargs): i
                   for i, (args, kwargs) in enumerate(tasks)}
        for fut in as_completed(list(futures)):
            results[futures[fut]] = fut.result()
            bar.update()
    return results


def run_sweep(grid: SweepGrid, workloads: str | Sequence[str] = ("minilm",), *,
              seq_len: int = 128, n_layers: int | None = None, jobs: int | None = None,
              scheduler: str | None = None, fpga: str | None = None,
              fpga_top: str = "array", rtl_check: int = 0, out_dir: str | Path | None = None,
              progress: bool = True,
              op_point: tuple[int, int] = OPERATING_POINTS[-1]) -> dict:
    """Evaluate every point of ``grid`` on ``workloads``; return the sweep result.

    Parameters
    ----------
    grid : SweepGrid
    workloads : str or sequence of str
        Names from :data:`llmchip.sw.workloads.WORKLOADS` (or groups such as
        ``smollm2``); a comma-separated string is accepted.
    seq_len : int
        Sequence length of every workload (see :func:`~llmchip.sw.workloads.workload_gemms`).
    n_layers : int, optional
        Keep only the first layers of each model (default all).
    jobs : int, optional
        Local worker processes (default: the CPU count, at most the number of points);
        1 evaluates in this process.
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:port``); the points then run on its
        workers instead of local processes.
    fpga : str, optional
        An :mod:`llmchip.fpga` target: adds resources and Fmax of every point.
    fpga_top : {"array", "accelerator"}
        What the FPGA flow builds.
    rtl_check : int
        GEMMs to run on the Verilator RTL after the sweep (:func:`rtl_checks`).
    out_dir : str or Path, optional
        Where FPGA reports go (``<out_dir>/fpga/<point>``).
    progress : bool
        Show a progress bar on stderr.
    op_point : (MHz, mV)
        Operating point of the energy estimates.

    Returns
    -------
    dict
        ``grid``, ``workloads`` (name -> GEMM count, MACs and sequence length), ``points``
        (:func:`evaluate_point` results in grid order), ``rtl_checks``, ``fpga`` and
        ``op_point``.

    Raises
    ------
    ValueError
        If a workload, target, top or count is invalid, or the grid has
        output-stationary points without ``fpga`` and ``fpga_top="array"`` (nothing else
        exists for that dataflow).
    """
    names = check_options(grid, workloads, seq_len=seq_len, n_layers=n_layers, jobs=jobs,
                          fpga=fpga, fpga_top=fpga_top, rtl_check=rtl_check)
    gemms: list[Gemm] = []
    info = {}
    for name in names:
        found = workload_gemms(name, seq_len, n_layers=n_layers)
        gemms += found
        info[name] = {"seq_len": seq_len, "n_layers": n_layers, "gemms": len(found),
                      "macs": sum(g.macs for g in found),
                      "distinct_shapes": len({g.shape for g in found})}
    configs = grid.configs()
    fpga_root = Path(out_dir) / "fpga" if out_dir is not None and fpga else None
    tasks = [((_fields(cfg), gemms),
              {"fpga": fpga, "fpga_top": fpga_top, "op_point": tuple(op_point),
               "fpga_dir": str(fpga_root / point_id(cfg)) if fpga_root else None})
             for cfg in configs]
    with _progress(len(tasks), progress) as bar:
        if scheduler:
            points = _run_dask(tasks, scheduler, bar)
        else:
            n = min(jobs or os.cpu_count() or 1, len(tasks))
            points = _run_local(tasks, n, bar)
    result = {"grid": grid.to_dict(), "workloads": info, "points": points,
              "fpga": {"target": fpga, "top": fpga_top} if fpga else None,
              "op_point": {"mhz": op_point[0], "mv": op_point[1]}, "rtl_checks": []}
    if rtl_check:
        result["rtl_checks"] = rtl_checks(result, rtl_check, gemms=gemms)
    return result


def check_options(grid: SweepGrid, workloads, *, seq_len: int = 128,
                  n_layers: int | None = None, jobs: int | None = None,
                  fpga: str | None = None, fpga_top: str = "array",
                  rtl_check: int = 0) -> tuple[str, ...]:
    """Check :func:`run_sweep`'s arguments before any work; return the workload names.

    Raises
    ------
    TypeError, ValueError
        Naming the bad value (see :func:`run_sweep`).
    """
    if not isinstance(grid, SweepGrid):
        raise TypeError(f"grid must be a SweepGrid, not {type(grid).__name__}")
    names = expand_workloads(workloads)
    for name in names:
        check_workload(name, seq_len, n_layers)
    check_int("rtl_check", rtl_check, 0, 1 << 16)
    if jobs is not None:
        check_int("jobs", jobs, 1, 1 << 10)
    if fpga_top not in ("array", "accelerator"):
        raise ValueError(f"fpga_top must be array or accelerator, not {fpga_top!r}")
    if fpga is not None:
        from llmchip.fpga import get_target
        get_target(fpga)
    if "os" in grid.dataflow and (fpga is None or fpga_top != "array"):
        raise ValueError("dataflow 'os' exists only as the bare output-stationary array (the "
                         "accelerator, compiler and performance model are weight-stationary): "
                         "sweep it with an FPGA target and fpga_top='array', or use 'ws'")
    return names


def _fields(config: AcceleratorConfig) -> dict:
    """Return the fields of ``config`` as a plain dictionary (what workers receive)."""
    return config.to_dict()["config"]


# -- RTL spot checks ------------------------------------------------------------------------

def rtl_checks(result: dict, count: int, *, gemms: Sequence[Gemm] | None = None,
               backend: str = "verilator", seed: int = 0) -> list[dict]:
    """Run ``count`` of a sweep's GEMMs on the RTL and compare cycles with the prediction.

    The smallest weight-stationary points come first (fewest PEs), and within a point the
    distinct GEMM shapes with the fewest MACs: those simulate fastest. Each runs once on
    ``Device(config, backend)`` with random int8 operands (``seed``), and its result is
    compared with the golden model.

    Returns
    -------
    list of dict
        ``point``, ``workload``, ``name``, ``m``, ``k``, ``n``, ``batch``,
        ``predicted_cycles`` (the sweep's), ``model_cycles`` (the runtime's),
        ``rtl_cycles`` (the hardware's counter), ``error`` (``rtl / predicted - 1``) and
        ``exact`` (the outputs match the golden model).
    """
    from .golden import matmul, requantize
    from .runtime import Device, Requant

    check_int("count", count, 0, 1 << 16)
    rng = np.random.default_rng(seed)
    ws = [p for p in result["points"] if p["workloads"]]
    ws.sort(key=lambda p: (p["pes"], p["config"]["rows"], p["config"]["bus_bits"],
                           p["config"]["sp_rows"]))
    out: list[dict] = []
    for p in ws:
        if len(out) >= count:
            break
        recs = {}
        for w in p["workloads"].values():
            for g in w["gemms"]:
                if not g.get("error"):
                    recs.setdefault((g["m"], g["k"], g["n"], g["batch"]), g)
        chosen = sorted(recs, key=lambda s: (s[0] * s[1] * s[2] * s[3], s))
        chosen = chosen[:count - len(out)]
        if not chosen:
            continue
        cfg = AcceleratorConfig(**p["config"])
        need = max(sum(b * (m * k + packed_weight_bytes(cfg, k, n) + param_bytes(cfg, n)
                            + m * n + 4 * _ALIGN) for m, k, n, b in chosen), 1)
        # Operands go in the upper half of the device DRAM (see the runtime).
        dram = max(1 << 22, 1 << (4 * need).bit_length())
        with Device(cfg, backend, dram_bytes=dram) as dev:
            for m, k, n, b in chosen:
                rec = recs[(m, k, n, b)]
                rq = Requant.from_scale(1.0 / (16 * math.sqrt(k)))
                ops = [(rng.integers(-128, 128, (m, k)), rng.integers(-128, 128, (k, n)))
                       for _ in range(b)]
                with dev.batch() as batch:
                    outs = [batch.matmul(x, w, rq) for x, w in ops]
                exact = all(np.array_equal(o.value, requantize(matmul(x, w), 0, rq.mult,
                                                                rq.shift, rq.zero_point))
                            for o, (x, w) in zip(outs, ops, strict=True))
                last = dev.last
                out.append({"point": p["point"], "workload": rec["workload"],
                            "name": rec["name"], "m": m, "k": k, "n": n, "batch": b,
                            "predicted_cycles": rec["cycles"],
                            "model_cycles": last["model_cycles"],
                            "rtl_cycles": last["cycles"],
                            "error": last["cycles"] / rec["cycles"] - 1, "exact": exact})
    return out


# -- output ---------------------------------------------------------------------------------

def _point_columns(p: dict) -> dict:
    c = p["config"]
    return {"point": p["point"], "rows": c["rows"], "cols": c["cols"], "pes": p["pes"],
            "dataflow": c["dataflow"], "sp_rows": c["sp_rows"], "bus_bits": c["bus_bits"],
            "acc_rows": c["acc_rows"], "param_rows": c["param_rows"]}


def point_rows(result: dict) -> list[dict]:
    """Return the rows of ``sweep.csv``: one per point and workload (one per point
    without workloads), with the columns of :data:`CSV_COLUMNS`."""
    rows = []
    for p in result["points"]:
        fp = p["fpga"] or {}
        fcols = {"fpga_target": fp.get("target"), "fpga_top": fp.get("top"),
                 **{k: fp.get(k) for k in ("luts", "ffs", "dsps", "brams", "fmax_mhz",
                                           "fits", "mult_mapping")}}
        note = "; ".join(x for x in (p["note"], fp.get("error", "")) if x)
        base = {**_point_columns(p), **fcols}
        if not p["workloads"]:
            rows.append({**dict.fromkeys(CSV_COLUMNS), **base, "note": note})
        for name, w in p["workloads"].items():
            t = w["totals"]
            row = {**dict.fromkeys(CSV_COLUMNS), **base, "workload": name,
                   **{k: v for k, v in t.items() if k in CSV_COLUMNS},
                   "note": "; ".join(x for x in (note, t.get("error", "")) if x)}
            rows.append(row)
    return rows


def gemm_rows(result: dict) -> list[dict]:
    """Return the rows of ``sweep_gemms.csv``: one per point, workload and GEMM."""
    rows = []
    for p in result["points"]:
        base = {k: v for k, v in _point_columns(p).items() if k in GEMM_CSV_COLUMNS}
        for w in p["workloads"].values():
            for g in w["gemms"]:
                rows.append({**dict.fromkeys(GEMM_CSV_COLUMNS), **base,
                             **{k: v for k, v in g.items() if k in GEMM_CSV_COLUMNS}})
    return rows


def _write_csv(path: Path, columns, rows) -> None:
    with path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(columns))
        wr.writeheader()
        for r in rows:
            wr.writerow({k: ("" if v is None else v) for k, v in r.items()})


def write_results(result: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write ``sweep.json`` (everything), ``sweep.csv`` (per point and workload),
    ``sweep_gemms.csv`` (per GEMM) and, with RTL checks, ``rtl_checks.csv``; return the
    paths by name."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "sweep.json", "csv": out / "sweep.csv",
             "gemms_csv": out / "sweep_gemms.csv"}
    paths["json"].write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    _write_csv(paths["csv"], CSV_COLUMNS, point_rows(result))
    _write_csv(paths["gemms_csv"], GEMM_CSV_COLUMNS, gemm_rows(result))
    if result.get("rtl_checks"):
        paths["rtl_csv"] = out / "rtl_checks.csv"
        _write_csv(paths["rtl_csv"], list(result["rtl_checks"][0]), result["rtl_checks"])
    return paths


def summarize(result: dict) -> list[dict]:
    """Return the best point per metric (:data:`SUMMARY_METRICS`): per workload for the
    workload figures, over all points for the FPGA resources (workload ``"-"``). Metrics
    with no value anywhere (FPGA figures without ``--fpga``) are left out; ties go to the
    smaller array."""
    rows = point_rows(result)
    per_point = list({r["point"]: r for r in rows}.values())
    out = []
    groups = [(w, [r for r in rows if r["workload"] == w], True) for w in result["workloads"]]
    groups.append(("-", per_point, False))
    for workload, mine, wl in groups:
        for col, how, text, by_workload in SUMMARY_METRICS:
            have = [r for r in mine if r.get(col) is not None]
            if by_workload != wl or not have:
                continue
            pick = min if how == "min" else max
            best = pick(have, key=lambda r: (r[col], r["pes"] if how == "min" else -r["pes"]))
            out.append({"workload": workload, "metric": col, "goal": text,
                        "point": best["point"], "value": best[col]})
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.4e}"
    return str(v)


def format_table(rows: list[dict], columns: Sequence[str]) -> str:
    """Return ``rows`` as a plain-text table of ``columns``."""
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
              for row in cells]
    return "\n".join(lines)


# -- plots ----------------------------------------------------------------------------------

def _variant(r: dict) -> str:
    return f"{r['dataflow']} sp{r['sp_rows']} bus{r['bus_bits']}"


def _natural(text: str) -> list:
    """Sort key that orders numbers inside names by value (bus64 before bus128)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def _shapes(rows: list[dict]) -> list[str]:
    seen = sorted({(r["pes"], r["rows"], r["cols"]) for r in rows})
    return [f"{a}x{b}" for _, a, b in seen]


def _series_plot(ax, rows, ycol, group, shapes, *, log=False, marker="o"):
    """One line per value of ``group(row)``, x = array shape (sorted by PEs)."""
    idx = {s: i for i, s in enumerate(shapes)}
    drawn = False
    for key in sorted({group(r) for r in rows}, key=_natural):
        pts = sorted((idx[f"{r['rows']}x{r['cols']}"], r[ycol]) for r in rows
                     if group(r) == key and r.get(ycol) is not None)
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=marker, label=key)
            drawn = True
    ax.set_xticks(range(len(shapes)))
    ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("array (rows x cols)")
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=6)
    return drawn


def plot_results(result: dict, out_dir: str | Path) -> list[Path]:
    """Write the sweep's PNG plots into ``out_dir`` and return their paths.

    * ``roofline_efficiency.png``: roofline efficiency of each kind of GEMM (``qkv``,
      ``attn.scores``, ...) vs array size, one panel per workload and memory/bus variant;
    * ``total_cycles.png``: each workload's total cycles vs array size;
    * ``fpga_resources.png``: LUTs, FFs, DSPs and Fmax vs array size (with FPGA data);
    * ``throughput_per_resource.png``: GOPS at Fmax (or MACs per cycle where no Fmax is
      known) per DSP and per 1000 LUTs (with FPGA data).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in point_rows(result) if r["workload"]]
    written: list[Path] = []
    workloads = list(result["workloads"])
    grows = gemm_rows(result)
    variants = sorted({_variant(r) for r in rows}, key=_natural)
    shapes = _shapes(rows)

    if rows:
        fig, axes = plt.subplots(len(workloads), len(variants), squeeze=False,
                                 figsize=(4.5 * len(variants), 3.4 * len(workloads)))
        for i, wl in enumerate(workloads):
            for j, var in enumerate(variants):
                ax = axes[i][j]
                # One value per point and kind: every layer's copy of a kind is the same
                # program, so the mean is that value.
                agg: dict = {}
                for g in grows:
                    if g["workload"] == wl and _variant(g) == var and g["cycles"]:
                        agg.setdefault((g["point"], g["kind"]), (g, []))[1].append(
                            g["roofline_efficiency"])
                pts = [{**g, "roofline_efficiency": sum(v) / len(v)} for g, v in agg.values()]
                _series_plot(ax, pts, "roofline_efficiency", lambda r: r["kind"], shapes)
                # perf.roofline puts reads and writes on one channel, so a GEMM that
                # overlaps them can pass 1: keep those points in view.
                top = max([1.0] + [r["roofline_efficiency"] for r in pts])
                ax.set_ylim(0, 1.05 * top)
                ax.set_ylabel("roofline efficiency")
                ax.set_title(f"{wl} ({var})", fontsize=8)
        fig.tight_layout()
        written.append(out / "roofline_efficiency.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(workloads), squeeze=False,
                                 figsize=(5 * len(workloads), 3.6))
        for i, wl in enumerate(workloads):
            ax = axes[0][i]
            _series_plot(ax, [r for r in rows if r["workload"] == wl], "cycles", _variant,
                         shapes, log=True)
            ax.set_ylabel("total cycles")
            ax.set_title(wl, fontsize=9)
        fig.tight_layout()
        written.append(out / "total_cycles.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

    frows = [r for r in point_rows(result) if r.get("luts") is not None]
    if frows:
        fshapes = _shapes(frows)
        # The bare array does not depend on the memories or the bus: one line per dataflow.
        bare = frows[0]["fpga_top"] == "array"
        fgroup = (lambda r: r["dataflow"]) if bare else _variant
        first = {}
        for r in frows:         # one row per design (workload rows repeat the FPGA columns)
            first.setdefault((r["rows"], r["cols"], fgroup(r)), r)
        fr = list(first.values())
        cols = ("luts", "ffs", "dsps", "fmax_mhz")
        fig, axes = plt.subplots(1, len(cols), squeeze=False, figsize=(4.2 * len(cols), 3.6))
        for ax, col in zip(axes[0], cols, strict=True):
            _series_plot(ax, fr, col, fgroup, fshapes)
            ax.set_ylabel(col)
        fig.suptitle(f"{frows[0]['fpga_target']} ({frows[0]['fpga_top']})", fontsize=9)
        fig.tight_layout()
        written.append(out / "fpga_resources.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)

        wrows = [r for r in frows if r["workload"]]
        if wrows:
            clocked = any(r.get("gops") is not None for r in wrows)
            per = (("gops_per_dsp", "gops_per_klut") if clocked
                   else ("macs_per_cycle_per_dsp", "macs_per_cycle_per_klut"))
            fig, axes = plt.subplots(1, 2, squeeze=False, figsize=(10, 3.8))
            for ax, col in zip(axes[0], per, strict=True):
                _series_plot(ax, wrows, col, lambda r: f"{r['workload']} {_variant(r)}",
                             fshapes)
                ax.set_ylabel(col.replace("_", " "))
            fig.tight_layout()
            written.append(out / "throughput_per_resource.png")
            fig.savefig(written[-1], dpi=110)
            plt.close(fig)
    return written
