"""Compute anchors (`matmul`, `conv2d`, `sdpa`) and composites kept whole until fusion (norms,
softmax, GELU, SiLU). Each composite's NumPy reference in `compiler.core.ops.ref` is its
decomposition."""

from __future__ import annotations

from compiler.core.errors import OpTypeError
from compiler.core.ops import rules as r
from compiler.core.ops.opdef import REQUIRED, OpDef
from compiler.core.types import TensorType


def _matmul(ts: r.Types, a: r.Attrs) -> TensorType:
    x, w = ts
    if x.rank < 2 or w.rank < 2:
        raise OpTypeError(f"matmul: operands must have rank >= 2, got {x} and {w}")
    dtype = r.same_dtype(ts, "matmul")
    if x.shape[-1] != w.shape[-2]:
        raise OpTypeError(f"matmul: inner sizes differ: {x} @ {w}")
    batch = r.broadcast_shapes(x.shape[:-2], w.shape[:-2])
    return TensorType(batch + (x.shape[-2], w.shape[-1]), dtype)


def conv_out_size(size: int, k: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (k - 1) - 1) // stride + 1


def _conv2d(ts: r.Types, a: r.Attrs) -> TensorType:
    x, w = ts[0], ts[1]
    dtype = r.same_dtype(ts, "conv2d")
    r.require_float(x, "conv2d")
    if x.rank != 4 or w.rank != 4:
        raise OpTypeError(f"conv2d: needs x[N,C,H,W] and w[O,C/groups,kh,kw], got {x} and {w}")
    groups = a["groups"]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    if c != cg * groups or o % groups:
        raise OpTypeError(f"conv2d: {c} input channels, weight {w}, groups={groups} disagree")
    if len(ts) == 3 and ts[2].shape != (o,):
        raise OpTypeError(f"conv2d: bias must be [{o}], got {ts[2]}")
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    oh, ow = conv_out_size(h, kh, sh, ph, dh), conv_out_size(wd, kw, sw, pw, dw)
    if oh < 1 or ow < 1:
        raise OpTypeError(f"conv2d: kernel {kh}x{kw} does not fit input {h}x{wd}")
    return TensorType((n, o, oh, ow), dtype)


def _sdpa(ts: r.Types, a: r.Attrs) -> TensorType:
    q, k, v = ts[:3]
    if q.rank < 3 or k.rank != q.rank or v.rank != q.rank:
        raise OpTypeError(f"sdpa: q, k, v must share a rank >= 3, got {q}, {k}, {v}")
    dtype = r.same_dtype(ts[:3], "sdpa")
    r.require_float(q, "sdpa")
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise OpTypeError(f"sdpa: q/k head dims or k/v lengths differ: {q}, {k}, {v}")
    hq, hk = q.shape[-3], k.shape[-3]
    if hq != hk and not (a["enable_gqa"] and hk > 0 and hq % hk == 0):
        raise OpTypeError(f"sdpa: {hq} query heads vs {hk} key heads needs enable_gqa=True")
    if len(ts) == 4:
        m = ts[3]
        if m.dtype.value != "bool" and m.dtype != dtype:
            raise OpTypeError(f"sdpa: mask must be bool or {dtype.value}, got {m}")
        scores = q.shape[:-1] + (k.shape[-2],)
        if r.broadcast_shapes(m.shape, scores) != scores:
            raise OpTypeError(f"sdpa: mask {m} must broadcast to the scores {list(scores)}")
    batch = r.broadcast_shapes(q.shape[:-3], k.shape[:-3])
    return TensorType(batch + (hq, q.shape[-2], v.shape[-1]), dtype)


def _affine_norm(what: str, axes_of: str) -> r.TypeRule:
    def rule(ts: r.Types, a: r.Attrs) -> TensorType:
        x = ts[0]
        r.require_float(x, what)
        if axes_of == "normalized_shape":
            ns = tuple(a["normalized_shape"])
            if x.shape[len(x.shape) - len(ns) :] != ns:
                raise OpTypeError(f"{what}: {x} does not end in normalized_shape {list(ns)}")
            param_shape = ns
        else:
            if x.rank < 2 or x.shape[1] % a["groups"]:
                raise OpTypeError(f"{what}: {x} channels not divisible by {a['groups']} groups")
            param_shape = (x.shape[1],)
        for p in ts[1:]:
            if p.shape != param_shape or p.dtype != x.dtype:
                raise OpTypeError(f"{what}: weight/bias must be {x.dtype.value}{list(param_shape)}")
        return x

    return rule


