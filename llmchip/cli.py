"""The ``llmchip`` command line: generate hardware and run it in simulation.

Every subcommand prints a short human summary, or one JSON document with ``--json``.
Bad input exits with status 2 and a message naming the bad value; a failed result check
exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from .config import DATAFLOWS, MULTS, PIPELINES, AcceleratorConfig

__all__ = ["main"]

#: Subcommands implemented in ``llmchip/cli_<name>.py``.
_MODULE_COMMANDS: tuple[str, ...] = ("fpga", "dvfs", "sweep")

_DATAFLOW_NAMES = {"ws": "weight-stationary", "os": "output-stationary"}


class _UsageError(Exception):
    """Bad input from the command line (exit status 2)."""


def _add_config_args(p: argparse.ArgumentParser, rows: int = 8, cols: int = 8,
                     sp_rows: int = 1024, param_rows: int = 64) -> None:
    g = p.add_argument_group("array configuration")
    g.add_argument("--rows", type=int, default=rows, metavar="R",
                   help=f"PE rows: the reduction (K) size of one weight tile in WS, the "
                        f"output rows of one tile in OS; 1-256 (default {rows})")
    g.add_argument("--cols", type=int, default=cols, metavar="C",
                   help=f"PE columns: output columns (N) per tile; 1-256 (default {cols})")
    g.add_argument("--dataflow", choices=DATAFLOWS, default="ws",
                   help="ws: weight-stationary with double-buffered weights (default); "
                        "os: output-stationary")
    g.add_argument("--in-width", type=int, default=8, metavar="BITS",
                   help="signed operand width in bits, 2-16 (default 8: int8)")
    g.add_argument("--acc-width", type=int, default=32, metavar="BITS",
                   help="signed accumulator width in bits, 2*in-width to 64; sums wrap "
                        "around (default 32: int32)")
    g.add_argument("--mult", choices=MULTS, default="auto",
                   help="PE multipliers: auto (hard multipliers; the FPGA flow adds LUT "
                        "multipliers when the part runs out), dsp, lut, hybrid (--dsp-pes on "
                        "hard multipliers) or packed (two columns per wide multiply, ws)")
    g.add_argument("--dsp-pes", type=int, default=0, metavar="N",
                   help="with --mult hybrid: PEs on hard multipliers (default 0)")
    g.add_argument("--pipeline", choices=PIPELINES, default="none",
                   help="PE pipelining: mult / mult2 (products registered once / "
                        "twice), acc (split accumulation, ws) or a product option +acc; "
                        "each register stage adds a cycle of latency (default none)")
    g = p.add_argument_group("memories and bus (accelerator)")
    g.add_argument("--sp-rows", type=int, default=sp_rows, metavar="N",
                   help=f"scratchpad rows of max(rows, cols) bytes, power of two "
                        f"(default {sp_rows})")
    g.add_argument("--sp-banks", type=int, default=2, metavar="N",
                   help="scratchpad banks, power of two (default 2: double buffering)")
    g.add_argument("--acc-rows", type=int, default=512, metavar="N",
                   help="accumulator rows of cols x int32, power of two (default 512)")
    g.add_argument("--param-rows", type=int, default=param_rows, metavar="N",
                   help=f"rows of per-channel requantization parameters (default "
                        f"{param_rows})")
    g.add_argument("--bus-bits", type=int, default=128, metavar="BITS",
                   help="AXI4 data width of the DMA: 64, 128, 256 or 512 (default 128)")
    g.add_argument("--dvfs", action="store_true",
                   help="include the DVFS/thermal controller (registers at 0x200, sensor, "
                        "regulator and PLL ports, clock enable; see docs/dvfs.md)")
    g.add_argument("--dvfs-tick-cycles", type=int, default=800, metavar="N",
                   help="clock cycles per DVFS controller tick (default 800: 1 us at "
                        "800 MHz)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document instead of the human summary")


def _config(args: argparse.Namespace) -> AcceleratorConfig:
    try:
        return AcceleratorConfig(rows=args.rows, cols=args.cols, dataflow=args.dataflow,
                                 in_width=args.in_width, acc_width=args.acc_width,
                                 sp_rows=args.sp_rows, sp_banks=args.sp_banks,
                                 acc_rows=args.acc_rows, param_rows=args.param_rows,
                                 bus_bits=args.bus_bits, mult=args.mult,
                                 dsp_pes=args.dsp_pes, pipeline=args.pipeline,
                                 dvfs=args.dvfs, dvfs_tick_cycles=args.dvfs_tick_cycles)
    except (TypeError, ValueError) as exc:
        raise _UsageError(str(exc)) from None


def _describe(cfg: AcceleratorConfig) -> list[tuple[str, str]]:
    iw, aw = cfg.in_width, cfg.acc_width
    interval = "weight load" if cfg.dataflow == "ws" else "result drain"
    return [
        ("array", f"{cfg.rows}x{cfg.cols} {_DATAFLOW_NAMES[cfg.dataflow]}"),
        ("PEs", f"{cfg.pes} (int{iw} x int{iw} -> int{aw}, wraparound)"),
        ("latency", f"{cfg.latency} cycles (rows + cols"
                    f"{f' + {cfg.pipe_stages} pipeline' if cfg.pipe_stages else ''}) from input "
                    f"beat to output row"),
        ("tile interval", f"{cfg.tile_interval} cycles per tile at least ({interval})"),
        ("ports", f"a_in {cfg.rows} x int{iw} + last, w_in {cfg.cols} x int{iw}, "
                  f"y_out {cfg.cols} x int{aw} + last"),
    ]


def _print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(title)
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def cmd_generate(args: argparse.Namespace) -> int:
    """Write the Verilog and params.json of one configuration."""
    from .rtl.generate import generate

    cfg = _config(args)
    try:
        gen = generate(cfg, args.out, top=args.top)
    except ValueError as exc:   # a config the accelerator does not support
        raise _UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(gen.summary(), indent=2))
        return 0
    extra = []
    if args.top == "accelerator":
        d = cfg.to_dict()["derived"]
        extra = [("memories", f"scratchpad {d['sp_bytes'] // 1024} KiB in {cfg.sp_banks} "
                              f"banks, accumulator {d['acc_bytes'] // 1024} KiB, "
                              f"{cfg.param_rows} parameter rows"),
                 ("bus", f"AXI4 {cfg.bus_bits}-bit DMA (bus__*), AXI4-Lite CSRs (csr__*), "
                         f"irq")]
        if cfg.dvfs:
            extra.append(("dvfs", f"controller at 0x200-0x2FC, platform ports dvfs__*, "
                                  f"tick = {cfg.dvfs_tick_cycles} cycles"))
    _print_table(f"llmchip generate ({args.top})", _describe(cfg) + extra + [
        ("verilog", f"{gen.verilog} ({gen.lines} lines, {gen.seconds:.2f} s, "
                    f"sha256 {gen.sha256[:12]})"),
        ("params", str(gen.params)),
        ("top module", gen.module),
    ])
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate an array, run a random int8 matmul on it in simulation, check it."""
    from .rtl.generate import generate
    from .sw import golden
    from .sw.tiling import tile_matmul
    from .tb.sim import build, run_array
    from .tb.streams import expected_last_output_cycle

    cfg = _config(args)
    for name in ("m", "k", "n"):
        if getattr(args, name) < 1:
            raise _UsageError(f"--{name} must be >= 1, not {getattr(args, name)}")
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    rng = np.random.default_rng(seed)
    x = golden.random_operands(rng, (args.m, args.k), cfg.in_width)
    w = golden.random_operands(rng, (args.k, args.n), cfg.in_width)
    plan = tile_matmul(cfg, x, w)

    gen = generate(cfg, args.out)
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    log(f"building the {cfg.rows}x{cfg.cols} array for {args.sim} (cached after the first "
        f"time)...")
    b = build(cfg, args.sim)
    t0 = time.perf_counter()
    res = run_array(cfg, plan.tiles, args.sim, seed=seed, b=b)
    wall = time.perf_counter() - t0
    y = plan.assemble([lanes for _, lanes, _ in res["outputs"]])
    ref = golden.matmul(x, w, in_width=cfg.in_width, acc_width=cfg.acc_width)
    exact = bool(np.array_equal(y, ref))
    cycles = res["outputs"][-1][0] + 1
    ideal = -(-plan.macs // cfg.pes)
    report = {
        "config": cfg.to_dict()["config"], "sim": args.sim, "seed": seed,
        "shape": {"m": args.m, "k": args.k, "n": args.n}, "tiles": len(plan.tiles),
        "bit_exact": exact, "results": int(y.size),
        "mismatches": int(np.count_nonzero(y != ref)),
        "cycles": cycles, "formula_cycles": expected_last_output_cycle(cfg, plan.tile_lengths)
        + 1, "first_result_cycle": res["outputs"][0][0], "ideal_cycles": ideal,
        "utilization": plan.macs / (cycles * cfg.pes), "macs": plan.macs,
        "build_s": b.seconds, "build_cached": b.cached, "sim_wall_s": wall,
        "verilog": str(gen.verilog),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(f"llmchip demo (seed {seed}; replay with --seed {seed})", [
            ("array", _describe(cfg)[0][1] + f" on {args.sim}"),
            ("verilog", f"{gen.verilog} ({gen.lines} lines)"),
            ("build", f"{b.seconds:.1f} s" + (" (cached)" if b.cached else "")),
            ("matmul", f"X {args.m}x{args.k} @ W {args.k}x{args.n} int{cfg.in_width} -> "
                       f"{len(plan.tiles)} tiles"),
            ("cycles", f"{cycles} simulated, {report['formula_cycles']} by the latency "
                       f"formulas; first result row in cycle {report['first_result_cycle']}"),
            ("utilization", f"{report['utilization']:.1%} of {cfg.pes} PEs "
                            f"({plan.macs} MACs, ideal {ideal} cycles)"),
            ("simulation", f"{wall:.2f} s wall"),
            ("check", ("bit-exact: " if exact else "MISMATCH: ")
             + f"{y.size - report['mismatches']}/{y.size} results equal the NumPy golden "
               f"model"),
        ])
    return 0 if exact and cycles == report["formula_cycles"] else 1


def cmd_gemm(args: argparse.Namespace) -> int:
    """Run a random int8 GEMM with requantization through compiler and runtime; check it."""
    from . import open as open_device
    from .sw import golden, perf
    from .sw.runtime import Requant

    cfg = _config(args)
    if cfg.dataflow != "ws":
        raise _UsageError("the accelerator is weight-stationary: --dataflow must be ws")
    for name in ("m", "k", "n"):
        if not 1 <= getattr(args, name) <= 1 << 16:
            raise _UsageError(f"--{name} must be between 1 and 65536, not "
                              f"{getattr(args, name)}")
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    rng = np.random.default_rng(seed)
    x = golden.random_operands(rng, (args.m, args.k))
    w = golden.random_operands(rng, (args.k, args.n))
    bias = rng.integers(-(1 << 14), 1 << 14, size=args.n)
    # Scales that keep typical outputs inside int8: about 1 / (64 * sqrt(K)).
    scale = rng.uniform(0.5, 2.0, size=args.n) / (64 * np.sqrt(args.k))
    rq = Requant.from_scale(scale, zero_point=int(rng.integers(-8, 8)))
    relu = bool(args.relu)
    need = args.m * args.k + args.k * args.n * 2 + args.m * args.n + (1 << 20)
    options = {"dram_bytes": max(1 << 22, 1 << (2 * need).bit_length())}
    if args.backend != "model":
        options["read_latency"] = args.dram_latency
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    log(f"{args.m}x{args.k}x{args.n} GEMM on the {cfg.rows}x{cfg.cols} accelerator, "
        f"{args.backend} backend" + (" (the first run of a configuration compiles the "
                                     "simulator, several minutes for 16x16)"
                                     if args.backend != "model" else ""))
    t0 = time.perf_counter()
    with open_device(cfg, args.backend, **options) as dev:
        y = dev.linear(x, w, bias, rq, relu=relu)
        stats = dict(dev.last)
    wall = time.perf_counter() - t0
    ref = golden.requantize(golden.matmul(x, w), bias, rq.mult, rq.shift, rq.zero_point, relu)
    exact = bool(np.array_equal(y, ref))
    roof = perf.roofline(cfg, args.m, args.k, args.n)
    report = {
        "config": cfg.to_dict()["config"], "backend": args.backend, "seed": seed,
        "shape": {"m": args.m, "k": args.k, "n": args.n}, "bit_exact": exact,
        "mismatches": int(np.count_nonzero(y != ref)),
        "cycles": int(stats["cycles"]), "model_cycles": int(stats["model_cycles"]),
        "model_error": stats["model_cycles"] / stats["cycles"] - 1,
        "macs": args.m * args.k * args.n, "array_busy": int(stats["array_busy"]),
        "utilization": stats["utilization"],
        "roofline_efficiency": stats["roofline_efficiency"],
        "ideal_cycles": roof["ideal_cycles"], "bound": roof["bound"],
        "dram_bytes": int(stats["dram_read_bytes"] + stats["dram_write_bytes"]),
        "dram_read_bytes": int(stats["dram_read_bytes"]),
        "dram_write_bytes": int(stats["dram_write_bytes"]),
        "compulsory_bytes": perf.compulsory_bytes(cfg, args.m, args.k, args.n),
        "schedule": stats["schedules"][0], "instructions": stats["instructions"],
        "wall_s": wall,
    }
    if args.backend != "model":
        report["sim_s"] = stats.get("sim_s", 0.0)
        report["sim_cycles_per_s"] = stats["cycles"] / stats["sim_s"] if stats.get("sim_s") \
            else None
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(f"llmchip gemm (seed {seed}; replay with --seed {seed})", [
            ("accelerator", f"{cfg.rows}x{cfg.cols}, {cfg.bus_bits}-bit bus, "
                            f"{args.backend} backend"),
            ("gemm", f"Y = requant(X {args.m}x{args.k} @ W {args.k}x{args.n} + bias)"
                     + (" with ReLU" if relu else "")),
            ("schedule", f"{report['schedule']} ({report['instructions']} instructions)"),
            ("cycles", f"{report['cycles']:,} (performance model {report['model_cycles']:,},"
                       f" {report['model_error']:+.2%})"),
            ("utilization", f"{report['utilization']:.1%} of {cfg.pes} PEs"),
            ("roofline", f"{report['roofline_efficiency']:.1%} of ideal "
                         f"{report['ideal_cycles']:,} cycles ({report['bound']}-bound)"),
            ("DRAM", f"{report['dram_read_bytes']:,} B read, {report['dram_write_bytes']:,}"
                     f" B written (compulsory {report['compulsory_bytes']:,} B)"),
            ("wall", f"{wall:.2f} s"),
            ("check", ("bit-exact: " if exact else "MISMATCH: ")
             + f"{y.size - report['mismatches']}/{y.size} outputs equal the golden model"),
        ])
    return 0 if exact else 1


def _progress(args: argparse.Namespace):
    """A status printer on stderr (silent with --json)."""
    if args.json:
        return lambda msg: None
    return lambda msg: print(f"llmchip run {args.model}: {msg}", file=sys.stderr)


def _run_config(args: argparse.Namespace) -> AcceleratorConfig:
    cfg = _config(args)
    if cfg.dataflow != "ws" or cfg.in_width != 8 or cfg.acc_width != 32:
        raise _UsageError("the models run on the int8 weight-stationary accelerator: keep "
                          "--dataflow ws --in-width 8 --acc-width 32")
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    """Run a packaged transformer in float and in int8 on a backend; compare them."""
    from .sw.models import run as runner

    cfg = _run_config(args)
    log = _progress(args)
    if args.layers is not None and args.layers < 1:
        raise _UsageError(f"--layers must be >= 1, not {args.layers}")
    try:
        if args.model == "minilm":
            from .sw.models.minilm import SAMPLE_SENTENCES
            texts = args.text or list(SAMPLE_SENTENCES)
            if args.seq_len is not None and not 3 <= args.seq_len <= 512:
                raise _UsageError(f"--seq-len must be between 3 and 512, not {args.seq_len}")
            res = runner.run_minilm(texts, backend=args.backend, config=cfg,
                                    scheme=args.scheme, seq_len=args.seq_len,
                                    n_layers=args.layers, report_errors=args.layer_errors,
                                    log=log)
            if args.rtl_check:
                log("checking one encoder layer on verilator against the model backend")
                res["rtl_check"] = runner.rtl_layer_check(texts[:2], log=log)
        else:
            if args.max_new_tokens < 0:
                raise _UsageError(f"--max-new-tokens must be >= 0, not {args.max_new_tokens}")
            stream = None
            if not args.json:
                from .sw.models.smollm2 import SmolLM2
                model = SmolLM2.load(n_layers=args.layers)

                def stream(token: int) -> None:     # the int8 continuation as it grows
                    sys.stderr.write(model.decode([token]))
                    sys.stderr.flush()
            res = runner.run_smollm2(args.prompt, args.max_new_tokens, backend=args.backend,
                                     config=cfg, scheme=args.scheme, chat=not args.raw,
                                     n_layers=args.layers, report_errors=args.layer_errors,
                                     on_token=stream, log=log)
            if stream is not None:
                sys.stderr.write("\n")
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(res, indent=2))
    elif args.model == "minilm":
        _print_minilm(res)
    else:
        _print_smollm2(res)
    ok = res.get("rtl_check", {}).get("bit_exact", True)
    return 0 if ok else 1


def _energy_line(res: dict) -> str:
    e = res["energy"]
    return (f"{e['total_uj']:.1f} uJ dynamic at {e['mhz']} MHz / {e['mv']} mV "
            f"({e['seconds'] * 1e3:.2f} ms, {e['avg_power_w']:.2f} W; DRAM "
            f"{e['parts_uj']['dram'] / max(e['total_uj'], 1e-30):.0%})")


def _print_layer_errors(res: dict, worst: int = 8) -> None:
    if "layer_errors" not in res:
        return
    print(f"layer errors (relative to float on the same input, worst {worst}):")
    for r in res["layer_errors"][:worst]:
        print(f"  {r['layer']:<22} {r['rel_error']:.4f}  ({r['calls']} calls)")


def _print_minilm(res: dict) -> None:
    rows = [("model", f"{res['model']} ({res['layers']} layers), {res['scheme']}"),
            ("backend", f"{res['backend']}, {res['config']['rows']}x{res['config']['cols']} "
                        f"array")]
    for i, t in enumerate(res["texts"]):
        text = t["text"] if len(t["text"]) <= 60 else t["text"][:57] + "..."
        rows.append((f"text {i}", f"cosine {t['cosine']:.4f} to float  ({t['tokens']} tokens)"
                                  f"  {text}"))
    rows.append(("cosine", f"min {res['min_cosine']:.4f}, mean {res['mean_cosine']:.4f}"))
    if "spearman" in res:
        rows.append(("ranking", f"Spearman {res['spearman']:.4f} between the float and int8 "
                                f"pairwise similarities"))
    rows += [("cycles", f"{res['cycles']:,} on the device ({res['runs']} runs)"),
             ("utilization", f"{res['utilization']:.1%} of the PEs, "
                             f"{res['roofline_efficiency']:.1%} of the roofline"),
             ("energy", _energy_line(res)),
             ("wall", f"{res['wall_s']:.1f} s")]
    if "rtl_check" in res:
        c = res["rtl_check"]
        rows.append(("RTL check", ("bit-exact" if c["bit_exact"] else "MISMATCH")
                     + f": one encoder layer at {c['seq_len']} tokens on {c['backend']} "
                       f"({c['config']}) vs the model backend; {c['rtl_cycles']:,} cycles "
                       f"(model {c['model_cycles']:,}), utilization {c['utilization']:.1%}, "
                       f"{c['sim_cycles_per_s']:,.0f} simulated cycles/s"))
    _print_table("llmchip run minilm", rows)
    _print_layer_errors(res)
    n = len(res["texts"])
    if 1 < n <= 8:
        f, q = np.array(res["similarity"]["float"]), np.array(res["similarity"]["int8"])
        print("pairwise similarity (float / int8):")
        for i in range(n):
            print("  " + "  ".join(f"{f[i, j]:+.2f}/{q[i, j]:+.2f}" for j in range(n)))


def _print_smollm2(res: dict) -> None:
    dec = res["decode_cycles_per_token"]
    _print_table("llmchip run smollm2", [
        ("model", f"{res['model']} ({res['layers']} layers), {res['scheme']}"),
        ("backend", f"{res['backend']}, {res['config']['rows']}x{res['config']['cols']} "
                    f"array"),
        ("prompt", f"{res['prompt_tokens']} tokens"),
        ("int8 text", repr(res["text"])),
        ("int8 ids", str(res["token_ids"])),
        ("float text", repr(res["float_text"])),
        ("float ids", str(res["float_token_ids"])
         + ("  (same)" if res["same_tokens"] else "")),
        ("top-1", f"{res['top1_agreement']:.1%} agreement with float under teacher forcing"),
        ("perplexity", f"{res['perplexity']:.3f} int8, {res['float_perplexity']:.3f} float "
                       f"({res['perplexity'] / res['float_perplexity'] - 1:+.1%})"),
        ("cycles", f"prefill {res['prefill_cycles']:,} "
                   f"({res['prefill_cycles_per_token']:,.0f} per token); decode "
                   + (f"{dec:,.0f} per token" if dec is not None else "none")),
        ("utilization", f"{res['utilization']:.1%} of the PEs, "
                        f"{res['roofline_efficiency']:.1%} of the roofline"),
        ("energy", _energy_line(res)),
        ("wall", f"{res['wall_s']:.1f} s"),
    ])
    _print_layer_errors(res)


def cmd_docs(args: argparse.Namespace) -> int:
    """Regenerate docs/isa.md and docs/registers.md, or check they are current."""
    from .sw.docgen import write_docs

    changed = write_docs(args.out, check=args.check)
    if args.json:
        print(json.dumps({"check": args.check, "stale" if args.check else "written":
                          [str(p) for p in changed]}))
    elif args.check:
        print("\n".join(f"stale: {p}" for p in changed) or "generated docs are current")
    else:
        print("\n".join(f"wrote {p}" for p in changed) or "generated docs already current")
    return 1 if args.check and changed else 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``llmchip`` command."""
    parser = argparse.ArgumentParser(
        prog="llmchip",
        description="Generate int8 systolic-array accelerators as Verilog and run them in "
                    "simulation (Icarus, Verilator).")
    parser.add_argument("--version", action="version", version=f"llmchip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("generate", help="write the Verilog, params.json and params.h",
                       description="Elaborate the accelerator (or the bare array) from the "
                                   "configuration below and write <out>/llmchip_<top>.v plus "
                                   "<out>/params.json and <out>/params.h, the sidecars that "
                                   "testbenches, software and firmware read.")
    _add_config_args(p)
    p.add_argument("--top", choices=("accelerator", "array"), default="accelerator",
                   help="accelerator: the whole accelerator (AXI4 DMA, AXI4-Lite CSRs, irq; "
                        "default); array: the bare systolic array with stream ports")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="output folder (created if missing)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("demo", help="generate an array and run a matmul on it in simulation",
                       description="Generate an array, compile it for a simulator (cached), "
                                   "stream a random int8 matmul through it tile by tile, and "
                                   "check every result against the NumPy golden model.")
    _add_config_args(p)
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default verilator)")
    p.add_argument("--m", type=int, default=32, help="rows of X (default 32)")
    p.add_argument("--k", type=int, default=24, help="columns of X = rows of W (default 24)")
    p.add_argument("--n", type=int, default=20, help="columns of W (default 20)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for the operands (printed; default: from the clock)")
    p.add_argument("--out", type=Path, default=Path("build/demo"), metavar="DIR",
                   help="where the Verilog is written (default build/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("gemm", help="run a random int8 GEMM through compiler and runtime",
                       description="Compile Y = requant(X @ W + bias) for a random int8 X "
                                   "(M x K) and W (K x N), run it on a backend, check Y "
                                   "against the NumPy golden model bit for bit, and report "
                                   "cycles (hardware counters on the RTL backends), the "
                                   "performance model's prediction, utilization, roofline "
                                   "efficiency and DRAM traffic. Exit status 1 if Y is not "
                                   "bit-exact.")
    _add_config_args(p, rows=16, cols=16, sp_rows=4096, param_rows=128)
    p.add_argument("--m", type=int, required=True, help="rows of X (tokens)")
    p.add_argument("--k", type=int, required=True, help="columns of X = rows of W")
    p.add_argument("--n", type=int, required=True, help="columns of W (output channels)")
    p.add_argument("--backend", choices=("model", "verilator", "icarus"), default="model",
                   help="model: bit-exact executor + cycle model (default); verilator / "
                        "icarus: the generated RTL (built once per configuration, cached)")
    p.add_argument("--relu", action="store_true", help="fuse a ReLU into the store")
    p.add_argument("--dram-latency", type=int, default=8, metavar="CYCLES",
                   help="read latency of the simulated DRAM (RTL backends; default 8)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed for the operands (printed; default: from the clock)")
    p.set_defaults(func=cmd_gemm)

    p = sub.add_parser("run", help="run a real quantized transformer on the accelerator",
                       description="Run a packaged pretrained model in float (the reference) "
                                   "and in int8 with every matrix multiplication on the "
                                   "accelerator (model backend, or the RTL), and compare.")
    msub = p.add_subparsers(dest="model", metavar="MODEL", required=True)
    schemes = ("baseline", "static", "dynamic", "smooth-static", "smooth-dynamic")

    def common(mp: argparse.ArgumentParser, default_scheme: str) -> None:
        _add_config_args(mp, rows=16, cols=16, sp_rows=4096, param_rows=128)
        mp.add_argument("--backend", choices=("model", "verilator", "icarus"), default="model",
                        help="model: bit-exact executor + cycle model (default); verilator / "
                             "icarus: the generated RTL (slow: use a small --layers)")
        mp.add_argument("--scheme", choices=schemes, default=default_scheme,
                        help=f"quantization: baseline = per-tensor weights, static "
                             f"activations, no smoothing; smooth-* = SmoothQuant (alpha 0.5); "
                             f"*-dynamic = per-token activation scales (default "
                             f"{default_scheme})")
        mp.add_argument("--layers", type=int, default=None, metavar="N",
                        help="keep only the first N transformer layers (default: all)")
        mp.add_argument("--layer-errors", action="store_true",
                        help="also report each layer's int8 output error against float on "
                             "the same input")

    mp = msub.add_parser("minilm", help="all-MiniLM-L6-v2 sentence embeddings",
                         description="Embed texts with all-MiniLM-L6-v2 (BERT encoder): cosine "
                                     "similarity of each int8 embedding to the float one, "
                                     "pairwise similarities, cycles, utilization, energy.")
    mp.add_argument("--text", action="append", metavar="TEXT",
                    help="a text to embed (repeat for several; default: 24 built-in "
                         "sentences)")
    mp.add_argument("--seq-len", type=int, default=None, metavar="N",
                    help="pad and truncate every text to N tokens (default: each text at "
                         "its own length)")
    mp.add_argument("--rtl-check", action="store_true",
                    help="also run one encoder layer at 32 tokens on Verilator (8x8 array) "
                         "and check it bit for bit against the model backend")
    common(mp, "smooth-dynamic")
    mp.set_defaults(func=cmd_run)

    mp = msub.add_parser("smollm2", help="SmolLM2-135M-Instruct text generation",
                         description="Greedy generation with SmolLM2-135M-Instruct (Llama-style "
                                     "decoder, KV cache): the int8 and float continuations, "
                                     "top-1 agreement under teacher forcing and perplexity on "
                                     "the prompt, cycles per token for prefill and decode.")
    mp.add_argument("--prompt", required=True, help="the user message (or raw text with --raw)")
    mp.add_argument("--max-new-tokens", type=int, default=16, metavar="N",
                    help="most tokens to generate (default 16)")
    mp.add_argument("--raw", action="store_true",
                    help="use the prompt as plain text instead of wrapping it in the chat "
                         "template")
    common(mp, "smooth-dynamic")
    mp.set_defaults(func=cmd_run)

    p = sub.add_parser("docs", help="regenerate the ISA and register-map docs",
                       description="Write docs/isa.md and docs/registers.md from the single "
                                   "Python definitions (sw/isa.py, sw/regs.py).")
    p.add_argument("--out", type=Path, default=Path("docs"), metavar="DIR",
                   help="output folder (default docs)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a generated file is out of date")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=cmd_docs)

    # Subcommands kept in their own modules: each has add_parser(sub).
    for name in _MODULE_COMMANDS:
        importlib.import_module(f"{__package__}.cli_{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except _UsageError as exc:
        parser.exit(2, f"llmchip {args.command}: error: {exc}\n")
    except Exception as exc:  # tool failures: a clear message, not a traceback
        from .tb.sim import SimulationError
        from .tb.toolchain import ToolchainError
        if isinstance(exc, SimulationError | ToolchainError | OSError):
            print(f"llmchip {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
