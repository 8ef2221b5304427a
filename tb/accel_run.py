"""Run programs on the generated accelerator under cocotb (AxiRam DRAM, AxiLite CSRs)."""

from __future__ import annotations

import numpy as np

from llmchip.config import AcceleratorConfig
from llmchip.sw.compile import GemmPlan

from .sim import Build, build, run_cocotb

__all__ = ["build_accelerator", "gemm_job", "run_job", "read_region"]


def build_accelerator(config: AcceleratorConfig, sim: str) -> Build:
    """Compile (or fetch from the cache) the accelerator top for ``sim``."""
    return build(config, sim, top="accelerator")


def gemm_job(plan: GemmPlan, *, seed: int = 0, pause: float = 0.0, limit: int | None = None,
             error_regions=(), extra_phases=()) -> dict:
    """A job that runs ``plan`` once (then any ``extra_phases``) and reads Y back."""
    n = len(plan.program)
    limit = limit or 200 * n + 50 * plan.macs // plan.config.pes + 20000
    return {
        "seed": int(seed), "pause": float(pause), "dram_size": plan.dram_size,
        "dram_base": 0, "dram_window": plan.dram_size,
        "iq_base": plan.prog_addr, "iq_size": n + 64,
        "image": [[a, d.hex()] for a, d in plan.image.regions.items()],
        "error_regions": [list(r) for r in error_regions],
        "phases": [{"kind": "run", "tail": n, "limit": limit,
                    "read": [[plan.y_addr, plan.m * plan.n]]}, *extra_phases],
    }


def run_job(b: Build, job: dict) -> dict:
    """Run a job on build ``b``; return the per-phase snapshots."""
    return run_cocotb(b, "llmchip.tb.cocotb_accel", job)


def read_region(snapshot: dict, addr: int, shape) -> np.ndarray:
    """Return an int8 array read back from DRAM in a phase snapshot."""
    raw = bytes.fromhex(snapshot["regions"][str(addr)])
    return np.frombuffer(raw, dtype=np.int8).reshape(shape).astype(np.int64)
