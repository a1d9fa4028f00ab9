"""GEMMs with a weight: a packed GEMM (MKL's or oneDNN's), or a native matmul writing straight
into their destination.

The packed GEMM (`torch.ops.mkl._mkl_linear` or `torch.ops.mkldnn._linear_pointwise` on a
weight reordered once, Note [Which GEMM library]; the driver's default for `x @ w.T`) returns a
fresh tensor and needs a contiguous `x`. Two cases pay for that: a kernel output (the result
is copied into its buffer) and an `x` that is a transposed view, such as a UNet's NCHW feature
map read as [pixels, channels] (`reshape` copies it first: twice the time at 1024x320x320).
There the driver calls a native matmul (`backends.llvm.matmul`) that reads `x` where it lies
and writes the destination (Note [Matmuls into their destination]).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch

from backends.llvm.aot import cpu_fields
from backends.llvm.kernel import KernelModule
from backends.llvm.matmul import Matmul
from backends.llvm.matmul import module as matmul_module
from compiler.core import config
from compiler.core.reference import local
from compiler.core.schedule import ExternCall, KernelSpec, Step, index_map
from compiler.core.types import DType, TensorType

BIAS_GEMM_MIN_BYTES = 4 << 20
"""The smallest GEMM output (bytes) whose bias goes into the native matmul rather than a native
pass after the packed GEMM, where the input is contiguous (Note [A bias into the GEMM])."""


def driver_call(
    e: ExternCall,
    ops: list[str],
    names: dict[str, str],
    weights: frozenset[str],
    slot: Callable[[str, TensorType], str],
    after: tuple[tuple[str, ...], list[Step]] = ((), []),
) -> tuple[list[str], list[KernelModule], Step | None] | None:
    """A native matmul into the destination for `e`, a matmul of a weight (`x @ w.T` or
    `x @ w`; `backends.llvm.matmul`), when its result is a kernel output or its `x` a
    non-contiguous view it can read in place, and then with the bias when the native part
    right after `e` only adds one into the kernel's output (Note [A bias into the GEMM]); else
    None (the caller's packed GEMM). With the lines, the native modules they call and the
    native part the call computed (None: none). `after`: the kernel's outputs and the steps
    after `e`."""
    n = e.node
    types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
    a, b = (types[i] for i in n.inputs)
    views = {v.out.name: v for v in e.views}
    if b.rank != 2 or a.rank < 2 or a.dtype != n.out.type.dtype:
        return None
    w = views.get(n.inputs[1])
    if n.inputs[1] not in weights and not (
        w is not None and w.op == "permute" and w.inputs[0] in weights  # x @ w.T
    ):
        return None
    chain, root = [], n.inputs[0]
    while root in views:
        chain.append(views[root])
        root = views[root].inputs[0]
    mapped = index_map(chain[::-1], types[root])
    strided = _as_matrix(mapped) if chain else None
    out = n.out.name
    persistent = out in names
    bias = None if persistent else bias_epilogue(e, after)
    if bias is not None and (
        bias[2] not in names  # not a value the driver holds
        or (strided is None and n.out.type.numel * 4 < BIAS_GEMM_MIN_BYTES)
    ):
        bias = None
    if strided is not None and strided[2] != 0:
        return None
    if not persistent and strided is None and bias is None:
        return None
    m, k = math.prod(a.shape[:-1]), a.shape[-1]
    nn = b.shape[1]
    if strided is None:  # row-major: a view chain's result is contiguous() for free
        x, a_strides = f"{ops[0]}.contiguous()" if chain else ops[0], (0, k, 1)
    else:
        x, a_strides = names[root], (0, *strided[1])
    # x @ w: w [K, N] is B as it is; x @ w.T: B is w transposed, made once per weight version
    weight = (
        f"{ops[1]}.contiguous()"
        if n.inputs[1] in weights
        else f"W.transposed({names[w.inputs[0]]})"
    )
    mm = Matmul(1, m, nn, k, a_strides, bias="col" if bias is not None else None)
    mod = matmul_module(e.name, mm)
    if bias is not None:
        part, total, b_name = bias
        rest = f"{names[b_name]}.contiguous(), {names[total]}.view({m}, {nn})"
        note = f"  # extern {e.name} + native {part.name}: native GEMM and bias into the output"
        return (
            [f"    {mod.symbol}(NTHREADS, {x}, {weight}, {rest}){note}"],
            [mod],
            part,
        )
    if not persistent:
        names[out] = slot(out, n.out.type)
    note = f"  # extern {e.name}: native GEMM into its destination"
    return (
        [f"    {mod.symbol}(NTHREADS, {x}, {weight}, {names[out]}.view({m}, {nn})){note}"],
        [mod],
        None,
    )


def bias_epilogue(
    e: ExternCall, after: tuple[tuple[str, ...], list[Step]]
) -> tuple[KernelSpec, str, str] | None:
    """(the part, its output, the bias) when the native part right after the matmul `e` is
    exactly `out = y + bias` (a float32 vector along the last dim, an input of the part) into
    a kernel output, and nothing else reads `y`; else None.

    Note [A bias into the GEMM]
    A packed GEMM returns a fresh tensor, which a native pass then reads to add the bias
    and write the kernel's output: at a UNet's GEGLU projection (1024 x 2560) that was a
    10 MiB allocation per call on top of the 10 MiB output, the loaded unet's peak RSS.
    `torch.addmm(bias, x, w, out=output)` has MKL write the output once, the bias added in
    the GEMM, with no allocation and no pass. It is not MKL's packed GEMM, though, which is
    faster on these shapes: with addmm at every bias, gpt2 ran 6 % slower, dit 8.5 %, the
    unet 2.5 % (same process, interleaved, 40 calls). So addmm takes the bias only where the
    output is at least BIAS_GEMM_MIN_BYTES (the allocation is the memory that matters) or
    where the input is a strided view (torch.mm was chosen there anyway). The native matmul
    (`backends.llvm.matmul`) took addmm's place on the same terms: it adds the bias as it
    stores each tile."""
    outputs, rest = after
    y = e.node.out.name
    if not rest or y in outputs or not isinstance(rest[0], KernelSpec):
        return None
    part = rest[0]
    if any(y in {v.name for v in st.inputs} for st in rest[1:]):
        return None
    if len(part.body) != 1 or part.outputs != (part.body[0].out.name,):
        return None
    add = part.body[0]
    if (
        add.op != "add"
        or len(add.inputs) != 2
        or y not in add.inputs
        or add.out.name not in outputs
    ):
        return None
    other = add.inputs[1] if add.inputs[0] == y else add.inputs[0]
    types = {v.name: v.type for v in part.inputs}
    t, want = types.get(other), e.node.out.type
    if t is None or other == y or add.out.type != want or want.dtype is not DType.f32:
        return None
    if t.shape != (want.shape[-1],) or t.dtype is not DType.f32:
        return None
    return part, add.out.name, other


def library() -> str | None:
    """The library of the packed GEMMs on this machine, "mkl" or "onednn": TILEFUSE_GEMM, else
    by CPU vendor; the other where torch lacks the one chosen, None where it has neither.

    Note [Which GEMM library]
    MKL and oneDNN both ship in torch, and which is faster depends on the CPU: MKL's packed
    GEMM runs at the cores' peak on Intel CPUs and takes slower code paths on AMD's, where
    oneDNN on a weight reordered once (`_reorder_linear_weight`) does not (128x512x2048: 134
    against 218 GFLOP/s on 2 cores; the table is in docs/llvm_backend.md, Measurements). So
    "auto" is oneDNN on a CPU that is not Intel's, MKL on Intel's. The choice is by vendor,
    not measured on the host it runs on. oneDNN's reordered weight is an opaque tensor, so it
    is rebuilt in each process, as MKL's packed copy is."""
    choice = config.load().gemm
    if choice == "auto":
        intel = cpu_fields().get("vendor_id", "GenuineIntel") == "GenuineIntel"
        choice = "mkl" if intel else "onednn"
    available = {
        "mkl": torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear"),
        "onednn": torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise"),
    }
    if available[choice]:
        return choice
    other = "mkl" if choice == "onednn" else "onednn"
    return other if available[other] else None


def packed_call(e: ExternCall, ops: list[str], weights: frozenset[str]) -> tuple[str, str] | None:
    """x @ w.T (nn.Linear) or x @ w (HF Conv1D) with w a weight and x more than one row: the
    packed GEMM of `library()`, the weight packed once per version (`PackedWeights`), as an
    expression and the library's name; None for any other matmul, or without either library.

    Note [No packing for one row]
    A one-row product (a timestep embedding's MLP, DiT's adaLN modulation) reads every weight
    element once: packing cannot make it faster, and MKL's packed copy for one row is larger
    than the weight (1280x1280: 8.1 MiB resident against 6.25), and no faster (times in
    docs/llvm_backend.md, Measurements). So one row is a plain `torch.matmul` on the weight
    itself, which a loaded artifact reads straight from its memory-mapped file."""
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
    lib = library()
    if m == 1 or lib is None:  # Note [No packing for one row]
        return None
    x, shape = f"{ops[0]}.reshape({m}, {k})", n.out.type.shape
    if lib == "onednn":
        w_dnnl = f"W.dnnl({local(root)}, {m}, transposed={transposed})"
        call = f"torch.ops.mkldnn._linear_pointwise({x}, {w_dnnl}, None, 'none', [], '')"
        return f"{call}.view({shape})", "oneDNN packed GEMM"
    packed = f"W.pack({local(root)}, {m}, transposed={transposed})"
    call = f"torch.ops.mkl._mkl_linear({x}, *{packed}, None, {m})"
    return f"{call}.view({shape})", "MKL packed GEMM"


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
