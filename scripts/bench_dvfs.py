"""Compare DVFS policies in closed loop on measured workloads, and measure the worst-case
overshoot above t_crit under a full power step.

For MiniLM serving (batches of 8 sentences) and SmolLM2 decoding (16 tokens per request),
each measured on the model backend of the 16x16 accelerator, at a normal and a hot
ambient, every policy serves the same Poisson request stream (one per seed); the table
gives medians over the seeds of energy, mean latency, EDP (energy x mean latency), peak
die temperature and throttled time. Then a full-load step with only the critical trip
armed (t_passive = t_hot = t_crit) is run at several ambients and sensor periods: the
worst time spent at or above t_crit and the peak temperature.

    python scripts/bench_dvfs.py [--duration S] [--seeds N] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from llmchip.sw import dvfs_sim as ds

POLICIES = ("performance", "ondemand", "schedutil", "conservative", "powercap")
WORKLOADS = (("minilm", 0.5), ("smollm2-decode", 0.5))
METRICS = ("energy_j", "mean_latency_s", "edp_js", "peak_die_c", "throttled_s",
           "avg_power_w")


def _median(runs: list[dict], key: str):
    vals = [r[key] for r in runs if r[key] is not None]
    return statistics.median(vals) if vals else None


def compare(duration: float, seeds: int, ambients: tuple[float, ...], log,
            t_control: float = 84.0) -> list[dict]:
    """Return one row per (workload, ambient, policy) with medians over the seeds."""
    rows = []
    for name, load in WORKLOADS:
        wl = ds.workload(name, log=log)
        for ambient in ambients:
            for policy in POLICIES:
                runs = []
                for seed in range(seeds):
                    t0 = time.perf_counter()
                    s = ds.simulate(wl, policy, ambient_c=ambient, duration_s=duration,
                                    load=load, seed=seed, t_control_c=t_control).summary
                    runs.append(s)
                    log(f"{name} {ambient:g} C {policy} seed {seed}: "
                        f"{time.perf_counter() - t0:.1f} s")
                row = {"workload": name, "ambient_c": ambient, "policy": policy,
                       "load": load, "seeds": seeds, "requests": runs[0]["requests"],
                       "completed_all": all(r["completed"] == r["requests"] for r in runs),
                       "thermtrip": any(r["thermtrip"] for r in runs)}
                row.update({k: _median(runs, k) for k in METRICS})
                reasons: dict[str, list[float]] = {}
                for r in runs:
                    for k, v in r["reason_s"].items():
                        reasons.setdefault(k, []).append(v)
                row["reason_s"] = {k: statistics.median(v + [0.0] * (seeds - len(v)))
                                   for k, v in reasons.items()}
                rows.append(row)
    return rows


def overshoot(log) -> dict:
    """Worst time at or above t_crit and peak temperature under a full-load step."""
    wl = ds.workload("power-step")
    worst = {"over_t_crit_s": 0.0}
    runs = []
    for sensor_us in (10, 50, 100, 250):
        p = ds.policy_params("performance", wl.config, t_passive=92000, t_hot=92000)
        for ambient in (84.0, 86.0, 88.0, 90.0, 91.0):
            s = ds.simulate(wl, params=p, ambient_c=ambient, duration_s=0.02,
                            sensor_us=sensor_us).summary
            r = {"sensor_us": sensor_us, "ambient_c": ambient, "thermtrip": s["thermtrip"],
                 "over_t_crit_s": s["over_t_crit_s"],
                 "over_t_crit_cycles": s["over_t_crit_cycles"],
                 "peak_mc": round(s["peak_die_c"] * 1000),
                 "overshoot_mc": round(s["peak_die_c"] * 1000) - p.t_crit}
            runs.append(r)
            if r["over_t_crit_s"] >= worst["over_t_crit_s"]:
                worst = r
    log(f"overshoot: {len(runs)} runs")
    return {"worst": worst, "runs": runs,
            "by_sensor": {us: max(r["overshoot_mc"] for r in runs if r["sensor_us"] == us)
                          for us in (10, 50, 100, 250)}}


def main(argv=None) -> int:
    """Run the comparison and the overshoot study; print a table or JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=2.0,
                    help="seconds of requests per run (default 2)")
    ap.add_argument("--seeds", type=int, default=3, help="arrival seeds (default 3)")
    ap.add_argument("--ambients", type=float, nargs="+", default=[45.0, 80.0],
                    help="ambient temperatures in C (default 45 80)")
    ap.add_argument("--t-control", type=float, default=84.0, metavar="C",
                    help="powercap's control temperature (default 84: just below the "
                         "85 C passive trip, so the PID acts before the step-wise cap)")
    ap.add_argument("--json", action="store_true", help="print one JSON document")
    args = ap.parse_args(argv)
    log = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr))
    t0 = time.perf_counter()
    rows = compare(args.duration, args.seeds, tuple(args.ambients), log, args.t_control)
    over = overshoot(log)
    doc = {"duration_s": args.duration, "seeds": args.seeds, "t_control_c": args.t_control,
           "rows": rows,
           "overshoot": over, "wall_s": time.perf_counter() - t0}
    if args.json:
        print(json.dumps(doc, indent=2))
        return 0
    print(f"DVFS policies, closed loop ({args.duration:g} s of requests, median of "
          f"{args.seeds} seeds, Poisson arrivals)")
    print(f"{'workload':<15}{'amb C':>6} {'policy':<13}{'energy J':>9}{'avg W':>7}"
          f"{'lat ms':>9}{'EDP mJs':>11}{'peak C':>8}{'thr s':>7}  reasons (s)")
    for r in rows:
        lat = r["mean_latency_s"]
        edp = r["edp_js"]
        reasons = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["reason_s"].items())
                            if v >= 0.005)
        print(f"{r['workload']:<15}{r['ambient_c']:>6g} {r['policy']:<13}"
              f"{r['energy_j']:>9.3f}{r['avg_power_w']:>7.2f}"
              f"{lat * 1e3 if lat is not None else float('nan'):>9.2f}"
              f"{edp * 1e3 if edp is not None else float('nan'):>11.3f}"
              f"{r['peak_die_c']:>8.2f}{r['throttled_s']:>7.2f}  {reasons}"
              + ("" if r["completed_all"] else "  (unfinished)")
              + ("  TRIP" if r["thermtrip"] else ""))
    w = over["worst"]
    print(f"full-load step, only t_crit armed: worst {w['over_t_crit_s'] * 1e6:.0f} us "
          f"({w['over_t_crit_cycles']:,} cycles at 800 MHz) at or above t_crit, peak "
          f"{w['peak_mc']} mC (+{w['overshoot_mc']} mC) with a {w['sensor_us']} us sensor "
          f"at {w['ambient_c']:g} C ambient")
    print("worst overshoot by sensor period: " + ", ".join(
        f"{us} us: +{mc} mC" for us, mc in over["by_sensor"].items()))
    print(f"wall {doc['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
