"""recognize_attention: hand-written attention becomes one `sdpa`, and `sdpa` absorbs the
grouped-query head repeat and the causal mask that surround it.

Runs after canonicalize, constant folding, CSE and DCE: permute chains are composed, scalars are
0-d `full` nodes and mask-building code has folded to a `constant` node. Types never change;
nodes left unused stay for `eliminate_dead_code`. Rules (ATTENTION_RULES):

1. `matmul(softmax(q @ k^T * c [+ mask]), v) => sdpa(q, k, v[, mask], scale=c)`, the scale a
   scalar constant multiplied or divided, on the scores or on q; softmax may sit in casts to a
   wider float and back (bf16 models).
2. `where(keep, scores, -inf)` (or `where(drop, -inf, scores)`, a masked_fill) inside the softmax
   => the same with a bool mask.
3. `sdpa(q, repeat_kv(k, n), repeat_kv(v, n)) => sdpa(q, k, v, enable_gqa=True)`, where
   repeat_kv(k, n) is Hugging Face's
   `reshape(expand(reshape(k, [B, Hk, 1, S, D]), [B, Hk, n, S, D]), [B, Hk*n, S, D])`:
   query head h reads key head h // n, torch's GQA (a repeat over another dim is declined).
4. `sdpa(q, k, v, tril mask) => sdpa(q, k, v, is_causal=True)`: a constant bool mask equal to
   tril(ones(L, S)) (top-left, torch's is_causal) in every leading index, or a float one that
   is 0 there and masked (see below) elsewhere.

Example (then eliminate_dead_code):
    Before:
        v0: f32[1,2,16,8] = permute(k, dims=(0, 1, 3, 2))
        v1: f32[1,2,8,8] = matmul(q, v0)
        v2: f32[()] = full(shape=(), value=0.25, dtype=f32)
        v3: f32[1,2,8,8] = mul(v1, v2)
        v4: f32[1,2,8,8] = softmax(v3, dim=3)
        v5: f32[1,2,8,16] = matmul(v4, v)
    After:
        v0: f32[1,2,8,16] = sdpa(q, k, v, scale=0.25, is_causal=False, enable_gqa=False)

Note [Fully masked rows]
Our `sdpa` gives 0 for a query row whose keys are all masked (torch's `_safe_softmax`), where
hand-written code gives NaN (a -inf fill or additive mask) or uniform weights (a finite fill).
The rewrites are exact for every row that keeps at least one key. "Masked" means a fill or
additive value of -inf, or at the far end of the dtype's range (at or below half its most
negative finite value, `masked_below`: `torch.finfo(dtype).min`, which Hugging Face fills
with): its exp is exactly 0 next to any kept score, as -inf's is, for any scores the dtype
holds. A moderate value such as -1e4 is not: it removes a key only while no masked score is
~1e4 above the kept ones (a fill, no kept score ~1e4 below it), which depends on the values,
so such masks stay as written (additive masks stay sdpa's additive mask, exact). A causal mask
never masks a whole row, so rule 4 is exact.

Note [Which transposes are keys]
`matmul(q, permute(x, d))` is attention over keys `k = permute(x, d')`, d' being d with its last
two entries swapped, when the permute moves x's last dim (the head dim) into the contraction
position: d[-2] == rank - 1. That covers `k.transpose(-1, -2)` (d' is the identity, k = x) and
GPT-2's `k.transpose(1, 2).transpose(-1, -2)`, composed by canonicalize to d = (0, 2, 3, 1), for
which k = permute(x, (0, 2, 1, 3)) is emitted. Other permutes are declined.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from compiler.core.errors import OpTypeError
from compiler.core.ir import ConstArray, Graph, Node
from compiler.core.ops import infer_type
from compiler.core.types import DType, TensorType
from passes.match import Env, Op, Pattern, Var, match
from passes.rewrite import Rewriter, Rule, apply_rules


def masked_below(dtype: DType) -> float:
    """An additive mask value or fill at or below this (or -inf) removes a key, whatever the
    scores (Note [Fully masked rows]): half the most negative finite value of `dtype`."""
    return -dtype.max_finite / 2


def _scalar(name: str, rw: Rewriter) -> float | None:
    """The value of a one-element float `full`, else None."""
    p, t = rw.producer_op(name, "full"), rw.type(name)
    return float(p.attr("value")) if p is not None and t.dtype.is_float and t.numel == 1 else None


def _is_scalar(name: str, rw: Rewriter) -> bool:
    return _scalar(name, rw) is not None


def _is_masked_fill(name: str, rw: Rewriter) -> bool:
    p = rw.producer_op(name, "full")
    dtype = rw.type(name).dtype
    return p is not None and dtype.is_float and p.attr("value") <= masked_below(dtype)


# ----------------------------------------------------------------------------- patterns
# Rooted at the attention weights (the first input of the final matmul); every combination of
# the optional pieces is spelled out, so one `match` call decides.


def _scaled(inner: Pattern, name: str) -> list[Pattern]:
    """inner * c, inner / c, inner (c a scalar constant bound as `name`_c); scaled first, so
    the scale is folded into sdpa whenever it is there."""
    c = Var(f"{name}_c", where=_is_scalar)
    return [Op("mul", inner, c, bind=name), Op("div", inner, c, bind=name), inner]


_KEYS_T = Op("permute", Var("k_t"), bind="permute")
SCORES = [
    s for q in _scaled(Var("q"), "q_scaled") for s in _scaled(Op("matmul", q, _KEYS_T), "scaled")
]
_FILL = Var("fill", where=_is_masked_fill)
ADDITIVE = [m for s in SCORES for m in (Op("add", s, Var("mask")), s)]
BOOL_MASKED = [
    m
    for s in SCORES
    for m in (Op("where", Var("keep"), s, _FILL), Op("where", Var("drop"), _FILL, s))
]
_WIDE = (DType.f32, DType.f64)


def _weights(masked: list[Pattern]) -> list[Pattern]:
    """softmax(x) and cast(softmax(cast(x, f32)), t), x one of `masked` (sdpa's type rule
    then checks that t is x's dtype: q, k and v share one)."""
    return [
        p
        for x in masked
        for p in (
            Op("softmax", x, bind="softmax"),
            Op("cast", Op("softmax", Op("cast", x, dtype=lambda d: d in _WIDE), bind="softmax")),
        )
    ]


ADDITIVE_WEIGHTS = _weights(ADDITIVE)
BOOL_MASKED_WEIGHTS = _weights(BOOL_MASKED)


def _first_match(patterns: Sequence[Pattern], value: str, rw: Rewriter) -> Env | None:
    for p in patterns:
        env = match(p, value, rw)
        if env is not None:
            return env
    return None


# ----------------------------------------------------------------------------- building


def _types_as(node: Node, types: list[TensorType], attrs: dict[str, Any]) -> bool:
    """Whether sdpa's type rule accepts `types` and gives exactly `node`'s type."""
    try:
        return infer_type("sdpa", types, attrs) == node.out.type
    except OpTypeError:
        return False


def _scale_of(env: Env, name: str, rw: Rewriter) -> float:
    """The factor `name` (a bound mul or div by a scalar) applies; 1 when it is absent."""
    node = env.nodes.get(name)
    c = _scalar(env[f"{name}_c"], rw) if node is not None else None
    if node is None or c is None:
        return 1.0
    if node.op == "mul":
        return c
    return 1 / c if c != 0 else math.inf  # an infinite scale is declined


def _keep_of(drop: str, rw: Rewriter) -> str:
    """A bool mask that keeps what `drop` drops: its input if it is a logical_not, an inverted
    constant if it is a constant (a folded mask stays visible to rule 4), else logical_not."""
    p = rw.producer(drop)
    if p is not None and p.op == "logical_not":
        return p.inputs[0]
    if p is not None and p.op == "constant":
        inverted = ConstArray.of(~p.attr("value").array().astype(bool))
        return rw.emit("constant", [], {"value": inverted, "dtype": DType.bool})
    return rw.emit("logical_not", [drop])


def _attention(weights: list[Pattern]) -> Callable[[Node, Rewriter], str | None]:
    def build(node: Node, rw: Rewriter) -> str | None:
        probs, v = node.inputs
        env = _first_match(weights, probs, rw)
        if env is None:
            return None
        rank, dims = rw.type(probs).rank, env.nodes["permute"].attr("dims")
        if env.nodes["softmax"].attr("dim") % rank != rank - 1:
            return None
        if dims[-2] != len(dims) - 1:  # Note [Which transposes are keys]
            return None
        scale = _scale_of(env, "q_scaled", rw) * _scale_of(env, "scaled", rw)
        if not math.isfinite(scale):
            return None
        key_dims = (*dims[:-2], dims[-1], dims[-2])
        k_t = rw.type(env["k_t"])
        k_type = TensorType(tuple(k_t.shape[d] for d in key_dims), k_t.dtype)
        mask = env.get("mask") or env.get("keep") or env.get("drop")
        attrs = {"scale": scale, "is_causal": False, "enable_gqa": False}
        types = [rw.type(env["q"]), k_type, rw.type(v)] + ([rw.type(mask)] if mask else [])
        if not _types_as(node, types, attrs):
            return None
        k = env["k_t"]
        if key_dims != tuple(range(len(dims))):
            k = rw.emit("permute", [k], {"dims": key_dims})
        if "drop" in env:
            mask = _keep_of(env["drop"], rw)
        return rw.emit("sdpa", [env["q"], k, v] + ([mask] if mask else []), attrs)

    return build


REPEAT_KV = Op(
    "reshape", Op("expand", Op("reshape", Var("x"), bind="split"), bind="wide"), bind="merged"
)


def _unrepeat(name: str, rw: Rewriter) -> tuple[str, tuple[int, ...], int] | None:
    """(x, its [.., Hk, S, D] shape, n) when `name` is repeat_kv(x, n), else None."""
    env = match(REPEAT_KV, name, rw)
    if env is None:
        return None
    split, wide, merged = (rw.type(env[b]).shape for b in ("split", "wide", "merged"))
    if len(split) < 4 or len(split) != len(merged) + 1:
        return None
    *lead, hk, one, s, d = split
    n = wide[-3]
    if one != 1 or wide != (*lead, hk, n, s, d) or merged != (*lead, hk * n, s, d):
        return None
    return env["x"], (*lead, hk, s, d), n


def _grouped_query(node: Node, rw: Rewriter) -> str | None:
    q, k, v, *mask = node.inputs
    rk, rv = _unrepeat(k, rw), _unrepeat(v, rw)
    if rk is None or rv is None or rk[2] != rv[2]:
        return None
    attrs = {**node.attr_dict, "enable_gqa": True}
    kv = [TensorType(shape, rw.type(x).dtype) for x, shape, _ in (rk, rv)]
    if not _types_as(node, [rw.type(q), *kv, *(rw.type(m) for m in mask)], attrs):
        return None
    k, v = (_reshaped(x, shape, rw) for x, shape, _ in (rk, rv))
    return rw.emit("sdpa", [q, k, v, *mask], attrs)


def _reshaped(x: str, shape: tuple[int, ...], rw: Rewriter) -> str:
    return x if rw.type(x).shape == shape else rw.emit("reshape", [x], {"shape": shape})


def is_causal_mask(values: np.ndarray, dtype: DType, length: int, source: int) -> bool:
    """Whether a mask keeps exactly tril(ones(length, source)) at every leading index: a bool
    mask True there, or a float one 0 there and masked (`masked_below`, or -inf) elsewhere."""
    values = np.broadcast_to(values, np.broadcast_shapes(values.shape, (length, source)))
    tril = np.tril(np.ones((length, source), dtype=bool))
    if values.dtype == np.bool_:
        return bool(np.all(values == tril))
    masked = values <= masked_below(dtype)
    return bool(np.all((values == 0) == tril) and np.all(masked == ~tril))


def _causal(node: Node, rw: Rewriter) -> str | None:
    if len(node.inputs) != 4:
        return None
    q, k, v, mask = node.inputs
    p = rw.producer_op(mask, "constant")
    length, source = rw.type(q).shape[-2], rw.type(k).shape[-2]
    if p is None or not is_causal_mask(p.attr("value").array(), p.type.dtype, length, source):
        return None
    return rw.emit("sdpa", [q, k, v], {**node.attr_dict, "is_causal": True})


ATTENTION_RULES = [
    Rule(
        "matmul(softmax(q @ k^T * c [+ mask]), v) => sdpa(q, k, v[, mask], scale=c)",
        "matmul",
        _attention(ADDITIVE_WEIGHTS),
    ),
    Rule(
        "matmul(softmax(where(keep, q @ k^T * c, -inf)), v) => sdpa(q, k, v, keep, scale=c)",
        "matmul",
        _attention(BOOL_MASKED_WEIGHTS),
    ),
    Rule(
        "sdpa(q, repeat_kv(k, n), repeat_kv(v, n)) => sdpa(q, k, v, enable_gqa=True)",
        "sdpa",
        _grouped_query,
    ),
    Rule("sdpa(q, k, v, tril mask) => sdpa(q, k, v, is_causal=True)", "sdpa", _causal),
]


def recognize_attention(g: Graph, rules: list[Rule] = ATTENTION_RULES) -> Graph:
    """Rewrite attention in `g` to `sdpa` (see the module docstring)."""
    return apply_rules(g, rules)
