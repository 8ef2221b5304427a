"""GEMM benchmark: roofline efficiency, model accuracy and simulation speed per shape.

Runs the GEMMs of one all-MiniLM-L6-v2 encoder layer at sequence length 128 (QKV, output
projection, both FFN matmuls, and per head QK^T and attention x V, alone and as a batch of
12 heads in one program) and the batch-1 decode GEMVs of SmolLM2-135M, each with random
int8 operands and requantization, through the compiler and runtime on a backend. For each
it reports the hardware cycle counter, the performance model's prediction and its error,
utilization, roofline efficiency (ideal / measured, ideal = max(MACs / PEs, compulsory
DRAM bytes / bus bytes)), and whether Y is bit-exact. Also reported: simulated cycles per
second inside the simulator (bare accelerator) and over the whole runtime path (compile,
DRAM image writes, run, read-back), measured in the same run.

    .venv/bin/python scripts/bench_gemm.py [--backend verilator] [--rows 16 --cols 16]
        [--bus-bits 128] [--only NAME ...] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

import llmchip
from llmchip.config import AcceleratorConfig
from llmchip.sw import golden, perf
from llmchip.sw.runtime import Requant

SHAPES = [
    ("minilm.qkv", 128, 384, 1152, 1),
    ("minilm.out", 128, 384, 384, 1),
    ("minilm.ffn1", 128, 384, 1536, 1),
    ("minilm.ffn2", 128, 1536, 384, 1),
    ("minilm.head.qk", 128, 32, 128, 1),
    ("minilm.head.av", 128, 128, 32, 1),
    ("minilm.heads.qk", 128, 32, 128, 12),
    ("minilm.heads.av", 128, 128, 32, 12),
    ("smollm2.q", 1, 576, 576, 1),
    ("smollm2.kv", 1, 576, 192, 1),
    ("smollm2.up", 1, 576, 1536, 1),
    ("smollm2.down", 1, 1536, 576, 1),
]


def run_shape(dev, rng, m: int, k: int, n: int, count: int) -> dict:
    """Run ``count`` independent m x k x n GEMMs as one program; return the row."""
    cfg = dev.config
    ops = []
    for _ in range(count):
        x = golden.random_operands(rng, (m, k))
        w = golden.random_operands(rng, (k, n))
        bias = rng.integers(-4096, 4096, size=n)
        rq = Requant.from_scale(rng.uniform(0.5, 2.0, size=n) / (64 * np.sqrt(k)),
                                int(rng.integers(-4, 4)))
        ops.append((x, dev.upload(w), w, bias, rq))
    t0 = time.perf_counter()
    with dev.batch() as b:
        outs = [b.linear(x, h, bias, rq) for x, h, _, bias, rq in ops]
    wall = time.perf_counter() - t0
    exact = all(np.array_equal(o.value, golden.requantize(
        golden.matmul(x, w), bias, rq.mult, rq.shift, rq.zero_point))
        for o, (x, _, w, bias, rq) in zip(outs, ops, strict=True))
    dev.reset()
    st = dev.last
    roof = perf.roofline(cfg, m, k, n)
    ideal = roof["ideal_cycles"] * count
    return {
        "m": m, "k": k, "n": n, "count": count, "bit_exact": exact,
        "cycles": st["cycles"], "model_cycles": st["model_cycles"],
        "model_error": st["model_cycles"] / st["cycles"] - 1,
        "ideal_cycles": ideal, "bound": roof["bound"],
        "roofline_efficiency": ideal / st["cycles"],
        "utilization": m * k * n * count / cfg.pes / st["cycles"],
        "array_busy": st["array_busy"], "dram_read_bytes": st["dram_read_bytes"],
        "dram_write_bytes": st["dram_write_bytes"], "schedule": st["schedules"][0],
        "instructions": st["instructions"], "sim_s": st.get("sim_s", 0.0), "wall_s": wall,
    }


def main(argv=None) -> int:
    """Run the benchmark; exit status 1 if any result is not bit-exact."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=("verilator", "icarus", "model"), default="verilator",
                   help="backend (default verilator)")
    p.add_argument("--rows", type=int, default=16, help="array rows (default 16)")
    p.add_argument("--cols", type=int, default=16, help="array columns (default 16)")
    p.add_argument("--bus-bits", type=int, default=128, help="AXI data width (default 128)")
    p.add_argument("--sp-rows", type=int, default=4096, help="scratchpad rows (default 4096)")
    p.add_argument("--acc-rows", type=int, default=512, help="accumulator rows (default 512)")
    p.add_argument("--dram-latency", type=int, default=8,
                   help="simulated DRAM read latency in cycles (default 8)")
    p.add_argument("--only", nargs="*", metavar="NAME",
                   help="run only these shapes: " + ", ".join(s[0] for s in SHAPES))
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)

    cfg = AcceleratorConfig(rows=args.rows, cols=args.cols, bus_bits=args.bus_bits,
                            sp_rows=args.sp_rows, acc_rows=args.acc_rows, param_rows=128)
    shapes = [s for s in SHAPES if not args.only or s[0] in args.only]
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    options = {"dram_bytes": 1 << 24}
    if args.backend != "model":
        options["read_latency"] = args.dram_latency
        log(f"building the {cfg.rows}x{cfg.cols} accelerator for {args.backend} (cached "
            f"after the first time; a 16x16 build takes several minutes)...")
    rng = np.random.default_rng(args.seed)
    rows = []
    t_open = time.perf_counter()
    with llmchip.open(cfg, args.backend, **options) as dev:
        open_s = time.perf_counter() - t_open
        for name, m, k, n, count in shapes:
            log(f"  {name} {m}x{k}x{n}" + (f" x{count}" if count > 1 else "") + " ...")
            row = run_shape(dev, rng, m, k, n, count)
            row["name"] = name
            rows.append(row)
    sim_cycles = sum(r["cycles"] for r in rows)
    sim_s = sum(r["sim_s"] for r in rows)
    wall_s = sum(r["wall_s"] for r in rows)
    errors = [abs(r["model_error"]) for r in rows]
    report = {
        "config": cfg.to_dict()["config"], "backend": args.backend,
        "dram_read_latency": args.dram_latency, "seed": args.seed, "shapes": rows,
        "open_s": open_s, "median_abs_model_error": statistics.median(errors),
        "max_abs_model_error": max(errors),
        "sim_cycles_per_s_bare": sim_cycles / sim_s if sim_s else None,
        "sim_cycles_per_s_runtime": sim_cycles / wall_s,
        "all_bit_exact": all(r["bit_exact"] for r in rows),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{cfg.rows}x{cfg.cols} accelerator, {cfg.bus_bits}-bit bus, {args.backend} "
              f"backend, DRAM read latency {args.dram_latency} cycles")
        print(f"{'shape':<17}{'m x k x n':>17}{'cycles':>10}{'model':>10}{'err':>8}"
              f"{'roofline':>10}{'util':>8}  bound    exact  schedule")
        for r in rows:
            dims = f"{r['m']}x{r['k']}x{r['n']}" + (f"*{r['count']}" if r["count"] > 1 else "")
            print(f"{r['name']:<17}{dims:>17}{r['cycles']:>10,}{r['model_cycles']:>10,}"
                  f"{r['model_error']:>+8.2%}{r['roofline_efficiency']:>10.1%}"
                  f"{r['utilization']:>8.1%}  {r['bound']:<8} {str(r['bit_exact']):<6} "
                  f"{r['schedule']}")
        print(f"model error: median {report['median_abs_model_error']:.2%}, max "
              f"{report['max_abs_model_error']:.2%}")
        if sim_s:
            print(f"simulated cycles/s: {report['sim_cycles_per_s_bare']:,.0f} inside the "
                  f"simulator, {report['sim_cycles_per_s_runtime']:,.0f} through the whole "
                  f"runtime path ({sim_cycles:,} cycles, {sim_s:.1f} s simulating, "
                  f"{wall_s:.1f} s in total)")
    return 0 if report["all_bit_exact"] else 1


if __name__ == "__main__":
    sys.exit(main())
