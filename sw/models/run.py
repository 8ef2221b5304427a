"""End-to-end runs of the packaged models on a Device: the float reference and the int8
path side by side, with accuracy, cycles, utilization and energy (used by the command
line and the benchmarks)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

import numpy as np

from llmchip.config import AcceleratorConfig

from ..power import estimate_energy
from ..quant import SCHEMES, FloatExecutor, Linear, QuantExecutor, QuantScheme, calibrate
from .metrics import cosine, pairwise_upper, spearman

__all__ = ["DEFAULT_CONFIG", "DEFAULT_SCHEMES", "RTL_CHECK_CONFIG", "dram_for", "run_minilm",
           "run_smollm2", "rtl_layer_check", "rtl_decode_check", "device_summary",
           "layer_cycles"]

#: The accelerator the model runs use unless told otherwise (16x16, 128-bit bus).
DEFAULT_CONFIG = dict(rows=16, cols=16, bus_bits=128, sp_rows=4096, acc_rows=512,
                      param_rows=128)

#: The scheme each model uses by default (chosen by ``scripts/bench_models.py``).
DEFAULT_SCHEMES = {"minilm": "smooth-dynamic", "smollm2": "smooth-dynamic"}


def _scheme(s: str | QuantScheme) -> QuantScheme:
    if isinstance(s, QuantScheme):
        return s
    if s not in SCHEMES:
        raise ValueError(f"unknown quantization scheme {s!r}; choose one of "
                         f"{', '.join(SCHEMES)}")
    return SCHEMES[s]


def layer_cycles(qx: QuantExecutor) -> dict[str, int]:
    """Device cycles per model layer (``layers.3``, ``lm_head``), from the executor."""
    out: dict[str, int] = {}
    for name, c in qx.cycles.items():
        m = re.match(r"layers\.\d+|[^.]+", name)     # layers.3.attn.scores, lm_head.refine
        key = m.group(0)
        out[key] = out.get(key, 0) + c
    return dict(sorted(out.items(), key=lambda kv: (not kv[0].startswith("layers."),
                                                      int(kv[0].split(".")[1])
                                                      if kv[0].startswith("layers.") else 0)))


def device_summary(dev, totals: dict | None = None) -> dict:
    """Cycles, utilization, roofline efficiency, DRAM traffic and energy of a device's runs."""
    t = dict(dev.totals if totals is None else totals)
    cfg = dev.config
    cycles = t.get("cycles", 0)
    return {
        "cycles": cycles, "model_cycles": t.get("model_cycles", cycles),
        "macs": t.get("macs", 0), "runs": len(dev.history),
        "utilization": t.get("macs", 0) / cfg.pes / cycles if cycles else 0.0,
        "roofline_efficiency": t.get("ideal_cycles", 0) / cycles if cycles else 0.0,
        "dram_read_bytes": t.get("dram_read_bytes", 0),
        "dram_write_bytes": t.get("dram_write_bytes", 0),
        "energy": estimate_energy(cfg, t),
    }


def dram_for(layers: dict) -> int:
    """Device DRAM for a model: the int8 weights fit in the lower half (a power of two)."""
    weights = sum(layer.w.size for layer in layers.values())
    return 1 << (2 * weights + (16 << 20)).bit_length()


def _diff(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) - b.get(k, 0) for k in a if isinstance(a.get(k), int | float)}


