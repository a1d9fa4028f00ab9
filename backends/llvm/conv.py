"""Convolutions of a weight on the llvm backend, cheapest form first:

- 1x1, stride 1, no padding or groups: a GEMM, `out[n] = W[OC, C] @ x[n][C, H*W]` (+ bias),
  a native matmul straight into the output (`backends.llvm.matmul`; it was MKL's, and
  oneDNN's 1x1 path measured ~2x slower);
- 3x3, stride 1, enough channels: Winograd F(2x2, 3x3) (`backends.llvm.winograd`);
- anything else: oneDNN with the weight reordered once (the caller's fallback).
"""

from __future__ import annotations

from collections.abc import Callable

from backends.llvm import winograd as llvm_winograd
from backends.llvm.kernel import KernelModule
from backends.llvm.matmul import Matmul
from backends.llvm.matmul import module as matmul_module
from compiler.core.schedule import ExternCall, Step
from compiler.core.types import TensorType

Call = tuple[list[str], list[KernelModule], Step | None]


def driver_call(
    e: ExternCall,
    ops: list[str],
    names: dict[str, str],
    after: tuple[tuple[str, ...], list[Step]],
    weights: frozenset[str],
    slot: Callable[[str, TensorType], str],
    float_dtype: str,
) -> Call | None:
    """The driver's lines for the convolution `e`, the native modules they call and the native
    part after `e` they compute, or None for the caller's general convolution. Arguments as
    `llvm_winograd.driver_call`."""
    if float_dtype != "float32":  # the native kernels read and write float32
        return None
    pointwise = _pointwise(e, ops, names, weights, slot)
    if pointwise is not None:
        return pointwise
    return llvm_winograd.driver_call(e, ops, names, after, weights, slot)


def _pointwise(
    e: ExternCall,
    ops: list[str],
    names: dict[str, str],
    weights: frozenset[str],
    slot: Callable[[str, TensorType], str],
) -> Call | None:
    n = e.node
    types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
    x, w = types[n.inputs[0]], types[n.inputs[1]]
    if not (
        n.inputs[1] in weights
        and w.shape[2:] == (1, 1)
        and all(tuple(n.attr(a)) == (1, 1) for a in ("stride", "dilation"))
        and tuple(n.attr("padding")) == (0, 0)
        and n.attr("groups") == 1
        and x.rank == 4
    ):
        return None
    out = n.out.name
    if out not in names:
        names[out] = slot(out, n.out.type)
    b, c, h, wd = x.shape
    oc = w.shape[0]
    mm = Matmul(b, oc, h * wd, c, (0, c, 1), b_batch=1, bias="row" if len(ops) > 2 else None)
    mod = matmul_module(e.name, mm)
    args = [f"{ops[i]}.contiguous()" for i in (1, 0, 2)[: len(ops)]] + [names[out]]  # w, x, bias
    note = f"  # extern {e.name}: 1x1 convolution as a native GEMM per image"
    return [f"    {mod.symbol}(NTHREADS, {', '.join(args)}){note}"], [mod], None
