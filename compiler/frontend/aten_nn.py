"""ATen lowerings for network ops: matmul/linear/addmm, conv2d, attention, norms, softmax,
upsampling. `LOWERINGS` has the same form as in `aten_ops.py`."""

from __future__ import annotations

from typing import Any

import torch
from torch import fx

from compiler.core.types import DType
from compiler.frontend.aten_ops import arg
from compiler.frontend.lowering import Lowered, LowerFn, Lowering


def _matmul(L: Lowering, a: str, b: str) -> str:
    ta, tb = L.b.type(a), L.b.type(b)
    if ta.rank == 1:
        a = L.emit("reshape", [a], shape=(1, ta.shape[0]))
    if tb.rank == 1:
        b = L.emit("reshape", [b], shape=(tb.shape[0], 1))
    out = L.emit("matmul", [a, b])
    want = L.out_type().shape
    return out if L.b.type(out).shape == want else L.emit("reshape", [out], shape=want)


def lower_matmul(L: Lowering, n: fx.Node) -> Lowered:
    dtype = L.out_type().dtype
    return _matmul(L, L.v(n.args[0], dtype), L.v(n.args[1], dtype))


def lower_linear(L: Lowering, n: fx.Node) -> Lowered:
    x, w = L.t(n.args[0]), L.t(n.args[1])
    wt = L.emit("permute", [w], dims=(1, 0)) if L.b.type(w).rank == 2 else w
    y = _matmul(L, x, wt)
    bias = arg(n, 2, "bias")
    return y if bias is None else L.emit("add", [y, L.t(bias)])


def lower_addmm(L: Lowering, n: fx.Node) -> Lowered:
    dtype = L.out_type().dtype
    bias, m1, m2 = (L.t(a) for a in n.args[:3])
    beta, alpha = n.kwargs.get("beta", 1), n.kwargs.get("alpha", 1)
    y = _matmul(L, m1, m2)
    if alpha != 1:
        y = L.emit("mul", [y, L.scalar(alpha, dtype, exact=True)])
    if beta == 0:  # torch ignores the bias entirely (even NaN) when beta is 0
        return y
    if beta != 1:
        bias = L.emit("mul", [bias, L.scalar(beta, dtype, exact=True)])
    return L.emit("add", [y, bias])


def lower_sdpa(L: Lowering, n: fx.Node) -> Lowered:
    q, k, v = (L.t(a) for a in n.args[:3])
    mask = arg(n, 3, "attn_mask")
    if arg(n, 4, "dropout_p", 0.0):
        raise L.fail("attention dropout_p > 0 (training): call model.eval() and pass 0.0")
    inputs = [q, k, v]
    if mask is not None:
        m = L.t(mask)
        inputs.append(m if L.b.type(m).dtype is DType.bool else L.cast(m, L.b.type(q).dtype))
    return L.emit(
        "sdpa",
        inputs,
        scale=arg(n, 6, "scale"),
        is_causal=bool(arg(n, 5, "is_causal", False)),
        enable_gqa=bool(arg(n, 7, "enable_gqa", False)),
    )


def _norm_params(L: Lowering, n: fx.Node, weight: Any, bias: Any, x: str) -> list[str]:
    """Optional weight/bias inputs; a bias without a weight gets an explicit weight of ones."""
    if weight is None and bias is None:
        return []
    if weight is None:
        size = L.b.type(L.t(bias)).shape
        weight_v = L.emit("full", [], shape=size, value=1.0, dtype=L.b.type(x).dtype)
    else:
        weight_v = L.t(weight)
    return [weight_v] + ([] if bias is None else [L.t(bias)])