def run_minilm(texts: Sequence[str], *, backend: str = "model",
               config: AcceleratorConfig | None = None,
               scheme: str | QuantScheme = DEFAULT_SCHEMES["minilm"],
               seq_len: int | None = None, n_layers: int | None = None,
               calibration: Sequence[str] | None = None, report_errors: bool = False,
               dram_bytes: int | None = None, device=None,
               log: Callable[[str], object] = lambda s: None) -> dict:
    """Embed ``texts`` with all-MiniLM-L6-v2 in float and in int8 on a device.

    ``seq_len`` pads (and truncates) every text to that many tokens; by default each text
    runs at its own length. Returns a JSON-ready dict (see ``llmchip run minilm --json``).
    """
    from .minilm import CALIBRATION_SENTENCES, MiniLM

    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise ValueError("give at least one non-empty text")
    sch = _scheme(scheme)
    t0 = time.perf_counter()
    model = MiniLM.load(n_layers=n_layers)
    ids = [model.encode(t, seq_len) for t in texts]
    fx = FloatExecutor(model.layers)
    ref = model.embed(texts, fx, max_len=seq_len, pad_to=seq_len)
    log(f"calibrating {sch.describe()}")
    cal = calibrate(lambda ex: model.embed(list(calibration or CALIBRATION_SENTENCES), ex),
                    model.layers, sch)
    own = device is None
    if own:
        from llmchip.sw.runtime import open_device
        device = open_device(config or AcceleratorConfig(**DEFAULT_CONFIG), backend,
                             dram_bytes=dram_bytes or 1 << 26)
    try:
        qx = QuantExecutor(device, model.layers, cal, out_groups=model.quant_groups(),
                           report=report_errors)
        log(f"running {len(texts)} text(s) on the {device.backend} backend")
        t1 = time.perf_counter()
        emb = model.embed(texts, qx, max_len=seq_len, pad_to=seq_len)
        run_s = time.perf_counter() - t1
        cos = cosine(emb, ref)
        out = {
            "model": "all-MiniLM-L6-v2", "layers": model.n_layers, "backend": device.backend,
            "config": device.config.to_dict()["config"], "scheme": sch.describe(),
            "seq_len": seq_len,
            "texts": [{"text": t, "tokens": len(i), "cosine": float(c),
                       "embedding": e.tolist(), "float_embedding": r.tolist()}
                      for t, i, c, e, r in zip(texts, ids, cos, emb, ref, strict=True)],
            "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "similarity": {"float": (ref @ ref.T).tolist(), "int8": (emb @ emb.T).tolist()},
            "layer_cycles": layer_cycles(qx),
            **device_summary(device),
            "run_s": run_s, "wall_s": time.perf_counter() - t0,
        }
        if len(texts) >= 3:
            out["spearman"] = spearman(pairwise_upper(emb), pairwise_upper(ref))
        if report_errors:
            out["layer_errors"] = qx.error_report()
        return out
    finally:
        if own:
            device.close()


def run_smollm2(prompt: str, max_new_tokens: int = 16, *, backend: str = "model",
                config: AcceleratorConfig | None = None,
                scheme: str | QuantScheme = DEFAULT_SCHEMES["smollm2"], chat: bool = True,
                n_layers: int | None = None, calibration: str | None = None,
                report_errors: bool = False, dram_bytes: int | None = None, device=None,
                on_token: Callable[[int], object] | None = None,
                log: Callable[[str], object] = lambda s: None) -> dict:
    """Generate from SmolLM2-135M in float and in int8 on a device, and compare them.

    The prompt (wrapped in the chat template when ``chat``) is scored under teacher
    forcing by both models (top-1 agreement, perplexity), then each continues it
    greedily. Cycles are reported for the prefill and per decoded token.
    """
    from .smollm2 import SmolLM2, chat_prompt
    from .texts import CALIBRATION_TEXT

    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("the prompt must be a non-empty string")
    sch = _scheme(scheme)
    t0 = time.perf_counter()
    model = SmolLM2.load(n_layers=n_layers)
    ids = model.encode(chat_prompt(prompt) if chat else prompt)
    if len(ids) < 2:
        raise ValueError("the prompt must have at least 2 tokens")
    fx = FloatExecutor(model.layers)
    log("float reference")
    ref_tf = model.teacher_forced(ids, fx)
    ref_ids = model.generate(ids, fx, max_new_tokens)
    log(f"calibrating {sch.describe()}")
    cal_ids = model.encode(calibration or CALIBRATION_TEXT)
    cal = calibrate(lambda ex: model.forward(cal_ids, ex), model.layers, sch)
    own = device is None
    if own:
        from llmchip.sw.runtime import open_device
        dram_bytes = dram_bytes or dram_for(model.layers)
        if backend != "model":
            log(f"the simulated DRAM holds {dram_bytes >> 20} MiB (a new size builds a new "
                f"simulator); a decoded token of the full model takes about 9 million "
                f"cycles, 2 minutes in Verilator")
        device = open_device(config or AcceleratorConfig(**DEFAULT_CONFIG), backend,
                             dram_bytes=dram_bytes)
    try:
        log(f"uploading int8 weights to the {device.backend} device")
        qx = QuantExecutor(device, model.layers, cal, out_groups=model.quant_groups(),
                           refine=model.quant_refine(), report=report_errors)
        log("scoring the prompt")
        q_tf = model.teacher_forced(ids, qx)
        before = dict(device.totals)
        marks: list[dict] = []

        def token(t: int) -> None:
            marks.append(dict(device.totals))
            if on_token is not None:
                on_token(t)

        log(f"generating up to {max_new_tokens} tokens")
        t1 = time.perf_counter()
        gen = model.generate(ids, qx, max_new_tokens, on_token=token)
        run_s = time.perf_counter() - t1
        end = dict(device.totals)
        prefill = _diff(marks[0], before) if marks else _diff(end, before)
        decode = _diff(end, marks[0]) if marks else {}
        steps = max(len(marks) - 1, 0) + (1 if len(gen) < max_new_tokens and marks else 0)
        agree = float(np.mean(q_tf["argmax"] == ref_tf["argmax"]))
        out = {
            "model": "SmolLM2-135M-Instruct", "layers": model.config.n_layers,
            "backend": device.backend, "config": device.config.to_dict()["config"],
            "scheme": sch.describe(), "prompt": prompt, "prompt_tokens": len(ids),
            "text": model.decode(gen), "token_ids": gen,
            "float_text": model.decode(ref_ids), "float_token_ids": ref_ids,
            "same_tokens": gen == ref_ids,
            "top1_agreement": agree,
            "perplexity": q_tf["perplexity"], "float_perplexity": ref_tf["perplexity"],
            "prefill_cycles": prefill.get("cycles", 0),
            "prefill_cycles_per_token": prefill.get("cycles", 0) / len(ids),
            "decode_steps": steps,
            "decode_cycles_per_token": decode.get("cycles", 0) / steps if steps else None,
            "layer_cycles": layer_cycles(qx),
            **device_summary(device),
            "run_s": run_s, "wall_s": time.perf_counter() - t0,
        }
        if report_errors:
            out["layer_errors"] = qx.error_report()
        return out
    finally:
        if own:
            device.close()


