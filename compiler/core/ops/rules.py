"""Type-rule helpers shared by the op declarations."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compiler.core.errors import OpTypeError
from compiler.core.types import DType, TensorType

Types = Sequence[TensorType]
Attrs = Mapping[str, Any]


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
        if len(dims) > 1:
            raise OpTypeError(f"shapes {[list(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def norm_dim(dim: int, rank: int) -> int:
    if not -max(rank, 1) <= dim < max(rank, 1):
        raise OpTypeError(f"dim {dim} out of range for rank {rank}")
    return dim % max(rank, 1)


def same_dtype(ts: Types, what: str) -> DType:
    dtypes = {t.dtype for t in ts}
    if len(dtypes) != 1:
        raise OpTypeError(f"{what}: inputs must share one dtype, got {[t.dtype.value for t in ts]}")
    return dtypes.pop()


def require_float(t: TensorType, what: str) -> None:
    if not t.dtype.is_float:
        raise OpTypeError(f"{what}: needs a float tensor, got {t}")


# ----------------------------------------------------------------------------- rules


def unary_same(ts: Types, a: Attrs) -> TensorType:
    return ts[0]


def unary_float(ts: Types, a: Attrs) -> TensorType:
    require_float(ts[0], "this op")
    return ts[0]


def unary_bool(ts: Types, a: Attrs) -> TensorType:
    if ts[0].dtype is not DType.bool:
        raise OpTypeError(f"needs a bool tensor, got {ts[0]}")
    return ts[0]


def binary_same(ts: Types, a: Attrs) -> TensorType:
    return TensorType(broadcast_shapes(*(t.shape for t in ts)), same_dtype(ts, "binary op"))


def binary_float(ts: Types, a: Attrs) -> TensorType:
    out = binary_same(ts, a)
    require_float(out, "this op")
    return out


def binary_bool(ts: Types, a: Attrs) -> TensorType:
    out = binary_same(ts, a)
    if out.dtype is not DType.bool:
        raise OpTypeError(f"needs bool tensors, got {ts[0].dtype.value}")
    return out


def compare(ts: Types, a: Attrs) -> TensorType:
    return TensorType(binary_same(ts, a).shape, DType.bool)


def where(ts: Types, a: Attrs) -> TensorType:
    cond, x, y = ts
    if cond.dtype is not DType.bool:
        raise OpTypeError(f"where: condition must be bool, got {cond}")
    dtype = same_dtype([x, y], "where")
    return TensorType(broadcast_shapes(cond.shape, x.shape, y.shape), dtype)


def cast(ts: Types, a: Attrs) -> TensorType:
    return TensorType(ts[0].shape, a["dtype"])


def reduced_shape(shape: tuple[int, ...], dims: tuple[int, ...], keepdim: bool) -> tuple[int, ...]:
    axes = {norm_dim(d, len(shape)) for d in dims} if dims else set(range(len(shape)))
    if keepdim:
        return tuple(1 if i in axes else s for i, s in enumerate(shape))
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def reduction(ts: Types, a: Attrs) -> TensorType:
    return TensorType(reduced_shape(ts[0].shape, a["dims"], a["keepdim"]), ts[0].dtype)


def reduction_sum(ts: Types, a: Attrs) -> TensorType:
    t = ts[0]
    dtype = t.dtype if t.dtype.is_float else DType.i64
    return TensorType(reduced_shape(t.shape, a["dims"], a["keepdim"]), dtype)


def reduction_float(ts: Types, a: Attrs) -> TensorType:
    require_float(ts[0], "mean")
    return reduction(ts, a)
