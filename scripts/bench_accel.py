"""Accelerator utilization benchmark: one GEMM through the whole generated accelerator.

Runs ``Y = requant(X @ W + b)`` (default 128x384 by 384x1536, a MiniLM FFN layer at
sequence length 128) on a 16x16 array with a 128-bit AXI bus, under cocotb with AxiRam as
DRAM, and reports the hardware performance counters: cycles, cycles with the array busy,
stalls by cause and DMA traffic. Utilization is array-busy cycles over program cycles,
which shows whether loads and stores overlap compute.

    .venv/bin/python scripts/bench_accel.py [--m 128 --k 384 --n 1536] [--sim verilator]
        [--rows 16 --cols 16 --bus-bits 128] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from llmchip.config import AcceleratorConfig
from llmchip.sw import golden
from llmchip.sw.compile import plan_gemm
from llmchip.tb.accel_run import build_accelerator, gemm_job, read_region, run_job


def main(argv=None) -> int:
    """Run the benchmark; exit status 1 if the result is not bit-exact."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--m", type=int, default=128, help="rows of X (default 128)")
    p.add_argument("--k", type=int, default=384, help="columns of X (default 384)")
    p.add_argument("--n", type=int, default=1536, help="columns of W (default 1536)")
    p.add_argument("--rows", type=int, default=16, help="array rows (default 16)")
    p.add_argument("--cols", type=int, default=16, help="array columns (default 16)")
    p.add_argument("--bus-bits", type=int, default=128, help="AXI data width (default 128)")
    p.add_argument("--sp-rows", type=int, default=4096, help="scratchpad rows (default 4096)")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default verilator)")
    p.add_argument("--pause", type=float, default=0.0,
                   help="probability of back-pressure per AXI channel and cycle (default 0)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)

    cfg = AcceleratorConfig(rows=args.rows, cols=args.cols, bus_bits=args.bus_bits,
                            sp_rows=args.sp_rows, acc_rows=512, param_rows=128)
    rng = np.random.default_rng(args.seed)
    x = golden.random_operands(rng, (args.m, args.k))
    w = golden.random_operands(rng, (args.k, args.n))
    bias = rng.integers(-5000, 5000, size=args.n)
    mult, shift = golden.quantize_multiplier(rng.uniform(2e-4, 2e-3, size=args.n))
    plan = plan_gemm(cfg, x, w, bias, mult, shift, zero_point=-3)
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    log(f"building the {cfg.rows}x{cfg.cols} accelerator for {args.sim} (cached after the "
        f"first time)...")
    t0 = time.perf_counter()
    b = build_accelerator(cfg, args.sim)
    build_s = time.perf_counter() - t0
    log(f"running {len(plan.program)} instructions ({plan.schedule} schedule)...")
    t0 = time.perf_counter()
    res = run_job(b, gemm_job(plan, seed=args.seed, pause=args.pause))
    wall = time.perf_counter() - t0
    ph = res["phases"][0]
    y = read_region(ph, plan.y_addr, (args.m, args.n))
    exact = bool(np.array_equal(y, plan.expected))
    busy, array = ph["PERF_BUSY"], ph["PERF_ARRAY_BUSY"]
    ideal = -(-plan.macs // cfg.pes)
    report = {
        "config": cfg.to_dict()["config"], "sim": args.sim, "shape": [args.m, args.k, args.n],
        "schedule": plan.schedule, "instructions": len(plan.program), "bit_exact": exact,
        "cycles": busy, "array_busy_cycles": array, "utilization": array / busy,
        "ideal_cycles": ideal, "efficiency_vs_ideal": ideal / busy,
        "stall_weights": ph["PERF_STALL_WEIGHTS"], "stall_operand": ph["PERF_STALL_OPERAND"],
        "stall_token": ph["PERF_STALL_TOKEN"], "dma_read_bytes": ph["PERF_DMA_RD_BYTES"],
        "dma_write_bytes": ph["PERF_DMA_WR_BYTES"], "macs_counted": ph["PERF_MACS"],
        "build_s": round(build_s, 1), "build_cached": b.cached, "wall_s": round(wall, 1),
        "sim_cycles_per_s": round(busy / wall),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for k, v in report.items():
            print(f"  {k:<20} {v:.4f}" if isinstance(v, float) else f"  {k:<20} {v}")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