#: The accelerator of the RTL checks: small enough to simulate quickly, with memories
#: large enough that a transformer layer's GEMMs compile to short programs.
RTL_CHECK_CONFIG = dict(rows=8, cols=8, sp_rows=1024, acc_rows=256, param_rows=64)
RTL_CHECK_DRAM = 1 << 24


def rtl_layer_check(texts: Sequence[str], *, backend: str = "verilator",
                    config: AcceleratorConfig | None = None, seq_len: int = 32,
                    scheme: str | QuantScheme = DEFAULT_SCHEMES["minilm"],
                    dram_bytes: int = RTL_CHECK_DRAM,
                    log: Callable[[str], object] = lambda s: None
                    ) -> dict:
    """Run MiniLM's first encoder layer on the ``model`` backend and on an RTL backend and
    check that every int8 result the device returned is identical.

    Each text is padded to ``seq_len`` tokens. Returns ``bit_exact``, both cycle counts
    and the simulation speed.
    """
    from llmchip.sw.runtime import open_device

    from .minilm import CALIBRATION_SENTENCES, MiniLM

    cfg = config or AcceleratorConfig(**RTL_CHECK_CONFIG)
    model = MiniLM.load(n_layers=1)
    sch = _scheme(scheme)
    cal = calibrate(lambda ex: model.embed(list(CALIBRATION_SENTENCES), ex), model.layers, sch)
    runs = {}
    for be in ("model", backend):
        log(f"one encoder layer, {len(texts)} text(s) x {seq_len} tokens, {be} backend"
            + (" (the first run builds the simulator)" if be != "model" else ""))
        with open_device(cfg, be, dram_bytes=dram_bytes) as dev:
            qx = QuantExecutor(dev, model.layers, cal, out_groups=model.quant_groups())
            t0 = time.perf_counter()
            emb = model.embed(list(texts), qx, max_len=seq_len, pad_to=seq_len)
            runs[be] = {"digest": qx.digest.hexdigest(), "embedding": emb,
                        "totals": dict(dev.totals), "wall_s": time.perf_counter() - t0,
                        "summary": device_summary(dev)}
    ref, rtl = runs["model"], runs[backend]
    t = rtl["totals"]
    return {
        "backend": backend, "config": f"{cfg.rows}x{cfg.cols}", "seq_len": seq_len,
        "texts": len(texts), "bit_exact": ref["digest"] == rtl["digest"]
        and bool(np.array_equal(ref["embedding"], rtl["embedding"])),
        "digest": rtl["digest"], "rtl_cycles": t.get("cycles", 0),
        "model_cycles": ref["totals"].get("cycles", 0),
        "utilization": rtl["summary"]["utilization"],
        "roofline_efficiency": rtl["summary"]["roofline_efficiency"],
        "runs": rtl["summary"]["runs"], "rtl_wall_s": rtl["wall_s"],
        "sim_cycles_per_s": t.get("cycles", 0) / rtl["wall_s"] if rtl["wall_s"] else 0.0,
    }


