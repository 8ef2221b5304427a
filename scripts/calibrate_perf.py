"""Fit the performance model's pipeline constants to the RTL's cycle counters.

Runs a suite of GEMM programs (several shapes, and for each several schedules) on an RTL
backend, records the hardware's PERF_BUSY, then adjusts the constants of
:class:`llmchip.sw.perf.Timing` one at a time (coordinate descent, a few rounds) to
minimize the largest relative error, and prints the fitted constants with the error of
every program before and after. The memory's own latencies stay fixed (they are the
simulated DRAM's parameters).

    .venv/bin/python scripts/calibrate_perf.py [--rows 4 --cols 4] [--sim verilator]
        [--save data.json] [--load data.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

import numpy as np

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden, perf
from llmchip.sw.compile import (
    GemmOp,
    Schedule,
    candidate_schedules,
    compile_gemm,
    pack_params,
    pack_weights,
    packed_weight_bytes,
    param_bytes,
)

SHAPES = [(1, 1, 1), (5, 7, 9), (33, 20, 17), (1, 100, 40), (64, 64, 64), (1, 64, 64),
          (128, 32, 32), (16, 128, 16), (3, 300, 5), (100, 16, 48), (1, 256, 8), (40, 40, 40)]
FIT = ("rd_first", "rd_done", "rd_gap", "wr_first", "wr_done", "load_issue", "w_first",
       "a_first", "commit", "st_first", "fetch_issue", "dispatch", "take")


def _align(x: int) -> int:
    return (x + 63) // 64 * 64


def collect(cfg: AcceleratorConfig, sim: str, per_shape: int, seed: int) -> list[dict]:
    """Run the suite on the RTL; return one record per program."""
    from llmchip.tb.session import RtlSession

    rng = np.random.default_rng(seed)
    records = []
    with RtlSession(cfg, sim, dram_bytes=1 << 24) as s:
        for m, k, n in SHAPES:
            cands = candidate_schedules(cfg, m, k, n)
            picks = [cands[i] for i in sorted(set(np.linspace(0, len(cands) - 1, per_shape)
                                                  .astype(int)))]
            x = golden.random_operands(rng, (m, k))
            w = golden.random_operands(rng, (k, n))
            xa, wa = 0, _align(m * k)
            pa = _align(wa + packed_weight_bytes(cfg, k, n))
            ya = _align(pa + param_bytes(cfg, n))
            prog_at = _align(ya + m * n)
            s.write(xa, x.astype(np.int8).tobytes())
            s.write(wa, pack_weights(cfg, w))
            s.write(pa, pack_params(cfg, 0, 1 << 20, 26, n))
            for sch in picks:
                prog = compile_gemm(cfg, GemmOp(m, k, n, xa, wa, pa, ya), sch)
                s.write(prog_at, prog.image())
                res = s.run(prog_at, len(prog.insns), limit_cycles=10_000_000)
                records.append({"shape": [m, k, n], "schedule": dataclasses.asdict(sch),
                                "insns": prog.insns, "cycles": res["PERF_BUSY"],
                                "array_busy": res["PERF_ARRAY_BUSY"]})
                print(f"  {m}x{k}x{n} {sch.describe()}: {res['PERF_BUSY']} cycles",
                      file=sys.stderr)
    return records


def errors(cfg: AcceleratorConfig, records: list[dict], timing: perf.Timing) -> np.ndarray:
    out = []
    for r in records:
        pred = perf.simulate(r["insns"], cfg, timing).cycles
        out.append(pred / r["cycles"] - 1)
    return np.array(out)


def fit(cfg: AcceleratorConfig, records: list[dict], start: perf.Timing) -> perf.Timing:
    """Coordinate descent on the FIT constants, minimizing (max, mean) |error|."""
    best = start

    def score(t):
        e = np.abs(errors(cfg, records, t))
        return (round(float(e.max()), 4), float(e.mean()))

    best_score = score(best)
    for _ in range(3):
        improved = False
        for name in FIT:
            cur = getattr(best, name)
            for v in range(max(0, cur - 4), cur + 5):
                if v == cur:
                    continue
                t = dataclasses.replace(best, **{name: v})
                sc = score(t)
                if sc < best_score:
                    best, best_score, improved = t, sc, True
        if not improved:
            break
    return best


def main(argv=None) -> int:
    """Collect (or load) RTL measurements and fit the timing constants."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4)
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--bus-bits", type=int, default=128)
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    p.add_argument("--per-shape", type=int, default=3, help="schedules per shape (default 3)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--shapes", nargs="*", metavar="MxKxN", help="shapes to run (default: a "
                   "built-in suite of small shapes)")
    p.add_argument("--save", help="write the measurements to this JSON file")
    p.add_argument("--load", help="read measurements from this JSON file instead of running")
    args = p.parse_args(argv)
    big = args.rows * args.cols >= 64
    cfg = AcceleratorConfig(rows=args.rows, cols=args.cols, bus_bits=args.bus_bits,
                            sp_rows=4096 if big else 256, acc_rows=512 if big else 64,
                            param_rows=128 if big else 8)
    if args.shapes:
        global SHAPES
        SHAPES = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    if args.load:
        data = json.loads(open(args.load).read())
        cfg = AcceleratorConfig.from_dict(data["config"])
        records = data["records"]
    else:
        records = collect(cfg, args.sim, args.per_shape, args.seed)
        if args.save:
            with open(args.save, "w") as f:
                json.dump({"config": dataclasses.asdict(cfg), "records": records}, f)
    before = errors(cfg, records, perf.Timing())
    fitted = fit(cfg, records, perf.Timing())
    after = errors(cfg, records, fitted)
    print(f"{len(records)} programs on {cfg.rows}x{cfg.cols}")
    for r, b, a in zip(records, before, after, strict=True):
        sch = Schedule(**r["schedule"])
        print(f"  {'x'.join(map(str, r['shape'])):>12} {sch.describe():<34} {r['cycles']:>8} "
              f"before {b:+.3f} after {a:+.3f}")
    print(f"max |error|: before {np.abs(before).max():.3%}, after {np.abs(after).max():.3%}; "
          f"mean before {np.abs(before).mean():.3%}, after {np.abs(after).mean():.3%}")
    changed = {f.name: getattr(fitted, f.name) for f in dataclasses.fields(fitted)
               if getattr(fitted, f.name) != getattr(perf.Timing(), f.name)}
    print("fitted constants (changed):", changed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
