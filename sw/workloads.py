"""The GEMMs of the packaged transformers, recorded from a real float run of each model.

A :class:`GemmRecorder` is a float executor (see :mod:`llmchip.sw.quant`) that notes the
shape of every multiplication the model asks for; :func:`workload_gemms` runs a model
through it and returns one :class:`Gemm` per linear layer and per attention matmul, in the
order the model issues them. Attention runs on the accelerator as one batch of per-head
matmuls (as :class:`~llmchip.sw.quant.QuantExecutor` issues them), so each attention call
gives two :class:`Gemm` entries with ``batch`` equal to the number of query heads.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from llmchip.cache import cache_root
from llmchip.config import check_int

from .quant import FloatExecutor

__all__ = ["Gemm", "GemmRecorder", "WORKLOADS", "WORKLOAD_GROUPS", "expand_workloads",
           "check_workload", "workload_gemms"]

#: Workloads by name: MiniLM encoding ``seq_len`` tokens; SmolLM2 prefill of ``seq_len``
#: tokens; one SmolLM2 decode step with ``seq_len`` positions already in the KV cache.
WORKLOADS = ("minilm", "smollm2-prefill", "smollm2-decode")

#: Names that stand for several workloads.
WORKLOAD_GROUPS = {"smollm2": ("smollm2-prefill", "smollm2-decode")}

_MAX_SEQ = {"minilm": 512, "smollm2-prefill": 8192, "smollm2-decode": 8191}


@dataclass(frozen=True)
class Gemm:
    """One device program of a workload: ``batch`` independent ``m x k x n`` int8 GEMMs.

    Attributes
    ----------
    workload : str
        The workload it belongs to (a name in :data:`WORKLOADS`).
    name : str
        The executor's name for it (``layers.3.qkv``, ``layers.3.attn.scores``,
        ``lm_head``).
    m, k, n : int
        ``(m x k) @ (k x n)`` of one operation.
    batch : int
        Operations of that shape in the same program (the heads of an attention matmul).
    """

    workload: str
    name: str
    m: int
    k: int
    n: int
    batch: int = 1

    def __post_init__(self):
        for field_name, lo in (("m", 1), ("k", 1), ("n", 1), ("batch", 1)):
            check_int(field_name, getattr(self, field_name), lo, 1 << 31)

    @property
    def kind(self) -> str:
        """The name without its layer index (``qkv``, ``attn.scores``, ``lm_head``): the
        same kind of GEMM in every layer."""
        return re.sub(r"^layers\.\d+\.", "", self.name)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the whole program."""
        return self.batch * self.m * self.k * self.n

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(m, k, n, batch)``: what the compiler and the performance model see."""
        return (self.m, self.k, self.n, self.batch)

    def to_dict(self) -> dict:
        """Return the fields, the kind and the MAC count as a dictionary."""
        return {**asdict(self), "kind": self.kind, "macs": self.macs}


class GemmRecorder(FloatExecutor):
    """A float executor that records the shape of every multiplication it runs.

    Parameters
    ----------
    layers : dict of str to Linear
        The model's linear layers by name.
    workload : str
        Written into every recorded :class:`Gemm`.

    Attributes
    ----------
    gemms : list of Gemm
        What the model ran so far, in order; ``linear`` gives one entry, ``attention``
        two (``<name>.scores``: ``q @ k^T`` per head, ``<name>.context``: probabilities
        ``@ v`` per head).
    """

    def __init__(self, layers, workload: str):
        super().__init__(layers)
        self.workload = workload
        self.gemms: list[Gemm] = []

    def linear(self, name: str, x: np.ndarray) -> np.ndarray:
        y = super().linear(name, x)
        m, k = np.shape(x)
        self.gemms.append(Gemm(self.workload, name, int(m), int(k), int(y.shape[1])))
        return y

    def attention(self, name: str, q, k, v, *, scale: float, mask=None) -> np.ndarray:
        heads, m, d = q.shape
        t, dv = k.shape[1], v.shape[2]
        self.gemms.append(Gemm(self.workload, f"{name}.scores", int(m), int(d), int(t),
                               int(heads)))
        self.gemms.append(Gemm(self.workload, f"{name}.context", int(m), int(t), int(dv),
                               int(heads)))
        return super().attention(name, q, k, v, scale=scale, mask=mask)


def expand_workloads(names) -> tuple[str, ...]:
    """Return the workloads named by ``names`` (a comma-separated string or a sequence),
    with groups such as ``smollm2`` expanded, in order and without repeats.

    Raises
    ------
    ValueError
        If a name is not a workload or a group, or no name is given.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for name in names:
        if name in WORKLOAD_GROUPS:
            parts = WORKLOAD_GROUPS[name]
        elif name in WORKLOADS:
            parts = (name,)
        else:
            known = ", ".join((*WORKLOADS, *WORKLOAD_GROUPS))
            raise ValueError(f"workload must be one of {known}, not {name!r}")
        out += [p for p in parts if p not in out]
    if not out:
        raise ValueError("at least one workload is needed")
    return tuple(out)


