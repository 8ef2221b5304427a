"""``llmchip sweep``: a design-space sweep over array size, dataflow, scratchpad and bus.

Writes ``sweep.csv``, ``sweep_gemms.csv`` and ``sweep.json`` (and PNG plots with
``--plot``) into ``--out`` and prints the best point per metric. See ``docs/sweeps.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .cli import _UsageError

__all__ = ["add_parser", "cmd_sweep"]


def _int_list(flag: str, text: str) -> list[int]:
    out = []
    for item in text.split(","):
        item = item.strip()
        try:
            out.append(int(item))
        except ValueError:
            raise _UsageError(f"{flag} takes comma-separated integers; {item!r} is not "
                              f"one") from None
    return out


def _str_list(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_parser(sub) -> None:
    """Add the ``sweep`` subcommand to the ``llmchip`` parser."""
    p = sub.add_parser(
        "sweep", help="sweep array size, dataflow, scratchpad and bus over real workloads",
        description="Evaluate every combination of the listed values on the GEMMs of real "
                    "models (performance model: cycles, utilization, roofline efficiency; "
                    "energy; optionally FPGA resources and Fmax, and RTL spot checks). "
                    "Lists are comma-separated.")
    g = p.add_argument_group("grid")
    g.add_argument("--rows", default="8,16", metavar="LIST",
                   help="PE rows, e.g. 4,8,16 (default 8,16)")
    g.add_argument("--cols", default="8,16", metavar="LIST",
                   help="PE columns (default 8,16)")
    g.add_argument("--dataflow", default="ws", metavar="LIST",
                   help="ws and/or os; os exists only as the bare array, so it needs "
                        "--fpga with --fpga-top array (default ws)")
    g.add_argument("--sp-rows", default="4096", metavar="LIST",
                   help="scratchpad rows, powers of two (default 4096)")
    g.add_argument("--bus-bits", default="128", metavar="LIST",
                   help="DMA data widths: 64, 128, 256, 512 (default 128)")
    g.add_argument("--acc-rows", type=int, default=512, metavar="N",
                   help="accumulator rows at every point (default 512)")
    g.add_argument("--param-rows", type=int, default=128, metavar="N",
                   help="parameter rows at every point (default 128)")
    g = p.add_argument_group("workloads")
    g.add_argument("--workloads", default="minilm", metavar="LIST",
                   help="minilm, smollm2-prefill, smollm2-decode, or smollm2 for both "
                        "(default minilm)")
    g.add_argument("--seq-len", type=int, default=128, metavar="N",
                   help="MiniLM tokens, SmolLM2 prompt tokens, and the KV cache length "
                        "of the decode step (default 128)")
    g.add_argument("--layers", type=int, default=None, metavar="N",
                   help="keep only the first N layers of each model (default all)")
    g = p.add_argument_group("execution")
    g.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="local worker processes (default: one per CPU)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the points on a Dask cluster (tcp://host:port)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g = p.add_argument_group("extras")
    from .fpga.targets import TARGETS

    g.add_argument("--fpga", default=None, metavar="TARGET",
                   help="also synthesize (and place and route) every point for an FPGA "
                        f"target: {', '.join(TARGETS)}")
    g.add_argument("--fpga-top", choices=("array", "accelerator"), default="array",
                   help="what the FPGA flow builds (default array)")
    g.add_argument("--rtl-check", type=int, default=0, metavar="N",
                   help="run N GEMMs (smallest points and shapes) on the Verilator RTL and "
                        "compare its cycles with the prediction (default 0)")
    p.add_argument("--out", type=Path, default=Path("sweep"), metavar="DIR",
                   help="output folder (default ./sweep)")
    p.add_argument("--plot", action="store_true", help="also write PNG plots")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document (summary and file paths)")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run ``llmchip sweep``; return the exit status."""
    from .sw import sweep

    try:
        grid = sweep.SweepGrid(rows=_int_list("--rows", args.rows),
                               cols=_int_list("--cols", args.cols),
                               dataflow=_str_list(args.dataflow),
                               sp_rows=_int_list("--sp-rows", args.sp_rows),
                               bus_bits=_int_list("--bus-bits", args.bus_bits),
                               acc_rows=args.acc_rows, param_rows=args.param_rows)
        for flag, value, lo in (("--jobs", args.jobs, 1), ("--layers", args.layers, 1),
                                ("--rtl-check", args.rtl_check, 0)):
            if value is not None and value < lo:
                raise ValueError(f"{flag} must be >= {lo}, not {value}")
        options = dict(seq_len=args.seq_len, n_layers=args.layers, jobs=args.jobs,
                       fpga=args.fpga, fpga_top=args.fpga_top, rtl_check=args.rtl_check)
        workloads = sweep.check_options(grid, args.workloads, **options)
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None
    t0 = time.perf_counter()
    result = sweep.run_sweep(grid, workloads, scheduler=args.scheduler, out_dir=args.out,
                             progress=not args.no_progress, **options)
    seconds = time.perf_counter() - t0
    paths = sweep.write_results(result, args.out)
    pngs = sweep.plot_results(result, args.out) if args.plot else []
    best = sweep.summarize(result)
    files = [str(p) for p in (*paths.values(), *pngs)]
    if args.json:
        print(json.dumps({"points": len(result["points"]), "workloads": result["workloads"],
                          "seconds": round(seconds, 1), "files": files, "best": best,
                          "rtl_checks": result["rtl_checks"]}, indent=2))
        return 0
    wl = ", ".join(f"{n} ({w['gemms']} GEMMs, {w['distinct_shapes']} shapes)"
                   for n, w in result["workloads"].items())
    print(f"sweep: {len(result['points'])} points x {wl}, seq-len {args.seq_len}, "
          f"{seconds:.1f} s")
    print(sweep.format_table(sweep.point_rows(result),
                             ("point", "workload", "cycles", "utilization",
                              "roofline_efficiency", "energy_uj", "luts", "dsps",
                              "fmax_mhz", "note")
                             if args.fpga else
                             ("point", "workload", "cycles", "utilization",
                              "roofline_efficiency", "energy_uj", "note")))
    print("\nbest point per metric:")
    print(sweep.format_table(best, ("workload", "goal", "point", "value")))
    if result["rtl_checks"]:
        print("\nRTL spot checks (Verilator):")
        print(sweep.format_table(result["rtl_checks"],
                                 ("point", "name", "m", "k", "n", "batch", "predicted_cycles",
                                  "rtl_cycles", "error", "exact")))
    print("\nwrote " + ", ".join(files))
    return 0
