"""Reductions, movement (views and copies) and indexing ops."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from compiler.core.errors import OpTypeError
from compiler.core.ops import rules as r
from compiler.core.ops.opdef import REQUIRED, OpDef
from compiler.core.types import DType, TensorType

_RED = (("dims", REQUIRED), ("keepdim", False))

REDUCTIONS = [
    OpDef(
        "sum",
        "reduction",
        (1, 1),
        r.reduction_sum,
        "np.sum({0}, axis={dims}, keepdims={keepdim}, dtype={out_dtype})",
        "sum over dims (ints and bools sum to i64)",
        _RED,
        ("aten.sum",),
    ),
    OpDef(
        "mean",
        "reduction",
        (1, 1),
        r.reduction_float,
        "np.mean({0}, axis={dims}, keepdims={keepdim})",
        "mean over dims (float)",
        _RED,
        ("aten.mean",),
    ),
    OpDef(
        "amax",
        "reduction",
        (1, 1),
        r.reduction,
        "np.max({0}, axis={dims}, keepdims={keepdim})",
        "max over dims",
        _RED,
        ("aten.amax", "aten.max.dim (values)"),
    ),
    OpDef(
        "amin",
        "reduction",
        (1, 1),
        r.reduction,
        "np.min({0}, axis={dims}, keepdims={keepdim})",
        "min over dims",
        _RED,
        ("aten.amin", "aten.min.dim (values)"),
    ),
    OpDef(
        "cumsum",
        "reduction",
        (1, 1),
        lambda ts, a: TensorType(ts[0].shape, ts[0].dtype if ts[0].dtype.is_float else DType.i64),
        "np.cumsum({0}, axis={dim}, dtype={out_dtype})",
        "inclusive prefix sum along dim (ints and bools sum to i64)",
        (("dim", REQUIRED),),
        ("aten.cumsum",),
    ),
]


def _reshape(ts: r.Types, a: r.Attrs) -> TensorType:
    shape = tuple(a["shape"])
    if any(d < 0 for d in shape):
        raise OpTypeError(f"reshape: sizes must be resolved (no -1), got {list(shape)}")
    out = TensorType(shape, ts[0].dtype)
    if out.numel != ts[0].numel:
        raise OpTypeError(f"reshape: cannot view {ts[0]} as {list(shape)}")
    return out


def _permute(ts: r.Types, a: r.Attrs) -> TensorType:
    dims = tuple(a["dims"])
    if sorted(dims) != list(range(ts[0].rank)):
        raise OpTypeError(f"permute: {list(dims)} is not a permutation of rank {ts[0].rank}")
    return TensorType(tuple(ts[0].shape[d] for d in dims), ts[0].dtype)


def _expand(ts: r.Types, a: r.Attrs) -> TensorType:
    shape, src = tuple(a["shape"]), ts[0].shape
    if len(shape) < len(src):
        raise OpTypeError(f"expand: cannot expand {list(src)} to fewer dims {list(shape)}")
    lead = len(shape) - len(src)
    for s, d in zip(src, shape[lead:], strict=True):
        if s != d and s != 1:
            raise OpTypeError(f"expand: cannot expand {list(src)} to {list(shape)}")
    return TensorType(shape, ts[0].dtype)


def slice_len(size: int, start: int, end: int, step: int) -> int:
    return len(range(*slice(start, end, step).indices(size)))


def _slice(ts: r.Types, a: r.Attrs) -> TensorType:
    t = ts[0]
    dim = r.norm_dim(a["dim"], t.rank)
    if a["step"] < 1:
        raise OpTypeError(f"slice: step must be >= 1, got {a['step']}")
    shape = list(t.shape)
    shape[dim] = slice_len(t.shape[dim], a["start"], a["end"], a["step"])
    return TensorType(tuple(shape), t.dtype)


def _slice_numpy(ins: Sequence[str], a: Mapping[str, str]) -> str:
    """x[:, ..., start:end:step] (Python slicing on dim)"""
    dim = int(a["dim"])
    step = "" if a["step"] == "1" else f":{a['step']}"
    return f"{ins[0]}[{':, ' * dim}{a['start']}:{a['end']}{step}]"


def _pad(ts: r.Types, a: r.Attrs) -> TensorType:
    t, pads = ts[0], a["pads"]
    if len(pads) != t.rank or any(len(p) != 2 or min(p) < 0 for p in pads):
        raise OpTypeError(f"pad: pads must be one non-negative (before, after) per dim of {t}")
    return TensorType(
        tuple(s + lo + hi for s, (lo, hi) in zip(t.shape, pads, strict=True)), t.dtype
    )


def _cat(ts: r.Types, a: r.Attrs) -> TensorType:
    rank = ts[0].rank
    dim = r.norm_dim(a["dim"], rank)
    dtype = r.same_dtype(ts, "cat")
    for t in ts:
        if t.rank != rank or any(t.shape[i] != ts[0].shape[i] for i in range(rank) if i != dim):
            raise OpTypeError(f"cat: shapes {[list(t.shape) for t in ts]} differ off dim {dim}")
    shape = list(ts[0].shape)
    shape[dim] = sum(t.shape[dim] for t in ts)
    return TensorType(tuple(shape), dtype)


def _index(ts: r.Types, a: r.Attrs) -> TensorType:
    x, idx = ts[0], ts[1:]
    if len(idx) > x.rank:
        raise OpTypeError(f"index: {len(idx)} index tensors for rank {x.rank}")
    for t in idx:
        if t.dtype not in (DType.i64, DType.i32):
            raise OpTypeError(f"index: index tensors must be integer, got {t}")
    bshape = r.broadcast_shapes(*(t.shape for t in idx))
    return TensorType(bshape + x.shape[len(idx) :], x.dtype)


def _index_numpy(ins: Sequence[str], a: Mapping[str, str]) -> str:
    """x[i0, i1, ...] (NumPy integer-array indexing)"""
    return f"{ins[0]}[{', '.join(ins[1:])}]"


def _embedding(ts: r.Types, a: r.Attrs) -> TensorType:
    w, ids = ts
    if w.rank != 2 or ids.dtype not in (DType.i64, DType.i32):
        raise OpTypeError(f"embedding: needs a 2-d table and integer ids, got {w} and {ids}")
    return TensorType(ids.shape + (w.shape[1],), w.dtype)


def index_reads(op: str, types: Sequence[TensorType]) -> list[tuple[int, int, int]]:
    """The index tensors an op reads, as (input position, size of the dimension they index,
    lowest index allowed): an embedding's ids index the table's rows from 0; each index tensor
    of `index` indexes one leading dimension, negative entries counting from its end. Every
    backend checks them as eager does (Note [Index checks] in backends/index_maps.py)."""
    if op == "embedding":
        return [(1, types[0].shape[0], 0)]
    if op == "index":
        return [(k + 1, types[0].shape[k], -types[0].shape[k]) for k in range(len(types) - 1)]
    return []


def _upsample(ts: r.Types, a: r.Attrs) -> TensorType:
    x = ts[0]
    if x.rank != 4 or len(a["size"]) != 2 or min(a["size"]) < 1:
        raise OpTypeError(f"upsample_nearest2d: needs x[N,C,H,W] and size (H, W), got {x}")
    return TensorType(x.shape[:2] + tuple(a["size"]), x.dtype)


MOVEMENT = [
    OpDef(
        "reshape",
        "movement",
        (1, 1),
        _reshape,
        "np.reshape({0}, {shape})",
        "same elements, new shape (row-major)",
        (("shape", REQUIRED),),
        (
            "aten.view",
            "aten.reshape",
            "aten._unsafe_view",
            "aten.squeeze",
            "aten.unsqueeze",
            "aten.flatten",
            "aten.select (with slice)",
        ),
    ),
    OpDef(
        "permute",
        "movement",
        (1, 1),
        _permute,
        "np.transpose({0}, {dims})",
        "reorder dims",
        (("dims", REQUIRED),),
        ("aten.permute", "aten.transpose", "aten.t"),
    ),
    OpDef(
        "expand",
        "movement",
        (1, 1),
        _expand,
        "np.broadcast_to({0}, {shape})",
        "broadcast size-1 dims (and new leading dims) to shape",
        (("shape", REQUIRED),),
        ("aten.expand",),
    ),
    OpDef(
        "slice",
        "movement",
        (1, 1),
        _slice,
        _slice_numpy,
        "x[start:end:step] along dim (end clamps)",
        (("dim", REQUIRED), ("start", 0), ("end", REQUIRED), ("step", 1)),
        ("aten.slice", "aten.select", "aten.split_with_sizes", "aten.narrow"),
    ),
    OpDef(
        "pad",
        "movement",
        (1, 1),
        _pad,
        "np.pad({0}, {pads}, constant_values={value})",
        "constant padding: pads[d] = (before, after) elements on dim d",
        (("pads", REQUIRED), ("value", 0.0)),
        ("aten.constant_pad_nd", "aten.pad (constant)"),
    ),
    OpDef(
        "cat",
        "movement",
        (1, None),
        _cat,
        "np.concatenate([{inputs}], axis={dim})",
        "concatenate along dim",
        (("dim", REQUIRED),),
        ("aten.cat",),
    ),
    OpDef(
        "index",
        "movement",
        (2, None),
        _index,
        _index_numpy,
        "x[i0, i1, ...]: integer index tensors (broadcast together) on the leading dims",
        (),
        ("aten.index.Tensor",),
    ),
    OpDef(
        "upsample_nearest2d",
        "movement",
        (1, 1),
        _upsample,
        "ref.upsample_nearest2d({0}, size={size}, scales={scales})",
        "nearest resize of H, W: source index floor(dst * in/out), or dst / scale when given",
        (("size", REQUIRED), ("scales", None)),
        ("aten.upsample_nearest2d",),
    ),
    OpDef(
        "embedding",
        "movement",
        (2, 2),
        _embedding,
        "ref.embedding({0}, {1})",
        "rows of a table: weight[ids]",
        (),
        ("aten.embedding",),
    ),
]

OPS = REDUCTIONS + MOVEMENT