def _long_text(count_tokens, count: int) -> str:
    """Varied English text of at least ``count`` tokens (as ``count_tokens`` counts)."""
    from .models.minilm import SAMPLE_SENTENCES

    base = " ".join(SAMPLE_SENTENCES)
    text = base
    while count_tokens(text) < count:
        text += " " + base
    return text


def workload_gemms(workload: str, seq_len: int = 128, *,
                   n_layers: int | None = None) -> list[Gemm]:
    """Return the GEMMs of ``workload``, recorded from a float run of the real model.

    Parameters
    ----------
    workload : str
        A name in :data:`WORKLOADS`.
    seq_len : int
        Tokens MiniLM encodes; tokens of the SmolLM2 prompt (prefill); positions in the
        KV cache before the SmolLM2 decode step.
    n_layers : int, optional
        Keep only the first layers of the model (default: all).

    Raises
    ------
    ValueError
        If the workload is unknown or ``seq_len``/``n_layers`` is out of range.
    RuntimeError, FileNotFoundError
        If the model's weight package is not installed.
    """
    check_workload(workload, seq_len, n_layers)
    return list(_record(workload, seq_len, n_layers))


def check_workload(workload: str, seq_len: int, n_layers: int | None = None) -> None:
    """Raise ``ValueError``/``TypeError`` naming the value unless :func:`workload_gemms`
    accepts these arguments (the model's own layer count is checked when it loads)."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, not {workload!r}")
    lo = 3 if workload == "minilm" else 1
    check_int("seq_len", seq_len, lo, _MAX_SEQ[workload])
    if n_layers is not None:
        check_int("n_layers", n_layers, 1, 1 << 10)


def _cache_file(workload: str, seq_len: int, n_layers: int | None) -> Path | None:
    """Where a recorded list is kept: keyed by the request, this module's and the model's
    source and the weight file's identity (a change to any of them records afresh)."""
    from . import quant
    from .models import minilm, smollm2

    module = minilm if workload == "minilm" else smollm2
    try:
        weights = (minilm.model_path() / "model.safetensors" if workload == "minilm"
                   else smollm2.gguf_path())
        st = weights.stat()
    except (OSError, RuntimeError):
        return None
    digest = hashlib.sha256(f"{workload}|{seq_len}|{n_layers}|{weights}|{st.st_size}|"
                            f"{st.st_mtime_ns}".encode())
    for mod in (sys.modules[__name__], quant, module):
        digest.update(Path(mod.__file__).read_bytes())
    return cache_root() / "workloads" / f"{workload}-{seq_len}-{digest.hexdigest()[:20]}.json"


@functools.lru_cache(maxsize=16)
def _record(workload: str, seq_len: int, n_layers: int | None) -> tuple[Gemm, ...]:
    path = _cache_file(workload, seq_len, n_layers)
    if path is not None:
        try:
            return tuple(Gemm(**g) for g in json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            pass
    gemms = _run_model(workload, seq_len, n_layers)
    if path is not None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps([asdict(g) for g in gemms]))
            os.replace(tmp, path)
        except OSError:
            pass
    return gemms


def _run_model(workload: str, seq_len: int, n_layers: int | None) -> tuple[Gemm, ...]:
    if workload == "minilm":
        from .models.minilm import MiniLM

        model = MiniLM.load(n_layers=n_layers)
        text = _long_text(lambda t: len(model.tokenizer.encode(t).ids), seq_len)
        ids = model.encode(text, max_len=seq_len)        # [CLS] ... [SEP], seq_len tokens
        rec = GemmRecorder(model.layers, workload)
        model.hidden_states([ids], rec)
        return tuple(rec.gemms)
    from .models.smollm2 import SmolLM2

    model = SmolLM2.load(n_layers=n_layers)
    ids = model.encode(_long_text(lambda t: len(model.encode(t)), seq_len))[:seq_len]
    cache = model.new_cache()
    rec = GemmRecorder(model.layers, workload)
    if workload == "smollm2-prefill":
        model.forward(ids, rec, cache)
        return tuple(rec.gemms)
    model.forward(ids, FloatExecutor(model.layers), cache)
    model.forward(ids[-1:], rec, cache)
    return tuple(rec.gemms)