def _softmax(ts: r.Types, a: r.Attrs) -> TensorType:
    r.require_float(ts[0], "softmax")
    r.norm_dim(a["dim"], ts[0].rank)
    return ts[0]


def _gelu(ts: r.Types, a: r.Attrs) -> TensorType:
    if a["approximate"] not in ("none", "tanh"):
        raise OpTypeError(f"gelu: approximate must be 'none' or 'tanh', got {a['approximate']!r}")
    return r.unary_float(ts, a)


OPS = [
    OpDef(
        "conv2d",
        "compute",
        (2, 3),
        _conv2d,
        "ref.conv2d({inputs}, stride={stride}, padding={padding}, dilation={dilation}, "
        "groups={groups})",
        "2-d cross-correlation x[N,C,H,W] * w[O,C/groups,kh,kw] (+ b[O]), zero padding",
        (("stride", (1, 1)), ("padding", (0, 0)), ("dilation", (1, 1)), ("groups", 1)),
        ("aten.convolution (2-d, not transposed)",),
    ),
    OpDef(
        "matmul",
        "compute",
        (2, 2),
        _matmul,
        "np.matmul({0}, {1})",
        "batched x @ w with broadcast batch dims",
        (),
        ("aten.mm", "aten.bmm", "aten.matmul", "aten.linear", "aten.addmm"),
    ),
    OpDef(
        "sdpa",
        "compute",
        (3, 4),
        _sdpa,
        "ref.sdpa({inputs}, scale={scale}, is_causal={is_causal}, enable_gqa={enable_gqa})",
        "softmax(q @ k^T * scale + mask) @ v; bool mask keeps True; causal; grouped-query heads",
        (("scale", None), ("is_causal", False), ("enable_gqa", False)),
        ("aten.scaled_dot_product_attention",),
    ),
    OpDef(
        "layer_norm",
        "composite",
        (1, 3),
        _affine_norm("layer_norm", "normalized_shape"),
        "ref.layer_norm({inputs}, normalized_shape={normalized_shape}, eps={eps})",
        "(x - mean) / sqrt(var + eps) * w + b over the trailing normalized_shape",
        (("normalized_shape", REQUIRED), ("eps", 1e-5)),
        ("aten.layer_norm", "aten.native_layer_norm (output 0)"),
    ),
    OpDef(
        "rms_norm",
        "composite",
        (1, 2),
        _affine_norm("rms_norm", "normalized_shape"),
        "ref.rms_norm({inputs}, normalized_shape={normalized_shape}, eps={eps})",
        "x / sqrt(mean(x^2) + eps) * w over the trailing normalized_shape",
        (("normalized_shape", REQUIRED), ("eps", REQUIRED)),
        ("aten.rms_norm",),
    ),
    OpDef(
        "group_norm",
        "composite",
        (1, 3),
        _affine_norm("group_norm", "groups"),
        "ref.group_norm({inputs}, groups={groups}, eps={eps})",
        "normalize x[N, C, *] over groups of C/groups channels, then per-channel w, b",
        (("groups", REQUIRED), ("eps", 1e-5)),
        ("aten.group_norm", "aten.native_group_norm (output 0)"),
    ),
    OpDef(
        "softmax",
        "composite",
        (1, 1),
        _softmax,
        "ref.softmax({0}, dim={dim})",
        "exp(x - max) / sum(exp(x - max)) along dim",
        (("dim", REQUIRED),),
        ("aten._softmax", "aten.softmax", "aten._safe_softmax"),
    ),
    OpDef(
        "log_softmax",
        "composite",
        (1, 1),
        _softmax,
        "ref.log_softmax({0}, dim={dim})",
        "x - max - log(sum(exp(x - max))) along dim",
        (("dim", REQUIRED),),
        ("aten._log_softmax", "aten.log_softmax"),
    ),
    OpDef(
        "gelu",
        "composite",
        (1, 1),
        _gelu,
        "ref.gelu({0}, approximate={approximate})",
        "x * Phi(x); 'tanh': 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))",
        (("approximate", "none"),),
        ("aten.gelu",),
    ),
    OpDef(
        "silu",
        "composite",
        (1, 1),
        r.unary_float,
        "ref.silu({0})",
        "x * sigmoid(x)",
        (),
        ("aten.silu",),
    ),
]
