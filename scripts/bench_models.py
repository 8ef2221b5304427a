"""Model accuracy benchmark: the int8 paths of MiniLM and SmolLM2 against float.

MiniLM (all-MiniLM-L6-v2): the 24 sentences of ``SAMPLE_SENTENCES`` (calibrated on the
separate ``CALIBRATION_SENTENCES``); per quantization scheme the smallest and mean cosine
similarity between int8 and float embeddings and the Spearman correlation of the 276
pairwise similarities (the ranking of sentence pairs). Target: cosine >= 0.99 for every
sentence and Spearman >= 0.95.

SmolLM2-135M: teacher forcing over ``EVAL_TEXT`` (about 300 tokens of plain prose;
calibrated on the separate ``CALIBRATION_TEXT``); per scheme the top-1 next-token
agreement with float and the perplexity increase. Target: agreement >= 90%, perplexity
at most +10%.

Every int8 matmul runs on a Device (the ``model`` backend by default: bit-exact with the
RTL, cycles from the performance model), so cycles, utilization and energy are reported
too. ``--rtl`` adds the full-size RTL proofs on Verilator: one MiniLM encoder layer at
128 tokens and SmolLM2 (full output layer) prefill plus two decode steps,
each compared bit for bit with the model backend.

    .venv/bin/python scripts/bench_models.py [--models minilm smollm2]
        [--schemes baseline smooth-dynamic ...] [--rtl] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import llmchip
from llmchip.config import AcceleratorConfig
from llmchip.sw.models import run as runner
from llmchip.sw.models.metrics import cosine, pairwise_upper, spearman
from llmchip.sw.quant import SCHEMES, FloatExecutor, QuantExecutor, calibrate


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def bench_minilm(cfg: AcceleratorConfig, schemes: list[str]) -> list[dict]:
    from llmchip.sw.models.minilm import CALIBRATION_SENTENCES, SAMPLE_SENTENCES, MiniLM

    model = MiniLM.load()
    ref = model.embed(SAMPLE_SENTENCES, FloatExecutor(model.layers))
    rows = []
    for name in schemes:
        t0 = time.perf_counter()
        cal = calibrate(lambda ex: model.embed(CALIBRATION_SENTENCES, ex), model.layers,
                        SCHEMES[name])
        with llmchip.open(cfg, "model") as dev:
            qx = QuantExecutor(dev, model.layers, cal, out_groups=model.quant_groups(),
                               report=True)
            emb = model.embed(SAMPLE_SENTENCES, qx)
            summary = runner.device_summary(dev)
        c = cosine(emb, ref)
        rows.append({"model": "minilm", "scheme": name, "description": SCHEMES[name].describe(),
                     "sentences": len(SAMPLE_SENTENCES), "min_cosine": float(c.min()),
                     "mean_cosine": float(c.mean()),
                     "spearman": spearman(pairwise_upper(emb), pairwise_upper(ref)),
                     "worst_layers": qx.error_report()[:3], **summary,
                     "wall_s": time.perf_counter() - t0})
        r = rows[-1]
        log(f"minilm {name}: cosine min {r['min_cosine']:.4f} mean {r['mean_cosine']:.4f}, "
            f"Spearman {r['spearman']:.4f}, {r['cycles']:,} cycles, {r['wall_s']:.0f} s")
    return rows


def bench_smollm2(cfg: AcceleratorConfig, schemes: list[str]) -> list[dict]:
    from llmchip.sw.models.smollm2 import SmolLM2
    from llmchip.sw.models.texts import CALIBRATION_TEXT, EVAL_TEXT

    model = SmolLM2.load()
    ids = model.encode(EVAL_TEXT)
    ref = model.teacher_forced(ids, FloatExecutor(model.layers))
    cal_ids = model.encode(CALIBRATION_TEXT)
    rows = []
    for name in schemes:
        t0 = time.perf_counter()
        cal = calibrate(lambda ex: model.forward(cal_ids, ex), model.layers, SCHEMES[name])
        with llmchip.open(cfg, "model", dram_bytes=1 << 29) as dev:
            qx = QuantExecutor(dev, model.layers, cal, out_groups=model.quant_groups(),
                               refine=model.quant_refine(), report=True)
            r = model.teacher_forced(ids, qx)
            summary = runner.device_summary(dev)
        agree = float(np.mean(r["argmax"] == ref["argmax"]))
        rows.append({"model": "smollm2", "scheme": name,
                     "description": SCHEMES[name].describe(), "tokens": len(ids),
                     "top1_agreement": agree, "perplexity": r["perplexity"],
                     "float_perplexity": ref["perplexity"],
                     "perplexity_increase": r["perplexity"] / ref["perplexity"] - 1,
                     "worst_layers": qx.error_report()[:3], **summary,
                     "wall_s": time.perf_counter() - t0})
        x = rows[-1]
        log(f"smollm2 {name}: top-1 {agree:.1%}, perplexity {x['perplexity']:.3f} vs "
            f"{x['float_perplexity']:.3f} ({x['perplexity_increase']:+.1%}), "
            f"{x['cycles']:,} cycles, {x['wall_s']:.0f} s")
    return rows


def bench_rtl(cfg: AcceleratorConfig, smollm2_layers: int) -> dict:
    from llmchip.sw.models.minilm import SAMPLE_SENTENCES

    log("RTL: one MiniLM encoder layer at 128 tokens on Verilator (the first run builds the "
        "16x16 system)")
    layer = runner.rtl_layer_check(SAMPLE_SENTENCES[:1], config=cfg, seq_len=128,
                                   dram_bytes=1 << 24, log=log)
    log(f"  bit-exact {layer['bit_exact']}, {layer['rtl_cycles']:,} cycles")
    from llmchip.sw.models.smollm2 import SmolLM2

    dram = runner.dram_for(SmolLM2.load(n_layers=smollm2_layers).layers)
    log(f"RTL: SmolLM2, {smollm2_layers} layers and the full output layer, prefill + 2 "
        f"decode steps ({dram >> 20} MiB device DRAM)")
    decode = runner.rtl_decode_check("The capital of France is", steps=2,
                                     n_layers=smollm2_layers, config=cfg, dram_bytes=dram,
                                     log=log)
    log(f"  bit-exact {decode['bit_exact']}, {decode['rtl_decode_cycles_per_token']:,.0f} "
        f"cycles per decoded token")
    return {"minilm_layer": layer, "smollm2_decode": decode}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=("minilm", "smollm2"),
                    default=["minilm", "smollm2"])
    ap.add_argument("--schemes", nargs="+", choices=list(SCHEMES), default=list(SCHEMES),
                    help="quantization schemes to compare (default: all)")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=16)
    ap.add_argument("--rtl", action="store_true",
                    help="also run the full-size RTL proofs on Verilator (long)")
    ap.add_argument("--rtl-smollm2-layers", type=int, default=30, metavar="N",
                    help="SmolLM2 layers in the RTL decode check (default: all 30, about 6 "
                         "minutes of simulation after a 512 MiB-DRAM 16x16 build)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    cfg = AcceleratorConfig(**{**runner.DEFAULT_CONFIG, "rows": args.rows, "cols": args.cols})
    out: dict = {"config": cfg.to_dict()["config"], "results": []}
    if "minilm" in args.models:
        out["results"] += bench_minilm(cfg, args.schemes)
    if "smollm2" in args.models:
        out["results"] += bench_smollm2(cfg, args.schemes)
    if args.rtl:
        out["rtl"] = bench_rtl(cfg, args.rtl_smollm2_layers)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"{'model':8} {'scheme':15} {'accuracy':46} {'cycles':>13} {'util':>6} "
          f"{'energy':>10}")
    for r in out["results"]:
        if r["model"] == "minilm":
            acc = (f"cos min {r['min_cosine']:.4f} mean {r['mean_cosine']:.4f} "
                   f"rho {r['spearman']:.4f}")
        else:
            acc = (f"top-1 {r['top1_agreement']:.1%} ppl {r['perplexity']:.2f} "
                   f"({r['perplexity_increase']:+.1%})")
        print(f"{r['model']:8} {r['scheme']:15} {acc:46} {r['cycles']:>13,} "
              f"{r['utilization']:>6.1%} {r['energy']['total_uj']:>8.0f}uJ")
    if "rtl" in out:
        for k, v in out["rtl"].items():
            print(f"RTL {k}: bit-exact {v['bit_exact']}, {v['rtl_cycles']:,} cycles "
                  f"(model {v['model_cycles']:,}), {v['sim_cycles_per_s']:,.0f} cycles/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
