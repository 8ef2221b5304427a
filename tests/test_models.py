"""The packaged models end to end: float references, int8 on the model backend, and the
RTL proofs (one MiniLM encoder layer, SmolLM2 decode steps) bit-exact against the model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import llmchip
from llmchip.config import AcceleratorConfig
from llmchip.sw.models import run as runner
from llmchip.sw.models.metrics import cosine, pairwise_upper, rankdata, spearman
from llmchip.sw.models.minilm import CALIBRATION_SENTENCES, SAMPLE_SENTENCES, MiniLM
from llmchip.sw.quant import SCHEMES, FloatExecutor, QuantExecutor, calibrate


@pytest.fixture(scope="module")
def minilm():
    return MiniLM.load()


def test_minilm_float_embeddings_know_paraphrases(minilm):
    ex = FloatExecutor(minilm.layers)
    e = minilm.embed(SAMPLE_SENTENCES[:8], ex)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    s = e @ e.T
    for i in range(0, 8, 2):         # pairs (0,1), (2,3), ... are paraphrases
        others = [s[i, j] for j in range(8) if j not in (i, i + 1)]
        assert s[i, i + 1] > max(others) + 0.2, (i, s[i])


def test_minilm_tokens_padding_and_batching(minilm):
    ids = minilm.encode("Hello world, the accelerator runs 123!")
    assert ids[0] == 101 and ids[-1] == 102          # [CLS] ... [SEP]
    assert len(minilm.encode("word " * 600, 64)) == 64
    ex = FloatExecutor(minilm.layers)
    a = minilm.hidden_states([ids], ex)[0]
    b = minilm.hidden_states([ids], ex, pad_to=len(ids) + 9)[0]
    np.testing.assert_allclose(a, b, atol=2e-5)     # padding is masked out
    both = minilm.embed(["a short one", "and a somewhat longer second sentence"], ex)
    np.testing.assert_array_equal(both[0], minilm.embed("a short one", ex))
    with pytest.raises(ValueError, match="non-empty"):
        minilm.encode("   ")
    with pytest.raises(ValueError, match="pad_to"):
        minilm.hidden_states([ids], ex, pad_to=3)
    with pytest.raises(ValueError, match="token ids"):
        minilm.hidden_states([[101, 999999]], ex)


def test_metrics():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    np.testing.assert_array_equal(rankdata([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    assert cosine(np.array([1.0, 0]), np.array([0.0, 2]))[0] == pytest.approx(0.0)
    assert len(pairwise_upper(np.eye(5))) == 10


def test_minilm_int8_on_the_model_backend_meets_the_target(minilm):
    """Full 6-layer model, default scheme, 8 sentences not used for calibration."""
    cfg = AcceleratorConfig(rows=16, cols=16, sp_rows=4096, param_rows=128)
    texts = SAMPLE_SENTENCES[8:16]
    ref = minilm.embed(texts, FloatExecutor(minilm.layers))
    cal = calibrate(lambda ex: minilm.embed(CALIBRATION_SENTENCES, ex), minilm.layers,
                    SCHEMES["smooth-dynamic"])
    with llmchip.open(cfg, "model") as dev:
        qx = QuantExecutor(dev, minilm.layers, cal, out_groups=minilm.quant_groups())
        emb = minilm.embed(texts, qx)
        cyc = runner.layer_cycles(qx)
    c = cosine(emb, ref)
    assert c.min() >= 0.99, c
    assert spearman(pairwise_upper(emb), pairwise_upper(ref)) >= 0.95
    assert list(cyc) == [f"layers.{i}" for i in range(6)] and min(cyc.values()) > 0


def test_minilm_encoder_layer_on_verilator_matches_the_model_backend():
    """One full encoder layer (QKV, 12 heads x 2 attention matmuls, output, FFN) at 32
    tokens, two texts, on the 8x8 accelerator in Verilator: every int8 result equal."""
    res = runner.rtl_layer_check(SAMPLE_SENTENCES[:2], backend="verilator", seq_len=32)
    print(res)
    assert res["bit_exact"], res
    assert res["runs"] == 2 + 2 * 2 + 2        # qkv, out, ffn x2, and 2 batches per text
    assert abs(res["rtl_cycles"] / res["model_cycles"] - 1) < 0.05


def test_smollm2_decode_steps_on_verilator_match_the_model_backend():
    """SmolLM2's first layer and the first 2,048 words of its output layer: prefill and
    two decode steps on the 8x8 accelerator in Verilator, every int8 result equal to the
    model backend's (the full model runs in scripts/bench_models.py --rtl)."""
    res = runner.rtl_decode_check("The capital of France is", steps=2, n_layers=1,
                                  vocab=2048)
    print(res)
    assert res["bit_exact"], res
    assert len(res["tokens"]) == 3 and max(res["tokens"]) < 2048
    assert abs(res["rtl_cycles"] / res["model_cycles"] - 1) < 0.05


def test_run_minilm_cli_json(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "llmchip", "run", "minilm", "--text", "A cat sat on the mat.",
         "--text", "A kitten rested on the rug.", "--text", "Stocks fell sharply today.",
         "--layers", "2", "--rows", "8", "--cols", "8", "--json"],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert len(res["texts"]) == 3
    for t in res["texts"]:
        assert len(t["embedding"]) == 384 and len(t["float_embedding"]) == 384
        assert cosine(np.array(t["embedding"]), np.array(t["float_embedding"]))[0] == \
            pytest.approx(t["cosine"], abs=1e-6)
    assert list(res["layer_cycles"]) == ["layers.0", "layers.1"]
    assert res["cycles"] == sum(res["layer_cycles"].values())
    assert 0 < res["utilization"] <= 1 and res["energy"]["total_uj"] > 0
    f = np.array(res["similarity"]["float"])
    assert f[0, 1] > f[0, 2]


@pytest.mark.parametrize("argv, msg", [
    (["run", "minilm", "--seq-len", "2"], "--seq-len must be between 3 and 512"),
    (["run", "minilm", "--layers", "0"], "--layers must be >= 1"),
    (["run", "minilm", "--layers", "9"], "n_layers must be between 1 and 6"),
    (["run", "smollm2", "--prompt", "hi", "--max-new-tokens", "-1"], "--max-new-tokens"),
    (["run", "minilm", "--dataflow", "os"], "int8 weight-stationary"),
])
def test_run_cli_rejects_bad_input(argv, msg):
    out = subprocess.run([sys.executable, "-m", "llmchip", *argv], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert msg in out.stderr


def test_run_smollm2_cli_json():
    """Two layers of SmolLM2 (the full output layer) on the model backend through the
    command line: both continuations, ids, agreement, perplexities, cycles per token."""
    out = subprocess.run(
        [sys.executable, "-m", "llmchip", "run", "smollm2", "--prompt",
         "The capital of France is", "--raw", "--layers", "2", "--max-new-tokens", "3",
         "--json"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["layers"] == 2 and res["prompt_tokens"] == 5
    assert 1 <= len(res["token_ids"]) <= 3 and len(res["float_token_ids"]) <= 3
    assert 0.0 <= res["top1_agreement"] <= 1.0
    assert res["perplexity"] > 1 and res["float_perplexity"] > 1
    assert res["prefill_cycles"] > 0
    if len(res["token_ids"]) > 1:
        assert res["decode_cycles_per_token"] > 0
    assert set(res["layer_cycles"]) == {"layers.0", "layers.1", "lm_head"}
