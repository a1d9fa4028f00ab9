"""NumPy references for ops that are more than one NumPy call.

These functions *define* the semantics of their ops: every backend is checked against them. They
compute in the dtype of their float inputs (the NumPy backend passes float32 or float64) and
follow PyTorch's definitions (biased variance in norms, `tril` causal masks aligned top-left,
fully masked attention rows giving 0 as `_safe_softmax` does).
"""

from __future__ import annotations

import math

import numpy as np

from compiler.core.errors import IndexOutOfRangeError

_erf = np.frompyfunc(math.erf, 1, 1)


def check_index(
    ids: np.ndarray, size: int, lowest: int, op: str, node: str = "", source: str = ""
) -> None:
    """Raise `IndexOutOfRangeError` if an entry of `ids` is outside [lowest, size)."""
    if ids.size and (ids.min() < lowest or ids.max() >= size):
        bad = int(ids.min()) if ids.min() < lowest else int(ids.max())
        raise IndexOutOfRangeError(op, node, source, bad, size, lowest)


def embedding(w: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows `ids` of the table `w`; an id outside [0, rows) is an error, as in eager (NumPy
    alone would read a negative id from the end)."""
    check_index(ids, w.shape[0], 0, "embedding")
    return np.take(w, ids, axis=0)


def round_to_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept as float32."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounded = (bits + (((bits >> 16) & 1) + np.uint32(0x7FFF))) & np.uint32(0xFFFF0000)
    return np.where(np.isnan(x), x, rounded.view(np.float32))


def cast(x: np.ndarray, to: str, np_type: type, src: str = "") -> np.ndarray:
    """Convert from IR dtype `src` to IR dtype `to`, stored as `np_type`. bf16 and f16 values
    live in float32 arrays here, unrounded between ops; a cast first rounds them to `src` (the
    value a torch tensor would hold) and a cast to a narrower float rounds to it."""
    if src in ("bf16", "f16") and to != src:
        x = cast(x, src, np.float32)
    if to == "bf16":
        return round_to_bf16(x).astype(np_type)
    if to in ("f16", "f32"):
        return x.astype(np.float16 if to == "f16" else np.float32).astype(np_type)
    return x.astype(np_type)


def erf(x: np.ndarray) -> np.ndarray:
    return np.asarray(_erf(x), dtype=x.dtype)


def sigmoid(x: np.ndarray) -> np.ndarray:
    # exp of a non-positive number only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def silu(x: np.ndarray) -> np.ndarray:
    return x * sigmoid(x)


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    if approximate == "tanh":
        inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
        return 0.5 * x * (1 + np.tanh(inner))
    return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))


def softmax(x: np.ndarray, dim: int, safe: bool = False) -> np.ndarray:
    """`safe`: a row that is all -inf gives zeros (torch's `_safe_softmax`), not NaN."""
    m = np.max(x, axis=dim, keepdims=True, initial=-np.inf)  # initial: an empty row too
    m = np.where(np.isfinite(m), m, 0)
    e = np.exp(x - m)
    s = np.sum(e, axis=dim, keepdims=True)
    return e / np.where(s == 0, 1, s) if safe else e / s


def log_softmax(x: np.ndarray, dim: int) -> np.ndarray:
    m = np.max(x, axis=dim, keepdims=True, initial=-np.inf)
    m = np.where(np.isfinite(m), m, 0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=dim, keepdims=True))


def _affine(y: np.ndarray, params: tuple[np.ndarray, ...], channel_axis: int | None) -> np.ndarray:
    if channel_axis is not None:  # group_norm: per-channel params on axis 1
        params = tuple(p.reshape((-1,) + (1,) * (y.ndim - 2)) for p in params)
    if len(params) >= 1:
        y = y * params[0]
    if len(params) == 2:
        y = y + params[1]
    return y


def layer_norm(
    x: np.ndarray, *params: np.ndarray, normalized_shape: tuple[int, ...], eps: float
) -> np.ndarray:
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
    return _affine((x - mean) / np.sqrt(var + eps), params, None)


def rms_norm(
    x: np.ndarray, *params: np.ndarray, normalized_shape: tuple[int, ...], eps: float
) -> np.ndarray:
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    ms = np.mean(np.square(x), axis=axes, keepdims=True)
    return _affine(x / np.sqrt(ms + eps), params, None)


def group_norm(x: np.ndarray, *params: np.ndarray, groups: int, eps: float) -> np.ndarray:
    g = x.reshape((x.shape[0], groups, math.prod(x.shape[1:]) // groups))  # a batch of 0 too
    mean = np.mean(g, axis=2, keepdims=True)
    var = np.mean(np.square(g - mean), axis=2, keepdims=True)
    y = ((g - mean) / np.sqrt(var + eps)).reshape(x.shape)
    return _affine(y, params, 1)


def sdpa(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    scale: float | None,
    is_causal: bool,
    enable_gqa: bool,
) -> np.ndarray:
    hq, hk = q.shape[-3], k.shape[-3]
    if hq != hk:  # grouped-query attention: each key head serves hq/hk query heads
        k = np.repeat(k, hq // hk, axis=-3)
        v = np.repeat(v, hq // hk, axis=-3)
    if scale is None:
        scale = 1 / math.sqrt(q.shape[-1])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    length, source = scores.shape[-2:]
    if is_causal:
        keep = np.tril(np.ones((length, source), dtype=bool))
        scores = np.where(keep, scores, -np.inf)
    if mask is not None:
        keep_or_add = mask.dtype == bool
        scores = np.where(mask, scores, -np.inf) if keep_or_add else scores + mask
    return np.matmul(softmax(scores, -1, safe=True), v)


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> np.ndarray:
    """Cross-correlation as im2col: a strided window view, then one contraction per group."""
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.ascontiguousarray(np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    s = xp.strides
    windows = np.lib.stride_tricks.as_strided(
        xp,
        shape=(n, groups, cg, oh, ow, kh, kw),
        strides=(s[0], s[1] * cg, s[1], s[2] * sh, s[3] * sw, s[2] * dh, s[3] * dw),
        writeable=False,
    )
    wg = w.reshape(groups, o // groups, cg, kh, kw)
    out = np.einsum("ngchwij,gocij->ngohw", windows, wg, optimize=True).reshape(n, o, oh, ow)
    return out if b is None else out + b.reshape(1, o, 1, 1)


def upsample_nearest2d(
    x: np.ndarray, *, size: tuple[int, int], scales: tuple[float, float] | None
) -> np.ndarray:
    """torch's "nearest": source index floor(dst * in/out), or floor(dst / scale_factor)."""
    idx = []
    for axis, out in zip((2, 3), size, strict=True):
        n_in = x.shape[axis]
        step = n_in / out if scales is None else 1.0 / scales[axis - 2]
        idx.append(np.minimum(np.floor(np.arange(out) * step).astype(np.int64), n_in - 1))
    return x[:, :, idx[0][:, None], idx[1][None, :]]


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin
