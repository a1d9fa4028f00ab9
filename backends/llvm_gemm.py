"""GEMMs with a weight: MKL's packed GEMM, or MKL writing straight into their destination.

MKL's packed GEMM (`torch.ops.mkl._mkl_linear`, the driver's default for `x @ w.T`) returns a
fresh tensor and needs a contiguous `x`. Two cases pay for that, measured at 1024x320x320 on
2 cores: a kernel output (the result is copied into its buffer: 0.98 ms against 0.86 ms for
`torch.mm(..., out=)`), and an `x` that is a transposed view, such as a UNet's NCHW feature map
read as [pixels, channels] (`reshape` copies it first: 1.9 ms against 0.95 ms). There the
driver calls `torch.mm(x2d, w.T, out=dest)` on a strided 2-d view of `x` instead.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

from backends.numpy_ref import local
from compiler.ir import TensorType
from compiler.schedule import ExternCall, index_map


def driver_call(
    e: ExternCall,
    ops: list[str],
    names: dict[str, str],
    weights: frozenset[str],
    slot: Callable[[str, TensorType], str],
) -> list[str] | None:
    """`torch.mm` into the destination for `e`, a matmul of a weight (`x @ w.T` or `x @ w`),
    when its result is a kernel output or its `x` a non-contiguous view that a strided 2-d
    view can read; else None (the caller's packed GEMM)."""
    n = e.node
    types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
    a, b = (types[i] for i in n.inputs)
    views = {v.out.name: v for v in e.views}
    if b.rank != 2 or a.rank < 2 or a.dtype != n.out.type.dtype:
        return None
    w = views.get(n.inputs[1])
    if n.inputs[1] in weights:  # x @ w
        weight = ops[1]
    elif w is not None and w.op == "permute" and w.inputs[0] in weights:  # x @ w.T
        weight = f"{names[w.inputs[0]]}.t()"
    else:
        return None
    chain, root = [], n.inputs[0]
    while root in views:
        chain.append(views[root])
        root = views[root].inputs[0]
    mapped = index_map(chain[::-1], types[root])
    strided = _as_matrix(mapped) if chain else None
    out = n.out.name
    persistent = out in names
    if (not persistent and strided is None) or (strided is not None and strided[2] != 0):
        return None
    m, k = math.prod(a.shape[:-1]), a.shape[-1]
    if strided is None:
        x = f"{ops[0]}.reshape({m}, {k})"
    else:
        x = f"{names[root]}.as_strided{strided[:2]}"
    if not persistent:
        names[out] = slot(out, n.out.type)
    note = f"  # extern {e.name}: MKL GEMM into its destination"
    return [f"    torch.mm({x}, {weight}, out={names[out]}.view({m}, {b.shape[1]})){note}"]


def packed_call(e: ExternCall, ops: list[str], weights: frozenset[str]) -> str | None:
    """x @ w.T (nn.Linear) or x @ w (HF Conv1D) with w a weight: MKL's packed GEMM, the
    weight packed once per version (`PackedWeights`), or None for any other matmul."""
    n = e.node
    types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
    a, b = (types[i] for i in n.inputs)
    views = {v.out.name: v for v in e.views}
    w = views.get(n.inputs[1])
    if b.rank != 2 or a.rank < 2:
        return None
    if n.inputs[1] in weights:  # x @ w, w[K, N]: pack w.T
        root, transposed = n.inputs[1], True
    elif w is not None and w.op == "permute" and w.inputs[0] in weights:
        root, transposed = w.inputs[0], False
    else:
        return None
    m, k = math.prod(a.shape[:-1]), a.shape[-1]
    return (
        f"torch.ops.mkl._mkl_linear({ops[0]}.reshape({m}, {k}), "
        f"*W.pack({local(root)}, {m}, transposed={transposed}), None, {m})"
        f".view({n.out.type.shape})"
    )


def _as_matrix(
    mapped: tuple[tuple[int, ...], tuple[int, ...], int] | None,
) -> tuple[tuple[int, int], tuple[int, int], int] | None:
    """((M, K), (stride M, stride K), offset) when the leading dims of a strided view merge into
    one and the view is not already row-major; else None."""
    if mapped is None:
        return None
    shape, strides, offset = mapped
    lead = [(s, st) for s, st in zip(shape[:-1], strides[:-1], strict=True) if s != 1]
    for (_, outer), (size, inner) in itertools.pairwise(lead):
        if outer != inner * size:
            return None
    m = math.prod(shape[:-1])
    stride_m = lead[-1][1] if lead else shape[-1]
    if strides[-1] == 1 and stride_m == shape[-1]:
        return None  # row-major already: reshape is a view
    return (m, shape[-1]), (stride_m, strides[-1]), offset
