"""``llmchip dvfs``: closed-loop DVFS/thermal simulation on workloads, and trace replay on
the controller (reference model or RTL)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .cli import _add_config_args, _config, _print_table, _UsageError

__all__ = ["add_parser", "cmd_simulate", "cmd_replay"]

_SIMS = ("verilator", "icarus")


def _float(name: str):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, not {text!r}") \
                from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be finite, not {text!r}")
        return value
    return parse


def _replay_params(policy: str, sample_period: int | None):
    """The controller's reset parameters with the policy's governor and power cap."""
    from .sw.dvfs import DvfsParams, Governor

    gov = {"ondemand": Governor.ONDEMAND, "schedutil": Governor.SCHEDUTIL,
           "conservative": Governor.CONSERVATIVE, "powercap": Governor.ONDEMAND,
           "performance": Governor.PERFORMANCE}[policy]
    extra = {} if sample_period is None else {"sample_period": sample_period}
    try:
        return DvfsParams(governor=gov, pc_en=policy == "powercap", **extra)
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None


def cmd_simulate(args: argparse.Namespace) -> int:
    """Run the closed loop (controller, power model, thermal plant) on a workload."""
    from .sw import dvfs_sim
    from .sw.power import PowerConstants

    cfg = _config(args)
    if cfg.dataflow != "ws" or cfg.in_width != 8 or cfg.acc_width != 32:
        raise _UsageError("the workloads run on the int8 weight-stationary accelerator: keep "
                          "--dataflow ws --in-width 8 --acc-width 32")
    if args.workload not in dvfs_sim.WORKLOADS:
        raise _UsageError(f"unknown workload {args.workload!r}; choose one of "
                          f"{', '.join(dvfs_sim.WORKLOADS)}")
    if not -40 <= args.ambient <= 150:
        raise _UsageError(f"--ambient must be between -40 and 150 C, not {args.ambient:g}")
    if not 0 < args.duration <= 3600:
        raise _UsageError(f"--duration must be between 0 and 3600 s, not {args.duration:g}")
    if args.load is not None and not 0 <= args.load <= 1:
        raise _UsageError(f"--load must be between 0 and 1, not {args.load:g}")
    constants = None
    if args.constants is not None:
        if not args.constants.is_file():
            raise _UsageError(f"--constants: no such file {str(args.constants)!r}")
        try:
            constants = PowerConstants.from_file(args.constants)
        except (TypeError, ValueError) as exc:
            raise _UsageError(str(exc)) from None
    log = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr))
    try:
        wl = dvfs_sim.workload(args.workload, cfg, log=log)
    except FileNotFoundError as exc:
        raise _UsageError(f"workload {args.workload!r} needs the model weights: {exc}") \
            from None
    bar = None
    progress = None
    if not args.json and args.duration >= 2:
        from tqdm import tqdm
        bar = tqdm(total=100, desc=f"dvfs {args.policy}", unit="%", file=sys.stderr,
                   leave=False)

        def progress(frac: float) -> None:
            bar.update(round(100 * frac) - bar.n)
    try:
        res = dvfs_sim.simulate(wl, args.policy, ambient_c=args.ambient,
                                duration_s=args.duration, constants=constants,
                                load=args.load, seed=args.seed,
                                poisson=args.arrivals == "poisson",
                                sensor_us=args.sensor_us, sample_us=args.sample_us,
                                t_control_c=args.t_control, progress=progress)
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    s = res.summary
    if args.plot is not None:
        s["plot"] = str(write_plot(res, args.plot))
    if args.json:
        doc = {"summary": s}
        if args.series:
            doc["series"] = res.series
        print(json.dumps(doc, indent=2))
        return 0
    lat = s["mean_latency_s"]
    _print_table(f"llmchip dvfs simulate ({s['policy']}, {s['workload']})", [
        ("workload", f"{wl.description}; {s['requests']} requests in {s['duration_s']:g} s "
                     f"at load {s['load']:g}"),
        ("ambient", f"{s['ambient_c']:g} C"),
        ("energy", f"{s['energy_j']:.3f} J ({s['avg_power_w']:.3f} W average over "
                   f"{s['simulated_s']:.3f} s)"),
        ("finish", f"{s['time_to_finish_s']:.4f} s" if s["time_to_finish_s"] is not None
         else f"not finished: {s['completed']}/{s['requests']} requests done"),
        ("latency", f"mean {lat * 1e3:.3f} ms, p95 {s['p95_latency_s'] * 1e3:.3f} ms"
         if lat is not None else "no request completed"),
        ("EDP", f"{s['edp_js']:.5g} J s (energy x mean latency)" if s["edp_js"] is not None
         else "n/a"),
        ("peak T", f"{s['peak_die_c']:.2f} C at {s['peak_t_s']:.3f} s"
                   + ("; THERMAL TRIP" if s["thermtrip"] else "")),
        ("throttled", f"{s['throttled_s']:.3f} s; by reason: "
                      + ", ".join(f"{k} {v:.3f} s" for k, v in s["reason_s"].items())),
        ("transitions", str(s["transitions"])),
        ("wall", f"{s['wall_s']:.1f} s")] + ([("plot", s["plot"])] if "plot" in s else []))
    return 0


def write_plot(res, path: Path) -> Path:
    """Write frequency, power and temperature over time as a PNG; return its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s, t = res.series, res.series["t"]
    fig, ax = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    ax[0].step(t, s["mhz"], where="post", label="operating point")
    ax[0].plot(t, s["eff_mhz"], lw=0.8, alpha=0.7, label="effective (clock enable)")
    ax[0].set_ylabel("MHz")
    ax[0].legend(loc="lower right", fontsize=8)
    ax[1].plot(t, s["power_w"], lw=0.8)
    ax[1].set_ylabel("power (W)")
    ax[2].plot(t, s["die_c"], lw=0.8, label="die")
    ax[2].plot(t, s["sink_c"], lw=0.8, label="heat sink")
    for name, mc in (("t_passive", res.summary.get("t_passive_mc")),
                     ("t_crit", res.summary.get("t_crit_mc"))):
        if mc is not None:
            ax[2].axhline(mc / 1000, ls="--", lw=0.6, color="grey")
            ax[2].annotate(name, (t[0] if t else 0, mc / 1000), fontsize=7, color="grey")
    ax[2].set_ylabel("temperature (C)")
    ax[2].set_xlabel("time (s)")
    ax[2].legend(loc="lower right", fontsize=8)
    sm = res.summary
    fig.suptitle(f"{sm['workload']} / {sm['policy']} at {sm['ambient_c']:g} C: "
                 f"{sm['energy_j']:.2f} J, peak {sm['peak_die_c']:.1f} C")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cmd_replay(args: argparse.Namespace) -> int:
    """Drive the controller with an external trace; print its outputs per sample."""
    from .sw.dvfs import Reason, read_trace, replay

    if not args.trace.is_file():
        raise _UsageError(f"--trace: no such file {str(args.trace)!r}")
    try:
        trace = read_trace(args.trace)
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    except UnicodeDecodeError:
        raise _UsageError(f"{args.trace}: not a text CSV file") from None
    params = _replay_params(args.policy, args.sample_period)
    if args.backend == "model":
        rows = replay(trace, params)
    else:
        from .tb.dvfs_replay import replay_rtl
        if not args.json:
            print(f"building the controller for {args.backend} (cached after the first "
                  f"time)...", file=sys.stderr)
        rows = replay_rtl(trace, params, sim=args.backend)
    names = {int(r): r.name.lower() for r in Reason}
    for r in rows:
        r["reason_name"] = names.get(r["reason"], str(r["reason"]))
    if args.json:
        print(json.dumps({"backend": args.backend, "policy": args.policy,
                          "trace": str(args.trace), "rows": rows}, indent=2))
        return 0
    print(f"{'cycle':>10} {'index':>5} {'mV':>5} {'clk_en':>6} {'ratio':>6} "
          f"{'reason':<13} {'trip':>4} {'irq':>3}")
    for r in rows:
        print(f"{r['cycle']:>10} {r['index']:>5} {r['v_req_mv']:>5} {r['clk_en']:>6} "
              f"{r['clk_en_ratio']:>6.3f} {r['reason_name']:<13} {r['thermtrip']:>4} "
              f"{r['irq']:>3}")
    return 0


