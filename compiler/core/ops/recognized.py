"""Composites that exist because recognition rewrites find them (passes/recognize.py): gates,
rotary embedding and adaLN modulation. Users' code never names them; the frontend never emits
them. Each is one elementwise expression over broadcast inputs, kept whole so fusion can put it
in a GEMM epilogue or an attention prologue.
"""

from __future__ import annotations

from compiler.core.errors import OpTypeError
from compiler.core.ops import rules as r
from compiler.core.ops.opdef import OpDef
from compiler.core.types import TensorType


def _broadcast_float(ts: r.Types, a: r.Attrs) -> TensorType:
    out = TensorType(r.broadcast_shapes(*(t.shape for t in ts)), r.same_dtype(ts, "this op"))
    r.require_float(out, "this op")
    return out


def _rope(ts: r.Types, a: r.Attrs) -> TensorType:
    out = _broadcast_float(ts, a)
    if out != ts[0]:
        raise OpTypeError(f"rope: cos/sin must broadcast to x {ts[0]}, got {ts[1]}, {ts[2]}")
    if ts[0].shape[-1] % 2:
        raise OpTypeError(f"rope: the rotated dim must be even, got {ts[0]}")
    return out


def _geglu(ts: r.Types, a: r.Attrs) -> TensorType:
    if a["approximate"] not in ("none", "tanh"):
        raise OpTypeError(f"geglu: approximate must be 'none' or 'tanh', got {a['approximate']!r}")
    return _broadcast_float(ts, a)


OPS = [
    OpDef(
        "swiglu",
        "composite",
        (2, 2),
        _broadcast_float,
        "ref.silu({0}) * {1}",
        "silu(gate) * up: the SwiGLU gate (LLaMA MLPs)",
        (),
        ("recognized: mul(silu(a), b)",),
    ),
    OpDef(
        "geglu",
        "composite",
        (2, 2),
        _geglu,
        "{0} * ref.gelu({1}, approximate={approximate})",
        "h * gelu(gate): the GEGLU gate (diffusion feed-forwards)",
        (("approximate", "none"),),
        ("recognized: mul(a, gelu(b))",),
    ),
    OpDef(
        "rope",
        "composite",
        (3, 3),
        _rope,
        "ref.rope({0}, {1}, {2})",
        "x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])",
        (),
        ("recognized: add(mul(x, cos), mul(cat(neg(x2), x1), sin))",),
    ),
    OpDef(
        "adaln_modulate",
        "composite",
        (3, 3),
        _broadcast_float,
        "{0} * (1 + {1}) + {2}",
        "x * (1 + scale) + shift: adaLN modulation (DiT)",
        (),
        ("recognized: add(mul(x, add(scale, 1)), shift)",),
    ),
]
