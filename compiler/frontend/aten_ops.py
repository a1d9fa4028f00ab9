"""ATen lowerings for elementwise ops, sources, reductions and movement. `LOWERINGS` maps an
ATen op (overload packet name) to a function `(Lowering, fx.Node) -> IR value`; `aten_nn.py`
holds the network ops (matmul, conv, attention, norms). An ATen op in neither table is an
`UnsupportedOpError`.

Type promotion is made explicit here: each lowering computes the dtype torch computes in (from
the recorded output type, or `torch.result_type` for comparisons) and casts its inputs to it.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import fx

from compiler.core.dtypes import to_dtype, to_torch
from compiler.core.ops.structural import slice_len
from compiler.core.types import DType
from compiler.frontend.lowering import Lowered, LowerFn, Lowering


def arg(n: fx.Node, i: int, name: str, default: Any = None) -> Any:
    """Positional argument i of an fx node, or its keyword `name`."""
    if len(n.args) > i:
        return n.args[i]
    return n.kwargs.get(name, default)


# ----------------------------------------------------------------------------- elementwise

_BINARY = {
    "add": "add",
    "sub": "sub",
    "mul": "mul",
    "div": "div",
    "pow": "pow",
    "maximum": "maximum",
    "minimum": "minimum",
}
_COMPARE = {"eq": "eq", "ne": "ne", "lt": "lt", "le": "le", "gt": "gt", "ge": "ge"}
_LOGICAL = {
    "logical_and": "logical_and",
    "logical_or": "logical_or",
    "bitwise_and": "logical_and",
    "bitwise_or": "logical_or",
}
_UNARY = [
    "neg",
    "abs",
    "exp",
    "log",
    "sqrt",
    "rsqrt",
    "reciprocal",
    "sin",
    "cos",
    "tanh",
    "erf",
    "sigmoid",
    "relu",
    "silu",
]


def lower_binary(L: Lowering, n: fx.Node) -> Lowered:
    name = _BINARY[L.op]
    a, b = n.args[0], n.args[1]
    dtype = L.out_type().dtype
    if name == "div" and arg(n, 2, "rounding_mode") is not None:
        raise L.fail("div with rounding_mode (floor/trunc division) is not supported")
    exact = name not in ("maximum", "minimum")
    x, y = L.v(a, dtype, exact), L.v(b, dtype, exact)
    alpha = n.kwargs.get("alpha", 1)
    if name in ("add", "sub") and alpha != 1:
        y = L.emit("mul", [y, L.scalar(alpha, dtype, exact=True)])
    return L.emit(name, [x, y])


def lower_compare(L: Lowering, n: fx.Node) -> Lowered:
    a, b = n.args[0], n.args[1]
    dtype = to_dtype(torch.result_type(L.arg_dtype(a), L.arg_dtype(b)))
    return L.emit(_COMPARE[L.op], [L.v(a, dtype), L.v(b, dtype)])


def lower_logical(L: Lowering, n: fx.Node) -> Lowered:
    if L.out_type().dtype is not DType.bool:
        raise L.fail("bitwise ops are supported on bool tensors only")
    return L.emit(_LOGICAL[L.op], [L.v(n.args[0], DType.bool), L.v(n.args[1], DType.bool)])


def lower_logical_not(L: Lowering, n: fx.Node) -> Lowered:
    if L.out_type().dtype is not DType.bool:
        raise L.fail("bitwise_not is supported on bool tensors only")
    return L.emit("logical_not", [L.v(n.args[0], DType.bool)])


def lower_unary(L: Lowering, n: fx.Node) -> Lowered:
    return L.emit(L.op, [L.v(n.args[0], L.out_type().dtype)])


def lower_gelu(L: Lowering, n: fx.Node) -> Lowered:
    approximate = arg(n, 1, "approximate", "none")
    return L.emit("gelu", [L.t(n.args[0])], approximate=approximate)


def lower_clamp(L: Lowering, n: fx.Node) -> Lowered:
    dtype = L.out_type().dtype
    x = L.v(n.args[0], dtype)
    lo = arg(n, 1, "min")
    hi = arg(n, 2, "max")
    if L.op == "clamp_max":
        lo, hi = None, lo
    if lo is not None:
        x = L.emit("maximum", [x, L.v(lo, dtype)])
    if hi is not None:
        x = L.emit("minimum", [x, L.v(hi, dtype)])
    return x


def lower_where(L: Lowering, n: fx.Node) -> Lowered:
    dtype = L.out_type().dtype
    cond = L.v(n.args[0], DType.bool)
    return L.emit("where", [cond, L.v(n.args[1], dtype), L.v(n.args[2], dtype)])


def lower_masked_fill(L: Lowering, n: fx.Node) -> Lowered:
    dtype = L.out_type().dtype
    x, mask, value = n.args[0], n.args[1], n.args[2]
    return L.emit("where", [L.v(mask, DType.bool), L.v(value, dtype), L.v(x, dtype)])


def lower_to_copy(L: Lowering, n: fx.Node) -> Lowered:
    return L.cast(L.t(n.args[0]), L.out_type().dtype)


def lower_identity(L: Lowering, n: fx.Node) -> Lowered:
    return L.t(n.args[0])


def lower_dropout(L: Lowering, n: fx.Node) -> Lowered:
    train = arg(n, 2, "train", False)
    p = arg(n, 1, "p", 0.0)
    if train and p > 0:
        raise L.fail("dropout in training mode: call model.eval() before compiling")
    return L.t(n.args[0])


# ----------------------------------------------------------------------------- sources


def lower_full(L: Lowering, n: fx.Node) -> Lowered:
    out = L.out_type()
    value: Any
    if L.op in ("full", "new_full", "full_like", "fill"):
        value = n.args[1] if L.op in ("full", "full_like", "fill") else n.args[2]
    elif L.op in ("zeros", "zeros_like", "new_zeros"):
        value = 0
    elif L.op in ("ones", "ones_like", "new_ones"):
        value = 1
    else:  # scalar_tensor
        value = n.args[0]
    if isinstance(value, fx.Node):
        raise L.fail("fill with a tensor value is not supported")
    value = bool(value) if out.dtype is DType.bool else value
    if out.dtype.is_float:  # the value a tensor of this dtype holds
        value = torch.tensor(float(value), dtype=to_torch(out.dtype)).item()
    return L.emit("full", [], shape=out.shape, value=value, dtype=out.dtype)


def lower_arange(L: Lowering, n: fx.Node) -> Lowered:
    out = L.out_type()
    nums = [a for a in n.args if not isinstance(a, fx.Node)]
    if len(nums) == 1:
        start, end, step = 0, nums[0], 1
    else:
        start, end = nums[0], nums[1]
        step = nums[2] if len(nums) > 2 else 1
    return L.emit("arange", [], start=start, end=end, step=step, dtype=out.dtype)


# ----------------------------------------------------------------------------- reductions


def _dims(given: Any, rank: int) -> tuple[int, ...]:
    if given is None or given == []:
        return tuple(range(rank))
    dims = [given] if isinstance(given, int) else list(given)
    return tuple(sorted(d % max(rank, 1) for d in dims))


def lower_reduction(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    out = L.out_type()
    rank = L.b.type(x).rank
    dims = _dims(arg(n, 1, "dim"), rank)
    keepdim = bool(arg(n, 2, "keepdim", False))
    op = {"sum": "sum", "mean": "mean", "amax": "amax", "amin": "amin"}[L.op]
    if op in ("sum", "mean") and out.dtype.is_float:
        x = L.cast(x, out.dtype)
    return L.emit(op, [x], dims=dims, keepdim=keepdim)


def lower_max_dim(L: Lowering, n: fx.Node) -> Lowered:
    """max.dim / min.dim return (values, indices): only values are supported. max(x) with no
    dim (the .default overload) is the maximum over every element."""
    x = L.t(n.args[0])
    rank = L.b.type(x).rank
    op = "amax" if L.op == "max" else "amin"
    if len(n.args) < 2:
        return L.emit(op, [x], dims=tuple(range(rank)), keepdim=False)
    dims = _dims(n.args[1], rank)
    keepdim = bool(arg(n, 2, "keepdim", False))
    values = L.emit(op, [x], dims=dims, keepdim=keepdim)
    return [values, "<indices are not supported>"]


def lower_cumsum(L: Lowering, n: fx.Node) -> Lowered:
    out = L.out_type()
    x = L.t(n.args[0])
    rank = L.b.type(x).rank
    if out.dtype.is_float:
        x = L.cast(x, out.dtype)
    return L.cast(L.emit("cumsum", [x], dim=n.args[1] % max(rank, 1)), out.dtype)


# ----------------------------------------------------------------------------- movement


def lower_reshape(L: Lowering, n: fx.Node) -> Lowered:
    return L.emit("reshape", [L.t(n.args[0])], shape=L.out_type().shape)


def lower_permute(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    rank = L.b.type(x).rank
    if L.op == "permute":
        dims = tuple(d % rank for d in n.args[1])
    else:  # transpose / t
        d0, d1 = (n.args[1], n.args[2]) if L.op == "transpose" else (0, 1)
        order = list(range(rank))
        if rank >= 2 or L.op == "transpose":
            order[d0 % rank], order[d1 % rank] = order[d1 % rank], order[d0 % rank]
        dims = tuple(order)
    return L.emit("permute", [x], dims=dims)


def lower_expand(L: Lowering, n: fx.Node) -> Lowered:
    return L.emit("expand", [L.t(n.args[0])], shape=L.out_type().shape)


def _slice(L: Lowering, x: str, dim: int, start: Any, end: Any, step: int = 1) -> str:
    size = L.b.type(x).shape[dim]
    start, end, _ = slice(start, end).indices(size)
    end = max(end, start)
    if step < 1:
        raise L.fail(f"slice step {step} is not supported")
    assert slice_len(size, start, end, step) >= 0
    return L.emit("slice", [x], dim=dim, start=start, end=end, step=step)


def lower_slice(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    rank = L.b.type(x).rank
    dim = arg(n, 1, "dim", 0) % rank
    start = arg(n, 2, "start", None)
    end = arg(n, 3, "end", None)
    end = None if end is not None and end >= sys.maxsize else end
    return _slice(L, x, dim, start, end, arg(n, 4, "step", 1))


def lower_select(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    shape = L.b.type(x).shape
    dim, index = n.args[1] % len(shape), n.args[2] % shape[n.args[1] % len(shape)]
    s = _slice(L, x, dim, index, index + 1)
    return L.emit("reshape", [s], shape=L.out_type().shape)


def lower_narrow(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    dim = n.args[1] % L.b.type(x).rank
    start = n.args[2] % L.b.type(x).shape[dim]
    return _slice(L, x, dim, start, start + n.args[3])


def lower_split(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    shape = L.b.type(x).shape
    dim = arg(n, 2, "dim", 0) % len(shape)
    split = n.args[1]
    if L.op == "split_with_sizes":
        sizes = list(split)
    else:  # split.Tensor: chunks of `split` elements
        sizes = [min(split, shape[dim] - s) for s in range(0, shape[dim], split)]
    outs, start = [], 0
    for size in sizes:
        outs.append(_slice(L, x, dim, start, start + size))
        start += size
    return outs


def lower_unbind(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    shape = L.b.type(x).shape
    dim = arg(n, 1, "dim", 0) % len(shape)
    rest = shape[:dim] + shape[dim + 1 :]
    return [L.emit("reshape", [_slice(L, x, dim, i, i + 1)], shape=rest) for i in range(shape[dim])]


def lower_constant_pad(L: Lowering, n: fx.Node) -> Lowered:
    """torch lists (before, after) pairs from the last dim backwards; negative pads crop."""
    x = L.t(n.args[0])
    flat, value = list(n.args[1]), arg(n, 2, "value", 0)
    rank = L.b.type(x).rank
    pads = [(0, 0)] * rank
    for i in range(len(flat) // 2):
        pads[rank - 1 - i] = (flat[2 * i], flat[2 * i + 1])
    for dim, (lo, hi) in enumerate(pads):
        if lo < 0 or hi < 0:  # crop first, then pad what is positive
            size = L.b.type(x).shape[dim]
            x = _slice(L, x, dim, max(-lo, 0), size - max(-hi, 0))
    pads = [(max(lo, 0), max(hi, 0)) for lo, hi in pads]
    if all(p == (0, 0) for p in pads):
        return x
    dtype = L.out_type().dtype
    value = float(value) if dtype.is_float else int(value)
    return L.emit("pad", [x], pads=tuple(pads), value=value)


def lower_getitem(L: Lowering, n: fx.Node) -> Lowered:
    source, index = n.args
    values = L.env[source.name]
    if not isinstance(values, list):
        raise L.fail(f"getitem on a single value {source.name}")
    value = values[index]
    if value.startswith("<"):
        raise L.fail(f"output {index}: {value[1:-1]}", op=str(source.target))
    return value


def lower_cat(L: Lowering, n: fx.Node) -> Lowered:
    out = L.out_type()
    dim = arg(n, 1, "dim", 0) % len(out.shape)
    parts = [L.cast(L.t(a), out.dtype) for a in n.args[0]]
    parts = [p for p in parts if L.b.type(p).shape != (0,)]  # legacy empty tensors
    if len(parts) == 1:
        return parts[0]
    return L.emit("cat", parts, dim=dim)


def lower_index(L: Lowering, n: fx.Node) -> Lowered:
    x = L.t(n.args[0])
    rank = L.b.type(x).rank
    indices = list(n.args[1])
    pos = [i for i, a in enumerate(indices) if a is not None]
    for i in pos:
        if L.arg_dtype(indices[i]).dtype == torch.bool:
            raise L.fail("boolean mask indexing has a data-dependent shape")
    idx = [L.t(indices[i]) for i in pos]
    if pos == list(range(len(pos))):
        return L.emit("index", [x] + idx)
    # Move the indexed dims to the front, index, then put the result dims where torch does.
    order = pos + [d for d in range(rank) if d not in pos]
    moved = L.emit("index", [L.emit("permute", [x], dims=tuple(order))] + idx)
    contiguous = pos == list(range(pos[0], pos[0] + len(pos)))
    if not contiguous:
        return moved  # torch (like NumPy) puts the broadcast dims first
    nb = L.b.type(moved).rank - (rank - len(pos))
    rest = list(range(nb, L.b.type(moved).rank))
    before = rest[: pos[0]]
    dims = tuple(before + list(range(nb)) + rest[pos[0] :])
    return L.emit("permute", [moved], dims=dims)


def lower_embedding(L: Lowering, n: fx.Node) -> Lowered:
    return L.emit("embedding", [L.t(n.args[0]), L.t(n.args[1])])


LOWERINGS: dict[str, LowerFn] = {
    **{name: lower_binary for name in _BINARY},
    **{name: lower_compare for name in _COMPARE},
    **{name: lower_logical for name in _LOGICAL},
    **{name: lower_unary for name in _UNARY},
    "logical_not": lower_logical_not,
    "bitwise_not": lower_logical_not,
    "gelu": lower_gelu,
    "clamp": lower_clamp,
    "clamp_min": lower_clamp,
    "clamp_max": lower_clamp,
    "where": lower_where,
    "masked_fill": lower_masked_fill,
    "_to_copy": lower_to_copy,
    **{
        name: lower_identity
        for name in ("clone", "alias", "detach", "contiguous", "lift_fresh_copy")
    },
    "dropout": lower_dropout,
    "native_dropout": lower_dropout,
    **{
        name: lower_full
        for name in (
            "full",
            "zeros",
            "ones",
            "full_like",
            "zeros_like",
            "ones_like",
            "new_full",
            "new_zeros",
            "new_ones",
            "fill",
            "scalar_tensor",
        )
    },
    "arange": lower_arange,
    **{name: lower_reduction for name in ("sum", "mean", "amax", "amin")},
    "max": lower_max_dim,
    "min": lower_max_dim,
    "cumsum": lower_cumsum,
    **{
        name: lower_reshape
        for name in ("view", "_unsafe_view", "reshape", "squeeze", "unsqueeze", "flatten")
    },
    **{name: lower_permute for name in ("permute", "transpose", "t")},
    "expand": lower_expand,
    "slice": lower_slice,
    "select": lower_select,
    "narrow": lower_narrow,
    "split_with_sizes": lower_split,
    "split": lower_split,
    "unbind": lower_unbind,
    "getitem": lower_getitem,
    "constant_pad_nd": lower_constant_pad,
    "cat": lower_cat,
    "index": lower_index,
    "embedding": lower_embedding,
}
