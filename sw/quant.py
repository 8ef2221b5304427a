"""W8A8 quantization of transformer layers for the accelerator.

Models (``llmchip.sw.models``) are written once against an *executor*: every matrix
multiplication goes through ``ex.linear(name, x)`` or ``ex.attention(name, q, k, v, ...)``
and everything else (norms, activations, softmax, RoPE, residuals) is NumPy on the host.
The executor decides how the multiplications run:

* :class:`FloatExecutor`: float32 NumPy, the reference.
* :class:`Calibrator`: float32 NumPy that also records the ranges every quantized
  tensor would need (run it over sample text, then call :meth:`Calibrator.finish`).
* :class:`QuantExecutor`: int8 on a :class:`llmchip.sw.runtime.Device`; see its docstring
  for the scheme (weights per output channel, activations static per tensor or dynamic
  per token, optional SmoothQuant, requantization in the accelerator's post-processor).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Linear", "FloatExecutor", "softmax", "QuantScheme", "SCHEMES", "Calibration",
           "Calibrator", "calibrate", "QuantExecutor", "quantize_weights"]


@dataclass
class Linear:
    """A float linear layer ``y = x @ w + b``: ``w`` is (in, out), ``b`` is (out,) or None."""

    w: np.ndarray
    b: np.ndarray | None = None

    def __post_init__(self):
        self.w = np.ascontiguousarray(self.w, dtype=np.float32)
        if self.w.ndim != 2:
            raise ValueError(f"a Linear weight must be 2D (in, out), not shape {self.w.shape}")
        if self.b is not None:
            self.b = np.asarray(self.b, dtype=np.float32).reshape(-1)
            if self.b.shape[0] != self.w.shape[1]:
                raise ValueError(f"bias has {self.b.shape[0]} values for "
                                 f"{self.w.shape[1]} outputs")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32 (masked entries given as -inf give 0)."""
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def _expand_kv(k: np.ndarray, heads: int) -> np.ndarray:
    """Repeat grouped key/value heads (Hkv, T, d) to (heads, T, d)."""
    hkv = k.shape[0]
    if heads % hkv:
        raise ValueError(f"{heads} query heads cannot share {hkv} key/value heads")
    return np.repeat(k, heads // hkv, axis=0) if hkv != heads else k


def _scores_mask(scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    if mask is None:
        return scores
    return np.where(mask[None], scores, -np.inf)


class FloatExecutor:
    """The float32 reference: every multiplication in NumPy.

    Parameters
    ----------
    layers : dict of str to Linear
        The model's linear layers by name.

    Executor protocol (shared by every executor)
    --------------------------------------------
    ``linear(name, x)``
        ``x`` (M, in) float -> (M, out) float32 for the layer ``name``.
    ``attention(name, q, k, v, *, scale, mask=None)``
        ``q`` (H, M, d), ``k`` and ``v`` (Hkv, T, d) with H a multiple of Hkv (grouped
        query attention: query head h uses key/value head ``h // (H // Hkv)``); ``mask``
        (M, T) bool, True where a query may attend, or None. Returns the context
        (M, H * d): ``softmax(scale * q @ k^T) @ v`` per head, heads concatenated.
    """

    def __init__(self, layers: dict[str, Linear]):
        self.layers = layers

    def linear(self, name: str, x: np.ndarray) -> np.ndarray:
        layer = self.layers[name]
        y = np.asarray(x, dtype=np.float32) @ layer.w
        return y + layer.b if layer.b is not None else y

    def attention(self, name: str, q, k, v, *, scale: float, mask=None) -> np.ndarray:
        heads, m, d = q.shape
        k, v = _expand_kv(k, heads), _expand_kv(v, heads)
        scores = _scores_mask(scale * np.einsum("hmd,htd->hmt", q, k), mask)
        ctx = np.einsum("hmt,htd->hmd", softmax(scores), v)
        return ctx.transpose(1, 0, 2).reshape(m, heads * d).astype(np.float32)


# -- schemes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class QuantScheme:
    """How a model is quantized to W8A8.

    Attributes
    ----------
    weights : {"channel", "tensor"}
        Symmetric int8 weights with one scale per output channel, or one per matrix.
    activations : {"static", "dynamic"}
        Linear-layer inputs as int8 with one affine scale and zero point per tensor from
        calibration (``static``; the zero point is folded into the bias), or with one
        symmetric scale per token computed at run time (``dynamic``; the bias is then
        added on the host, since the post-processor's bias is per column).
    smooth : float or None
        SmoothQuant migration strength alpha (0.5 is the paper's default): input channel c
        is divided by ``s_c = max|X_c|**alpha / max|W_c|**(1 - alpha)`` and weight row c is
        multiplied by it, which moves activation outliers into the weights. None: off.
    headroom : float
        Factor by which output ranges (linear outputs, attention scores and context)
        exceed what calibration saw, so unseen text saturates less often.
    """

    weights: str = "channel"
    activations: str = "static"
    smooth: float | None = None
    headroom: float = 1.5

    def __post_init__(self):
        if self.weights not in ("channel", "tensor"):
            raise ValueError(f"weights must be 'channel' or 'tensor', not {self.weights!r}")
        if self.activations not in ("static", "dynamic"):
            raise ValueError(f"activations must be 'static' or 'dynamic', not "
                             f"{self.activations!r}")
        if not 1.0 <= float(self.headroom) <= 8.0:
            raise ValueError(f"headroom must be between 1 and 8, not {self.headroom!r}")
        if self.smooth is not None and not 0.0 <= float(self.smooth) <= 1.0:
            raise ValueError(f"smooth (SmoothQuant alpha) must be in [0, 1] or None, not "
                             f"{self.smooth!r}")

    def describe(self) -> str:
        sm = f", SmoothQuant alpha {self.smooth}" if self.smooth is not None else ""
        act = "static per-tensor" if self.activations == "static" else "dynamic per-token"
        return f"int8 weights per {self.weights}, {act} activations{sm}"


SCHEMES = {
    # The simpler reference point: one scale per weight matrix, no smoothing.
    "baseline": QuantScheme("tensor", "static", None),
    "static": QuantScheme("channel", "static", None),
    "dynamic": QuantScheme("channel", "dynamic", None),
    "smooth-static": QuantScheme("channel", "static", 0.5),
    "smooth-dynamic": QuantScheme("channel", "dynamic", 0.5),
}


def quantize_weights(w: np.ndarray, per: str = "channel") -> tuple[np.ndarray, np.ndarray]:
    """Return symmetric int8 ``(wq, scale)`` of a (in, out) matrix; ``scale`` is (out,)."""
    amax = np.abs(w).max(axis=0) if per == "channel" else \
        np.full(w.shape[1], np.abs(w).max(), dtype=np.float32)
    scale = np.maximum(amax, 1e-12).astype(np.float64) / 127.0
    wq = np.clip(np.rint(w / scale), -127, 127).astype(np.int64)
    return wq, scale


def _affine(lo: float, hi: float) -> tuple[float, int]:
    """Scale and zero point mapping [lo, hi] (widened to hold 0) onto int8 [-128, 127]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    zp = int(np.clip(np.rint(-128 - lo / scale), -128, 127))
    return scale, zp


def _quantize(x: np.ndarray, scale, zp=0) -> np.ndarray:
    return np.clip(np.rint(x / scale) + zp, -128, 127).astype(np.int64)


# -- calibration --------------------------------------------------------------------------

#: Scores further than this below their row's largest get softmax weight below e**-16
#: each, so the int8 range of attention scores need not reach them.
FLOOR_GAP = 16.0

@dataclass
class _Stats:
    """Running per-channel minima and maxima (absmax derives from them)."""

    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def add(self, x: np.ndarray, axis) -> None:
        lo, hi = x.min(axis=axis), x.max(axis=axis)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    @property
    def absmax(self) -> np.ndarray:
        return np.maximum(np.abs(self.lo), np.abs(self.hi))


@dataclass
class Calibration:
    """Observed ranges of every quantized tensor, under one :class:`QuantScheme`."""

    scheme: QuantScheme
    smooth: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: dict[str, _Stats] = field(default_factory=dict)     # per input channel, smoothed
    outputs: dict[str, _Stats] = field(default_factory=dict)    # per output channel
    attn: dict[str, dict[str, _Stats]] = field(default_factory=dict)
    tokens: int = 0


class Calibrator(FloatExecutor):
    """Float32 execution that records what the quantized executor needs to know.

    It runs twice over the calibration text (see :func:`calibrate`): the first pass
    records input-channel ranges, from which the SmoothQuant factors follow; the second
    records the ranges of smoothed inputs and of outputs (for dynamic per-token inputs,
    outputs divided by each token's input scale).
    """

    def __init__(self, layers: dict[str, Linear], cal: Calibration, phase: int):
        super().__init__(layers)
        self.cal, self.phase = cal, phase

    def linear(self, name: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        y = super().linear(name, x)
        if self.phase == 0:
            self.cal.inputs.setdefault(name, _Stats()).add(x, 0)
            return y
        xs = x / self.cal.smooth[name] if name in self.cal.smooth else x
        self.cal.inputs.setdefault(name, _Stats()).add(xs, 0)
        if self.cal.scheme.activations == "dynamic":
            rs = np.maximum(np.abs(xs).max(axis=1, keepdims=True), 1e-8) / 127.0
            out = y - self.layers[name].b if self.layers[name].b is not None else y
            self.cal.outputs.setdefault(name, _Stats()).add(out / rs, 0)
        else:
            self.cal.outputs.setdefault(name, _Stats()).add(y, 0)
        return y

    def attention(self, name: str, q, k, v, *, scale: float, mask=None) -> np.ndarray:
        ctx = super().attention(name, q, k, v, scale=scale, mask=mask)
        if self.phase == 1:
            heads, m, d = q.shape
            st = self.cal.attn.setdefault(name, {})
            st.setdefault("q", _Stats()).add(q, (1, 2))
            st.setdefault("k", _Stats()).add(k, (1, 2))
            st.setdefault("v", _Stats()).add(v, 1)
            sc = scale * np.einsum("hmd,htd->hmt", q, _expand_kv(k, heads))
            per_head = ctx.reshape(m, heads, d).transpose(1, 0, 2)
            unit = np.ones((heads, m, 1))
            if self.cal.scheme.activations == "dynamic":
                # The dynamic path puts scores over each query row's scale through int8.
                unit = np.maximum(np.abs(q).max(axis=2, keepdims=True), 1e-8) / 127.0
                sc = sc / unit
            if mask is not None:
                sc = np.where(mask[None], sc, np.nan)
            # Softmax weighs a score FLOOR_GAP below its row's largest at most e**-16: the
            # int8 range need not reach below the lowest such floor of any row.
            rowmax = np.nanmax(sc, axis=2, keepdims=True)
            floor = np.nanmin(rowmax - FLOOR_GAP / unit, axis=(1, 2))
            st.setdefault("floor", _Stats()).add(floor[:, None], 1)
            st.setdefault("scores", _Stats()).add(np.nan_to_num(sc, nan=0.0), (1, 2))
            st.setdefault("ctx", _Stats()).add(per_head, 1)
        return ctx


def calibrate(run: Callable[[FloatExecutor], object], layers: dict[str, Linear],
              scheme: QuantScheme) -> Calibration:
    """Calibrate ``scheme`` by calling ``run(executor)`` twice over sample inputs.

    ``run`` must push the calibration text through the model with the executor it is
    given (for example ``lambda ex: [model.embed(t, ex) for t in texts]``).
    """
    cal = Calibration(scheme)
    run(Calibrator(layers, cal, 0))
    if scheme.smooth is not None:
        a = float(scheme.smooth)
        for name, st in cal.inputs.items():
            xmax = np.maximum(st.absmax, 1e-5)
            wmax = np.maximum(np.abs(layers[name].w).max(axis=1), 1e-5)
            cal.smooth[name] = np.clip(xmax ** a / wmax ** (1 - a), 1e-2, 1e3).astype(
                np.float32)
    cal.inputs = {}
    run(Calibrator(layers, cal, 1))
    return cal


# -- int8 execution on a Device -----------------------------------------------------------

def _padded_rows(n: int) -> int:
    """Row count a group of ``n`` probability rows is padded to: the next power of two
    below 32, else the next multiple of 32 (at most 2x the work, few distinct shapes)."""
    return 1 << (n - 1).bit_length() if n <= 32 else -(-n // 32) * 32


@dataclass
class _Prepared:
    wq: np.ndarray            # (in, out) int8 values, smoothing folded in
    sw: np.ndarray            # (out,) weight scales
    colsum: np.ndarray        # (out,) sum over rows of wq (zero-point correction)
    handle: object            # the uploaded Weights
    sx: float = 1.0           # static input scale and zero point
    zx: int = 0
    sy: np.ndarray | None = None   # (out,) output scales
    smooth: np.ndarray | None = None


@dataclass
class LayerError:
    """Relative error ``||y_int8 - y_float|| / ||y_float||`` of one layer, same input."""

    calls: int = 0
    sq_err: float = 0.0
    sq_ref: float = 0.0

    @property
    def rel(self) -> float:
        return float(np.sqrt(self.sq_err / self.sq_ref)) if self.sq_ref else 0.0


class QuantExecutor:
    """Run a model's multiplications in int8 on a :class:`llmchip.sw.runtime.Device`.

    Linear layers: the host quantizes the input (after dividing by the SmoothQuant
    factors, which is the same as folding them into the preceding norm), the device
    computes ``int8 x @ int8 w + int32 bias`` and requantizes to int8 with one scale per
    output channel (``mult / 2**shift`` from :meth:`Requant.from_scale`); the host
    dequantizes. Output scales come from calibration; ``out_groups`` makes groups of
    channels share one scale (e.g. the query or key channels of one head of a fused QKV
    projection, so the attention matmuls take those int8 values unchanged).

    Attention: per head, ``q @ k^T`` runs on the device with an affine int8 output (one
    zero point per head); the host applies the mask and the softmax; the probabilities
    go back as int8 with zero point -128 (folded into the bias) for ``p @ v``, whose
    output has one scale per channel. Static scheme: per-head static scales for q and k,
    per-channel static scales for v, probabilities in steps of 1/255. Dynamic scheme:
    one scale per query row (applied on the host) and per key token (applied per column
    by the post-processor), one scale per value token (folded into the probabilities;
    see :meth:`_context_dynamic`): the layout of a per-token int8 KV cache. All heads of
    one call share one device program (a batch) per matmul.

    Parameters
    ----------
    device : llmchip.sw.runtime.Device
    layers : dict of str to Linear
    cal : Calibration
    out_groups : dict of str to array, optional
        Layer name to one group id per output channel; a group shares one output scale.
    refine : dict of str to int, optional
        Layers (logits) whose top outputs per row get a finer second pass (see
        :meth:`_refine`), with how many per row.
    report : bool
        Also run every layer in float on the same input and keep its relative error in
        :attr:`errors` (costs host time, not device time).
    """

    def __init__(self, device, layers: dict[str, Linear], cal: Calibration, *,
                 out_groups: dict[str, np.ndarray] | None = None,
                 refine: dict[str, int] | None = None, report: bool = False):
        self.device, self.layers, self.cal, self.scheme = device, layers, cal, cal.scheme
        self.report = report
        self.refine = dict(refine or {})
        for name, k in self.refine.items():
            if name not in layers or not isinstance(k, int) or k < 1:
                raise ValueError(f"refine wants a layer name and a count >= 1, not "
                                 f"{name!r}: {k!r}")
        self.errors: dict[str, LayerError] = {}
        self.cycles: dict[str, int] = {}
        self.runs: list[dict] = []
        #: SHA-256 over every int8 result the device returned, in order: two backends
        #: that ran the same inputs agree bit for bit when their digests are equal.
        self.digest = hashlib.sha256()
        self.prepared: dict[str, _Prepared] = {}
        missing = [n for n in layers if n not in cal.outputs]
        if missing:
            raise ValueError(f"no calibration data for layer(s) {', '.join(missing[:5])}: "
                             f"run the calibration over text that reaches every layer")
        for name, layer in layers.items():
            self.prepared[name] = self._prepare(name, layer, (out_groups or {}).get(name))

    def _prepare(self, name: str, layer: Linear, group) -> _Prepared:
        sm = self.cal.smooth.get(name)
        w = layer.w * sm[:, None] if sm is not None else layer.w
        wq, sw = quantize_weights(w, self.scheme.weights)
        amax = self.cal.outputs[name].absmax.astype(np.float64) * self.scheme.headroom
        if group is not None:
            ids = np.asarray(group)
            if ids.shape != amax.shape:
                raise ValueError(f"{name}: out_groups gives {ids.shape} group ids for "
                                 f"{amax.shape[0]} outputs")
            top = np.zeros(ids.max() + 1)
            np.maximum.at(top, ids, amax)
            amax = top[ids]
        sy = np.maximum(amax, 1e-6) / 127.0
        p = _Prepared(wq, sw, wq.sum(axis=0), self.device.upload(wq), sy=sy, smooth=sm)
        if self.scheme.activations == "static":
            st = self.cal.inputs[name]
            p.sx, p.zx = _affine(st.lo.min(), st.hi.max())
        return p

    def _account(self, name: str, *results: np.ndarray) -> None:
        for r in results:
            self.digest.update(np.ascontiguousarray(r, dtype=np.int8).tobytes())
        last = self.device.last
        self.cycles[name] = self.cycles.get(name, 0) + int(last.get("cycles", 0))
        self.runs.append({"name": name, **{k: last[k] for k in (
            "cycles", "macs", "array_busy", "dram_read_bytes", "dram_write_bytes",
            "ideal_cycles") if k in last}})

    def _error(self, name: str, y, ref) -> None:
        e = self.errors.setdefault(name, LayerError())
        e.calls += 1
        e.sq_err += float(np.sum((y - ref) ** 2, dtype=np.float64))
        e.sq_ref += float(np.sum(ref.astype(np.float64) ** 2))

    def linear(self, name: str, x: np.ndarray) -> np.ndarray:
        from .runtime import Requant
        layer, p = self.layers[name], self.prepared[name]
        x = np.asarray(x, dtype=np.float32)
        xs = x / p.smooth if p.smooth is not None else x
        bias = layer.b if layer.b is not None else np.zeros(p.sw.shape[0], np.float32)
        if self.scheme.activations == "static":
            xq = _quantize(xs, p.sx, p.zx)
            bq = np.rint(bias / (p.sx * p.sw)) - p.zx * p.colsum
            bq = np.clip(bq, -(1 << 31), (1 << 31) - 1).astype(np.int64)
            yq = self.device.linear(xq, p.handle, bq, Requant.from_scale(p.sx * p.sw / p.sy))
            y = (yq * p.sy).astype(np.float32)
        else:
            rs = np.maximum(np.abs(xs).max(axis=1, keepdims=True), 1e-8) / 127.0
            xq = _quantize(xs, rs)
            yq = self.device.linear(xq, p.handle, None, Requant.from_scale(p.sw / p.sy))
            y = (yq * p.sy * rs + bias).astype(np.float32)
        self._account(name, yq)
        if name in self.refine:
            unit = np.full((x.shape[0], 1), p.sx) if self.scheme.activations == "static" \
                else rs
            y = self._refine(name, xq, unit, y, bias)
        if self.report:
            self._error(name, y, x @ layer.w + (layer.b if layer.b is not None else 0))
        return y

    def _refine(self, name: str, xq: np.ndarray, unit: np.ndarray, y: np.ndarray,
                bias: np.ndarray) -> np.ndarray:
        """Second pass for each row's top candidates, 16x finer and centred on the row.

        Logits as int8 are too coarse to rank close candidates or to score a token's
        probability. For every row, the ``refine[name]`` largest first-pass outputs are
        recomputed as one small operation per row (the rows share one program). The
        centre (the row's largest first-pass output) is subtracted through the bias and
        the step is 1/16 of the first pass's. Outputs that saturate keep their first-pass
        value.
        """
        from .runtime import Requant
        p = self.prepared[name]
        top_k = min(self.refine[name], y.shape[1])
        cand = np.argpartition(-y, top_k - 1, axis=1)[:, :top_k]
        centre = y[np.arange(len(y)), cand[:, 0]] if top_k == 1 else \
            np.take_along_axis(y, cand, axis=1).max(axis=1)
        zx = p.zx if self.scheme.activations == "static" else None
        with self.device.batch() as b:
            plan = []
            for i in range(len(y)):
                c = cand[i]
                # The first pass's step: sy in static mode, sy times the row's input
                # scale in dynamic mode (where sy is per unit of that scale).
                step = float(p.sy[c].max() * (unit[i, 0] if zx is None else 1.0)) / 16.0
                w = p.wq[:, c]
                bq = np.rint((bias[c] - centre[i]) / (unit[i, 0] * p.sw[c])) \
                    - (zx or 0) * p.colsum[c]
                bq = np.clip(bq, -(1 << 31), (1 << 31) - 1).astype(np.int64)
                out = b.linear(xq[i:i + 1], w, bq,
                               Requant.from_scale(unit[i, 0] * p.sw[c] / step))
                plan.append((i, c, step, out))
        self._account(name + ".refine", *(o.value for *_, o in plan))
        y = y.copy()
        for i, c, step, out in plan:
            v = out.value[0]
            ok = (v > -128) & (v < 127)
            y[i, c[ok]] = v[ok] * step + centre[i]
        return y

    def attention(self, name: str, q, k, v, *, scale: float, mask=None) -> np.ndarray:
        from .runtime import Requant
        st = self.cal.attn.get(name)
        if st is None:
            raise ValueError(f"no calibration data for attention {name!r}")
        heads, m, d = q.shape
        group = heads // k.shape[0]
        dyn = self.scheme.activations == "dynamic"
        hr = self.scheme.headroom
        if dyn:
            # One scale per query row and per key token: the key scales are per output
            # column of q @ k^T, which the post-processor applies; the query scales are
            # applied on the host.
            sq = np.maximum(np.abs(q).max(axis=2, keepdims=True), 1e-8) / 127.0  # (H, M, 1)
            sk = np.maximum(np.abs(k).max(axis=2, keepdims=True), 1e-8) / 127.0  # (Hkv,T,1)
        else:
            # The same scales as the projection's grouped outputs (absmax times headroom).
            sq = (np.maximum(st["q"].absmax * hr, 1e-6) / 127.0)[:, None, None]
            sk = (np.maximum(st["k"].absmax * hr, 1e-6) / 127.0)[:, None, None]
        sv = np.maximum(st["v"].absmax * hr, 1e-6) / 127.0                    # (Hkv, d)
        sc = np.maximum(st["ctx"].absmax * hr, 1e-6) / 127.0                  # (H, d)
        qq, kq, vq = _quantize(q, sq), _quantize(k, sk), _quantize(v, sv[:, None, :])
        self._ctx_name = name + ".context"
        # The low end stops at the calibrated floor (minus the same headroom in units of
        # the floor's distance below the top): int8 steps go where softmax looks.
        hi = st["scores"].hi * hr
        lo = np.maximum(st["scores"].lo * hr, st["floor"].lo - (hr - 1) * (hi - st["floor"].lo))
        s_params = [_affine(lo[h], hi[h]) for h in range(heads)]
        with self.device.batch() as b:
            outs = []
            for h in range(heads):
                kv = h // group
                col = scale * sk[kv, :, 0] if dyn else scale * sq[h, 0, 0] * sk[kv, 0, 0]
                outs.append(b.matmul(qq[h], kq[kv].T, Requant.from_scale(
                    col / s_params[h][0], s_params[h][1])))
        self._account(name + ".scores", *(o.value for o in outs))
        scores = np.stack([(o.value - zp) * s for o, (s, zp) in zip(outs, s_params,
                                                                     strict=True)])
        if dyn:
            scores = scores * sq
        probs = softmax(_scores_mask(scores.astype(np.float32), mask))
        if dyn:
            ctx = self._context_dynamic(probs, v, sc, group)
        else:
            # Probabilities as int8 in steps of 1/255 with zero point -128 (folded into
            # the bias); values with static per-channel scales.
            pq = np.clip(np.rint(probs * 255.0) - 128, -128, 127).astype(np.int64)
            with self.device.batch() as b:
                outs = [b.linear(pq[h], vq[h // group], 128 * vq[h // group].sum(axis=0),
                                 Requant.from_scale(sv[h // group] / 255.0 / sc[h]))
                        for h in range(heads)]
            self._account(name + ".context", *(o.value for o in outs))
            ctx = np.stack([o.value * sc[h] for h, o in enumerate(outs)])
        ctx = ctx.transpose(1, 0, 2).reshape(m, heads * d).astype(np.float32)
        if self.report:
            ref = FloatExecutor.attention(self, name, q, k, v, scale=scale, mask=mask)
            self._error(name, ctx, ref)
        return ctx

    def _context_dynamic(self, probs: np.ndarray, v: np.ndarray, sc: np.ndarray,
                         group: int) -> np.ndarray:
        """``probs @ v`` per head with per-token value scales folded into the probabilities.

        Value row t is int8 with its own scale ``s_t``; since ``sum_t p_t v_t = sum_t
        (p_t s_t) v_t / s_t``, the host multiplies column t of the probabilities by
        ``s_t``. Each row of those is int8 over [0, u] with u a power-of-two fraction of
        the head's largest entry, at least the row's own largest; rows sharing u form one
        operation, whose requantization ``u / 255 / sc`` yields the context directly in
        its calibrated per-channel scale ``sc``. A group is padded with zero
        probabilities to a few standard row counts (see :func:`_padded_rows`) so that
        its program shape, and the schedule search behind it, repeats across heads and
        layers.
        """
        from .runtime import Requant
        heads, m, t = probs.shape
        s_t = np.maximum(np.abs(v).max(axis=2), 1e-8) / 127.0              # (Hkv, T)
        vq = _quantize(v, s_t[:, :, None])
        plan = []
        with self.device.batch() as b:
            for h in range(heads):
                kv = h // group
                pp = probs[h] * s_t[kv][None, :]
                top = pp.max(axis=1)
                g = max(float(top.max()), 1e-30)
                j = np.clip(np.floor(-np.log2(np.maximum(top / g, 2.0 ** -15))), 0, 15)
                for jj in np.unique(j):
                    rows = np.flatnonzero(j == jj)
                    u = g * 2.0 ** -jj
                    pq = np.full((_padded_rows(len(rows)), t), -128, dtype=np.int64)
                    pq[:len(rows)] = np.clip(np.rint(pp[rows] / u * 255.0) - 128, -128, 127)
                    out = b.linear(pq, vq[kv], 128 * vq[kv].sum(axis=0),
                                   Requant.from_scale(u / 255.0 / sc[h]))
                    plan.append((h, rows, out))
        self._account(self._ctx_name, *(o.value for _, _, o in plan))
        ctx = np.empty((heads, m, v.shape[2]), dtype=np.float64)
        for h, rows, out in plan:
            ctx[h, rows] = out.value[:len(rows)] * sc[h]
        return ctx

    def error_report(self) -> list[dict]:
        """Per-layer relative output error (only with ``report=True``), worst first."""
        rows = [{"layer": n, "rel_error": e.rel, "calls": e.calls}
                for n, e in self.errors.items()]
        return sorted(rows, key=lambda r: -r["rel_error"])