def add_parser(sub) -> None:
    """Add the ``dvfs`` command with its ``simulate`` and ``replay`` subcommands."""
    from .sw.dvfs_sim import POLICIES, WORKLOADS

    p = sub.add_parser("dvfs", help="DVFS/thermal controller: closed-loop studies, trace "
                                    "replay",
                       description="Simulate the DVFS/thermal controller in closed loop "
                                   "with the power model and thermal plant, or replay an "
                                   "external trace on it.")
    dsub = p.add_subparsers(dest="dvfs_command", metavar="SUBCOMMAND", required=True)

    sp = dsub.add_parser(
        "simulate", help="closed loop: controller + power model + thermal plant",
        description="Serve a workload (requests with idle gaps) for a duration with one "
                    "policy at an ambient temperature; report energy, time to finish, "
                    "latency, EDP, peak temperature and throttled time.")
    _add_config_args(sp, rows=16, cols=16, sp_rows=4096, param_rows=128)
    sp.add_argument("--policy", choices=POLICIES, default="ondemand",
                    help="utilization governor, powercap (PID power cap on ondemand), or "
                         "performance (always the top point); default ondemand")
    sp.add_argument("--workload", default="minilm", metavar="NAME",
                    help=f"one of {', '.join(WORKLOADS)} (default minilm; measured ones "
                         f"are cached after the first run)")
    sp.add_argument("--ambient", type=_float("--ambient"), default=45.0, metavar="C",
                    help="ambient temperature in C (default 45)")
    sp.add_argument("--duration", type=_float("--duration"), default=10.0, metavar="S",
                    help="seconds of requests (default 10)")
    sp.add_argument("--load", type=_float("--load"), default=None, metavar="FRACTION",
                    help="offered load at the top frequency, 0-1 (default: the "
                         "workload's)")
    sp.add_argument("--arrivals", choices=("poisson", "periodic"), default="poisson",
                    help="request arrivals (default poisson)")
    sp.add_argument("--seed", type=int, default=0, help="arrival seed (default 0)")
    sp.add_argument("--sensor-us", type=int, default=100, metavar="US",
                    help="temperature sensor period in us (default 100)")
    sp.add_argument("--sample-us", type=int, default=500, metavar="US",
                    help="controller sample period in us (default 500)")
    sp.add_argument("--t-control", type=float, default=None, metavar="C",
                    help="powercap: the temperature the PID holds the die at (default 80; "
                         "the sustainable power is (t_control - ambient) / R_total)")
    sp.add_argument("--constants", type=Path, default=None, metavar="FILE",
                    help="JSON or TOML file overriding power/thermal constants")
    sp.add_argument("--plot", type=Path, default=None, metavar="PNG",
                    help="write frequency, power and temperature over time to a PNG")
    sp.add_argument("--series", action="store_true",
                    help="with --json, include the time series")
    sp.set_defaults(func=cmd_simulate)

    rp = dsub.add_parser(
        "replay", help="drive the controller with a trace CSV",
        description="Run the controller (and its ideal regulator/PLL) over a trace with "
                    "columns cycle,temperature_mC,temp_valid,busy,total,prochot and print "
                    "per row the OPP index, voltage request, clock enable (and its ratio "
                    "over the row), throttle reason, thermtrip and interrupt.")
    rp.add_argument("--trace", type=Path, required=True, metavar="FILE.csv")
    rp.add_argument("--backend", choices=("model",) + _SIMS, default="model",
                    help="model: the reference model (default); verilator / icarus: the "
                         "generated RTL")
    rp.add_argument("--policy", choices=POLICIES, default="ondemand",
                    help="governor at reset (default ondemand)")
    rp.add_argument("--sample-period", type=int, default=None, metavar="TICKS",
                    help="ticks between control samples (default: the controller's)")
    rp.add_argument("--json", action="store_true", help="print one JSON document")
    rp.set_defaults(func=cmd_replay)
