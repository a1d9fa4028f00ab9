"""canonicalize: one normal form, so later rules match once.

Removes no-op movement and casts, composes chains of reshapes and permutes, drops identity
arithmetic with scalar constants, writes `pow(x, 2)` as `mul(x, x)` and a reduction of a 0-d
tensor as its element. Types never change.
Nodes left unused stay for `eliminate_dead_code`.

Example:
    Before:
        v0: f32[3,2] = reshape(x, shape=(3, 2))
        v1: f32[2,3] = reshape(v0, shape=(2, 3))
        v2: f32[()] = full(shape=(), value=1.0, dtype=f32)
        v3: f32[2,3] = mul(v1, v2)
        return (v3,)
    After:
        v0: f32[3,2] = reshape(x, shape=(3, 2))
        v1: f32[()] = full(shape=(), value=1.0, dtype=f32)
        return (x,)
"""

from __future__ import annotations

import math
from collections.abc import Callable

from compiler.core.ir import Graph, Node
from compiler.core.types import DType
from passes.rewrite import Rewriter, Rule, apply_rules


def scalar_value(rw: Rewriter, name: str) -> float | int | bool | None:
    """The value of a 0-d (or any uniform) `full`, else None."""
    p = rw.producer_op(name, "full")
    return None if p is None else p.attr("value")


def _same_type_as_input(node: Node, rw: Rewriter, i: int = 0) -> str | None:
    x = node.inputs[i]
    return x if rw.type(x) == node.out.type else None


def _reshape_of_reshape(node: Node, rw: Rewriter) -> str | None:
    p = rw.producer_op(node.inputs[0], "reshape")
    if p is None:
        return None
    return rw.emit("reshape", [p.inputs[0]], {"shape": node.attr("shape")})


def _identity_permute(node: Node, rw: Rewriter) -> str | None:
    dims = node.attr("dims")
    return node.inputs[0] if tuple(dims) == tuple(range(len(dims))) else None


def _permute_of_permute(node: Node, rw: Rewriter) -> str | None:
    p = rw.producer_op(node.inputs[0], "permute")
    if p is None:
        return None
    inner, outer = p.attr("dims"), node.attr("dims")
    return rw.emit("permute", [p.inputs[0]], {"dims": tuple(inner[d] for d in outer)})


def _full_slice(node: Node, rw: Rewriter) -> str | None:
    return _same_type_as_input(node, rw) if node.attr("step") == 1 else None


def _single_cat(node: Node, rw: Rewriter) -> str | None:
    return node.inputs[0] if len(node.inputs) == 1 else None


_FLOAT_BITS = {DType.bf16: (8, 8), DType.f16: (5, 11), DType.f32: (8, 24), DType.f64: (11, 53)}


def _exact(src: DType, mid: DType) -> bool:
    """Whether every `src` value survives a round trip through `mid`."""
    if src == mid:
        return True
    if src.is_float and mid.is_float:
        (e0, m0), (e1, m1) = _FLOAT_BITS[src], _FLOAT_BITS[mid]
        return e1 >= e0 and m1 >= m0
    if src is DType.bool:
        return True
    return src is DType.i32 and mid in (DType.i64, DType.f64)


def _cast_of_cast(node: Node, rw: Rewriter) -> str | None:
    p = rw.producer_op(node.inputs[0], "cast")
    if p is None:
        return None
    x = p.inputs[0]
    src, mid, dst = rw.type(x).dtype, p.attr("dtype"), node.attr("dtype")
    if not _exact(src, mid):
        return None
    return x if src == dst else rw.emit("cast", [x], {"dtype": dst})


def _is_identity(node: Node, rw: Rewriter, c: str, other: str, value: float) -> bool:
    v = scalar_value(rw, c)
    if v is None or v != value:
        return False
    # x + 0.0 turns -0.0 into +0.0: for floats only -0.0 is the identity of add
    if node.op == "add" and rw.type(other).dtype.is_float:
        return math.copysign(1.0, v) < 0
    return True


def _identity_with(value: float) -> Callable[[Node, Rewriter], str | None]:
    def build(node: Node, rw: Rewriter) -> str | None:
        x, c = node.inputs
        if _is_identity(node, rw, c, x, value) and rw.type(x) == node.out.type:
            return x
        if node.op in ("add", "mul") and _is_identity(node, rw, x, c, value):
            return _same_type_as_input(node, rw, 1)
        return None

    return build


def _square(node: Node, rw: Rewriter) -> str | None:
    x, c = node.inputs
    if scalar_value(rw, c) == 2 and rw.type(x) == node.out.type:
        return rw.emit("mul", [x, x])
    return None


def _reduce_one(node: Node, rw: Rewriter) -> str | None:
    """A reduction (or cumsum, softmax) over a 0-d tensor, whose one element is its row:
    the element itself, or exp(x - x) / x - x for (log_)softmax (NaN stays NaN). Backends
    index a reduced dimension, and a 0-d tensor has none."""
    x = node.inputs[0]
    if rw.type(x).rank != 0:
        return None
    y = x
    if node.op in ("softmax", "log_softmax"):
        y = rw.emit("sub", [x, x])
        y = rw.emit("exp", [y]) if node.op == "softmax" else y
    dtype = node.out.type.dtype
    return y if rw.type(y).dtype == dtype else rw.emit("cast", [y], {"dtype": dtype})


def _neg_neg(node: Node, rw: Rewriter) -> str | None:
    p = rw.producer_op(node.inputs[0], "neg")
    return p.inputs[0] if p is not None else None


CANONICALIZE_RULES = [
    Rule("reshape(x) => x  (same shape)", "reshape", _same_type_as_input),
    Rule("reshape(reshape(x)) => reshape(x)", "reshape", _reshape_of_reshape),
    Rule("permute(x, identity) => x", "permute", _identity_permute),
    Rule("permute(permute(x, p), q) => permute(x, p[q])", "permute", _permute_of_permute),
    Rule("expand(x) => x  (same shape)", "expand", _same_type_as_input),
    Rule("slice(x) => x  (whole dim)", "slice", _full_slice),
    Rule("cat(x) => x", "cat", _single_cat),
    Rule("cast(x, x.dtype) => x", "cast", _same_type_as_input),
    Rule("cast(cast(x, exact), t) => cast(x, t)", "cast", _cast_of_cast),
    Rule("mul(x, 1) => x", "mul", _identity_with(1)),
    Rule("add(x, 0) => x  (integer 0, or -0.0)", "add", _identity_with(0)),
    Rule("sub(x, 0) => x", "sub", _identity_with(0)),
    Rule("div(x, 1) => x", "div", _identity_with(1)),
    Rule("pow(x, 2) => mul(x, x)", "pow", _square),
    Rule("neg(neg(x)) => x", "neg", _neg_neg),
    *(
        Rule(f"{op}(x) => x  (x 0-d)", op, _reduce_one)
        for op in ("sum", "mean", "amax", "amin", "cumsum")
    ),
    Rule("softmax(x) => exp(x - x)  (x 0-d)", "softmax", _reduce_one),
    Rule("log_softmax(x) => x - x  (x 0-d)", "log_softmax", _reduce_one),
]


def canonicalize(g: Graph, rules: list[Rule] = CANONICALIZE_RULES) -> Graph:
    """Rewrite `g` to canonical form (see the module docstring)."""
    return apply_rules(g, rules)