def rtl_decode_check(prompt: str = "The capital of France is", *, steps: int = 2,
                     n_layers: int = 1, backend: str = "verilator",
                     config: AcceleratorConfig | None = None,
                     scheme: str | QuantScheme = DEFAULT_SCHEMES["smollm2"],
                     vocab: int | None = None, dram_bytes: int = RTL_CHECK_DRAM,
                     log: Callable[[str], object] = lambda s: None) -> dict:
    """Generate with SmolLM2 (its first ``n_layers`` layers) on the ``model`` backend and
    on an RTL backend: one prefill and ``steps`` decode steps on each; check that every
    int8 device result is identical.

    ``vocab`` keeps only the output layer's first ``vocab`` words (its 49,152-column
    GEMV dominates a decode step; small arrays in tests take a slice, the benchmark the
    whole layer).
    """
    from llmchip.sw.runtime import open_device

    from .smollm2 import SmolLM2
    from .texts import CALIBRATION_TEXT

    cfg = config or AcceleratorConfig(**RTL_CHECK_CONFIG)
    model = SmolLM2.load(n_layers=n_layers)
    layers = dict(model.layers)
    if vocab is not None:
        if not 1 <= vocab <= model.config.vocab:
            raise ValueError(f"vocab must be between 1 and {model.config.vocab}, not {vocab}")
        head = layers["lm_head"]
        layers["lm_head"] = Linear(head.w[:, :vocab], None)
    sch = _scheme(scheme)
    cal_ids = model.encode(CALIBRATION_TEXT)
    cal = calibrate(lambda ex: model.forward(cal_ids, ex), layers, sch)
    ids = model.encode(prompt)
    runs = {}
    for be in ("model", backend):
        log(f"{model.config.n_layers} layer(s): prefill of {len(ids)} tokens and {steps} "
            f"decode steps on the {be} backend"
            + (" (the first run builds the simulator)" if be != "model" else ""))
        with open_device(cfg, be, dram_bytes=dram_bytes) as dev:
            groups = model.quant_groups()
            groups["lm_head"] = np.zeros(layers["lm_head"].w.shape[1], dtype=np.int64)
            qx = QuantExecutor(dev, layers, cal, out_groups=groups,
                               refine=model.quant_refine())
            marks: list[dict] = []
            t0 = time.perf_counter()
            gen = model.generate(ids, qx, steps + 1, stop_at_eos=False,
                                 on_token=lambda t, d=dev, mk=marks: mk.append(dict(d.totals)))
            end = dict(dev.totals)
            runs[be] = {"digest": qx.digest.hexdigest(), "tokens": gen,
                        "decode_cycles": end.get("cycles", 0) - marks[0].get("cycles", 0),
                        "cycles": end.get("cycles", 0), "wall_s": time.perf_counter() - t0}
    ref, rtl = runs["model"], runs[backend]
    return {"backend": backend, "config": f"{cfg.rows}x{cfg.cols}",
            "layers": model.config.n_layers, "vocab": vocab or model.config.vocab,
            "prompt_tokens": len(ids), "decode_steps": steps,
            "bit_exact": ref["digest"] == rtl["digest"] and ref["tokens"] == rtl["tokens"],
            "tokens": rtl["tokens"], "model_tokens": ref["tokens"], "digest": rtl["digest"],
            "rtl_cycles": rtl["cycles"], "model_cycles": ref["cycles"],
            "rtl_decode_cycles_per_token": rtl["decode_cycles"] / steps,
            "rtl_wall_s": rtl["wall_s"],
            "sim_cycles_per_s": rtl["cycles"] / rtl["wall_s"] if rtl["wall_s"] else 0.0}
