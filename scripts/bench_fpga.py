"""Benchmark the FPGA flow: Fmax and resources per size, and the largest array per part.

Runs :func:`llmchip.fpga.run_flow` (cached, so a second run prints at once) for

* ``ecp5``: the bare array and the full accelerator, 4x4, 8x8 and 16x16, on ECP5-85F,
  unpipelined and with the chosen PE pipeline, ``mult="auto"`` (DSPs while they last,
  then LUT multipliers);
* ``largest``: square arrays of growing size on every target until one does not fit.

Prints a table and writes every report to ``--json``. Synthesis and place and route of
the big designs take many minutes each on two cores: run it in the background, e.g.
``nice python scripts/bench_fpga.py > bench_fpga.log 2>&1 &``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import median

from llmchip.config import AcceleratorConfig
from llmchip.fpga import TARGETS, run_flow
from llmchip.fpga.targets import ROUTERS

#: Square sizes tried per target for "largest", ascending.
LARGEST = {"ice40-up5k": [2, 3, 4, 5, 6], "xc7a100t": [16, 24, 32],
           "ecp5-85k": [16, 20, 24]}
GOALS = {("array", 8): 150.0, ("accelerator", 8): 125.0}


def _row(r: dict) -> str:
    c = r["config"]
    mm = r["mult_mapping"]
    fmax = f"{r['fmax_mhz']:7.1f}" if r["fmax_mhz"] else "    n/a"
    goal = GOALS.get((r["top"], c["rows"])) if r["target"] == "ecp5-85k" else None
    mark = "" if goal is None or r["fmax_mhz"] is None else (
        f"  goal {goal:.0f}: {'met' if r['fmax_mhz'] >= goal else 'MISSED'}")
    return (f"{r['target']:<11} {r['top']:<11} {c['rows']:>2}x{c['cols']:<2} "
            f"{c['pipeline']:<8} {mm['mode']:<6} {mm['dsp_pes']:>4}/{mm['lut_pes']:<4} "
            f"{r['luts']:>7g} {r['ffs']:>7g} {r['dsps']:>4g} {r['brams']:>5g} "
            f"{fmax} {'yes' if r['fits'] else 'no':>4} {r['seconds']:>7.0f}{mark}")


HEADER = (f"{'target':<11} {'top':<11} {'size':<5} {'pipeline':<8} {'mult':<6} "
          f"{'dsp/lut PEs':<9} {'LUTs':>7} {'FFs':>7} {'DSPs':>4} {'BRAMs':>5} "
          f"{'Fmax':>7} {'fits':>4} {'seconds':>7}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sections", default="ecp5,largest",
                   help="comma-separated: ecp5, largest (default both)")
    p.add_argument("--sizes", default="4,8,16", help="sizes of the ecp5 section")
    p.add_argument("--pipeline", default="mult2",
                   help="pipelined variant compared with 'none' (default mult2)")
    p.add_argument("--tops", default="array,accelerator")
    p.add_argument("--variants", default=None,
                   help="comma-separated pipelines of the ecp5 section (default: "
                        "--pipeline, then none)")
    p.add_argument("--targets", default=",".join(LARGEST))
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per tool run")
    p.add_argument("--accelerator-router", default="router1", choices=ROUTERS,
                   help="nextpnr router for the accelerator top (default router1: router2's "
                        "congestion negotiation stalls on it); arrays use the flow's default")
    p.add_argument("--seeds", default="1",
                   help="nextpnr seeds of the ecp5 section, e.g. 1,2,3: one place and route "
                        "says little about a large design; with several, the Fmax spread "
                        "(median, min, max) is printed per design")
    p.add_argument("--json", type=Path, default=Path("bench_fpga.json"))
    args = p.parse_args(argv)

    reports = []
    print(HEADER, flush=True)

    try:
        seeds = [int(v) for v in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds must be integers separated by commas, not {args.seeds!r}")

    def run(cfg: AcceleratorConfig, target: str, top: str, seed: int = 1) -> dict:
        t0 = time.perf_counter()
        router = args.accelerator_router if top == "accelerator" else None
        r = run_flow(cfg, target, top=top, timeout=args.timeout, router=router, seed=seed)
        r["bench_wall_s"] = round(time.perf_counter() - t0, 1)
        reports.append(r)
        print(_row(r), flush=True)
        args.json.write_text(json.dumps(reports, indent=2, sort_keys=True) + "\n")
        return r

    sections = args.sections.split(",")
    if "ecp5" in sections:
        # The pipelined variant first: it is the one the goals are about.
        variants = args.variants.split(",") if args.variants else [args.pipeline, "none"]
        spread = []
        for pipeline in variants:
            for top in args.tops.split(","):
                for n in (int(s) for s in args.sizes.split(",")):
                    got = [run(AcceleratorConfig(rows=n, cols=n, pipeline=pipeline),
                               "ecp5-85k", top, seed)["fmax_mhz"] for seed in seeds]
                    spread.append((top, n, pipeline, [f for f in got if f is not None]))
        if len(seeds) > 1:
            print(f"\nFmax over seeds {args.seeds} (MHz):", flush=True)
            for top, n, pipeline, fmaxes in spread:
                if fmaxes:
                    print(f"  {top:<11} {n}x{n} {pipeline:<8} median {median(fmaxes):6.1f}  "
                          f"min {min(fmaxes):6.1f}  max {max(fmaxes):6.1f}", flush=True)
    if "largest" in sections:
        print("\nlargest array that fits (array top, mult auto, pipeline "
              f"{args.pipeline}):", flush=True)
        best = {}
        for target in args.targets.split(","):
            if target not in TARGETS:
                p.error(f"unknown target {target!r}")
            for n in LARGEST[target]:
                r = run(AcceleratorConfig(rows=n, cols=n, pipeline=args.pipeline), target,
                        "array")
                if not r["fits"]:
                    break
                best[target] = r
        for target, r in best.items():
            fmax = f"{r['fmax_mhz']:.1f} MHz" if r["fmax_mhz"] else "no P&R (synthesis only)"
            print(f"  {target}: {r['config']['rows']}x{r['config']['cols']}, {fmax}, "
                  f"{r['mult_mapping']['dsp_pes']} PEs on DSPs, "
                  f"{r['mult_mapping']['lut_pes']} on LUTs", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