def lower_layer_norm(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    ns = tuple(n.args[1])
    params = _norm_params(L, n, arg(n, 2, "weight"), arg(n, 3, "bias"), x)
    out = L.emit("layer_norm", [x] + params, normalized_shape=ns, eps=arg(n, 4, "eps", 1e-5))
    if L.op == "native_layer_norm":
        return [out, "<mean is not supported>", "<rstd is not supported>"]
    return out


def lower_rms_norm(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    weight = arg(n, 2, "weight")
    eps = arg(n, 3, "eps")
    if eps is None:  # torch uses the epsilon of the dtype it computes in (float32 for 16-bit)
        dtype = n.args[0].meta["val"].dtype
        eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    params = [] if weight is None else [L.t(weight)]
    return L.emit("rms_norm", [x] + params, normalized_shape=tuple(n.args[1]), eps=eps)


def lower_group_norm(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    if L.op == "native_group_norm":
        weight, bias, groups, eps = n.args[1], n.args[2], n.args[6], n.args[7]
    else:
        groups = n.args[1]
        weight, bias, eps = arg(n, 2, "weight"), arg(n, 3, "bias"), arg(n, 4, "eps", 1e-5)
    params = _norm_params(L, n, weight, bias, x)
    out = L.emit("group_norm", [x] + params, groups=groups, eps=eps)
    if L.op == "native_group_norm":
        return [out, "<mean is not supported>", "<rstd is not supported>"]
    return out


def lower_softmax(L: Lowering, n: fx.Node) -> Lowered:
    out = L.out_type()
    x = L.cast(L.t(n.args[0]), out.dtype)
    dim = n.args[1] % max(out.rank, 1)
    op = "log_softmax" if "log" in L.op else "softmax"
    return L.emit(op, [x], dim=dim)


def lower_convolution(L: Lowering, n: fx.Node) -> Lowered:
    x, w = L.t(n.args[0]), L.t(n.args[1])
    bias = arg(n, 2, "bias")
    stride, padding, dilation = (  # one value for both dims, as torch accepts
        tuple(arg(n, i, k)) * (2 if len(arg(n, i, k)) == 1 else 1)
        for i, k in ((3, "stride"), (4, "padding"), (5, "dilation"))
    )
    transposed, groups = arg(n, 6, "transposed", False), arg(n, 8, "groups", 1)
    if transposed:
        raise L.fail("transposed convolution is not supported")
    if L.b.type(x).rank != 4 or len(stride) != 2:
        raise L.fail(f"only 2-d convolution is supported, got a rank-{L.b.type(x).rank} input")
    if isinstance(padding[0], str):
        raise L.fail(f"padding={padding!r}: only explicit integer padding is supported")
    inputs = [x, w] + ([] if bias is None else [L.t(bias)])
    return L.emit(
        "conv2d", inputs, stride=stride, padding=padding, dilation=dilation, groups=groups
    )


def lower_upsample_nearest2d(L: Lowering, n: fx.Node) -> Lowered:
    out = L.out_type()
    scales = (
        arg(n, 2, "scale_factors")
        if n.target._overloadname == "vec"
        else (arg(n, 2, "scales_h"), arg(n, 3, "scales_w"))
    )
    if scales is not None and any(s is None for s in scales):
        scales = None
    return L.emit(
        "upsample_nearest2d",
        [L.t(n.args[0])],
        size=out.shape[2:],
        scales=None if scales is None else tuple(float(s) for s in scales),
    )


LOWERINGS: dict[str, LowerFn] = {
    "convolution": lower_convolution,
    "upsample_nearest2d": lower_upsample_nearest2d,
    **{name: lower_matmul for name in ("mm", "bmm", "matmul")},
    "linear": lower_linear,
    "addmm": lower_addmm,
    "scaled_dot_product_attention": lower_sdpa,
    "layer_norm": lower_layer_norm,
    "native_layer_norm": lower_layer_norm,
    "rms_norm": lower_rms_norm,
    "group_norm": lower_group_norm,
    "native_group_norm": lower_group_norm,
    **{name: lower_softmax for name in ("_softmax", "softmax", "_log_softmax", "log_softmax")},
}
