"""GEMMs with a weight: a packed GEMM (MKL's or oneDNN's), or a native matmul writing straight
into their destination.

The packed GEMM (`torch.ops.mkl._mkl_linear` or `torch.ops.mkldnn._linear_pointwise` on a
weight reordered once, Note [Which GEMM library]; the driver's default for `x @ w.T`) returns a
fresh tensor and needs a contiguous `x`. Two cases pay for that: a kernel output (the result
is copied into its buffer) and an `x` that is a transposed view, such as a UNet's NCHW feature
map read as [pixels, channels] (`reshape` copies it first: twice the time at 1024x320x320).
There a native matmul (`backends.llvm.matmul`) that reads `x` where it lies and writes the
destination (Note [Matmuls into their destination]) is the analytic default.

Which of them runs a GEMM of more than one row is measured on the host (`choose`, Note
[Measured choices] in backends.llvm.tuning): the native matmul and the packed GEMM of
`library()`, timed on the shape as the driver would run them (with the copy or the bias pass a
library GEMM needs); `default_choice` is the rule above, taken under TILEFUSE_TUNE=0.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from backends.llvm import tuning
from backends.llvm.aot import cpu_fields
from backends.llvm.kernel import KernelModule
from backends.llvm.matmul import Matmul
from backends.llvm.matmul import module as matmul_module
from backends.llvm.runtime import native_runner
from backends.llvm.tuning import Choice
from compiler.core import config
from compiler.core.reference import local
from compiler.core.schedule import ExternCall, KernelSpec, Step, index_map
from compiler.core.types import DType, TensorType

BIAS_GEMM_MIN_BYTES = 4 << 20
"""The smallest GEMM output (bytes) whose bias goes into the native matmul rather than a native
pass after the packed GEMM, where the input is contiguous (Note [A bias into the GEMM])."""


@dataclass(frozen=True)
class WeightGemm:
    """A matmul of a weight as the driver may run it: x [M, K] (`x` the driver's expression of
    its root; `a_strides` how the native matmul reads it, `strided` when it is a view that is
    not row-major), times B [K, N] from the weight `weight` (`transposed`: the graph reads
    `w.T`, nn.Linear's layout; else `w` as it is, HF Conv1D's), with the native part `bias`
    after it when that only adds a bias into a kernel output, into a kernel output or a slot."""

    m: int
    k: int
    n: int
    shape: tuple[int, ...]  # the product's
    x: str
    a_strides: tuple[int, int, int]
    strided: bool
    weight: str
    transposed: bool
    bias: tuple[KernelSpec, str, str] | None
    into_output: bool
    native: bool  # the native matmul can compute it (x's dtype is the product's, no offset)

    def key(self) -> str:
        """The shape as the tuning file keys it."""
        x = f"strided{self.a_strides[1:]}" if self.strided else "row"
        bias = "col" if self.bias is not None else "-"
        into = "output" if self.into_output else "slot"
        return f"m={self.m} k={self.k} n={self.n} x={x} bias={bias} into={into}"


def weight_gemm(
    e: ExternCall,
    ops: list[str],
    names: dict[str, str],
    weights: frozenset[str],
    after: tuple[tuple[str, ...], list[Step]] = ((), []),
) -> WeightGemm | None:
    """`e` as a `WeightGemm` when it is `x @ w.T` or `x @ w` of a weight `w` with x of rank
    2 or more; else None. `after`: the kernel's outputs and the steps after `e`."""
    n = e.node
    types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
    a, b = (types[i] for i in n.inputs)
    views = {v.out.name: v for v in e.views}
    if b.rank != 2 or a.rank < 2:
        return None
    w = views.get(n.inputs[1])
    if n.inputs[1] in weights:  # x @ w: w is [K, N]
        weight, transposed = n.inputs[1], False
    elif w is not None and w.op == "permute" and w.inputs[0] in weights:  # x @ w.T
        weight, transposed = w.inputs[0], True
    else:
        return None
    chain, root = [], n.inputs[0]
    while root in views:
        chain.append(views[root])
        root = views[root].inputs[0]
    strided = _as_matrix(index_map(chain[::-1], types[root])) if chain else None
    m, k = math.prod(a.shape[:-1]), a.shape[-1]
    persistent = n.out.name in names
    bias = None if persistent else bias_epilogue(e, after)
    if bias is not None and bias[2] not in names:  # not a value the driver holds
        bias = None
    if strided is None:  # row-major: a view chain's result is contiguous() for free
        x, a_strides = f"{ops[0]}.contiguous()" if chain else ops[0], (0, k, 1)
    else:
        x, a_strides = names[root], (0, *strided[1])
    return WeightGemm(
        m,
        k,
        b.shape[1],
        n.out.type.shape,
        x,
        a_strides,
        strided is not None,
        weight,
        transposed,
        bias,
        persistent,
        a.dtype == n.out.type.dtype and (strided is None or strided[2] == 0),
    )


def default_choice(g: WeightGemm) -> str:
    """How the driver runs `g` without measuring: "native" into its destination where a
    library GEMM would need a copy (a kernel output, a strided x) or where a large bias goes
    into it (Note [A bias into the GEMM]); else the packed GEMM of `library()` ("mkl",
    "onednn"), or "matmul" (`torch.matmul`) for one row (Note [No packing for one row]) or
    without either library."""
    large_bias = g.bias is not None and g.m * g.n * 4 >= BIAS_GEMM_MIN_BYTES
    if g.native and (g.into_output or g.strided or large_bias):
        return "native"
    lib = library()
    return "matmul" if g.m == 1 or lib is None else lib


def choose(g: WeightGemm, name: str, measure: bool) -> tuple[str, Choice | None]:
    """How the driver runs `g`, the matmul of extern call `name`, and the `Choice` when it was
    one (Note [Measured choices] in backends.llvm.tuning): the native matmul or the packed GEMM
    of `library()`, whichever is faster on this host for the shape, for more than one row.
    Without `measure`, the tuning file's choice or the default: nothing is timed."""
    default = default_choice(g)
    if g.m == 1:
        return default, None
    candidates: dict[str, Callable[[], tuning.Runner]] = {}
    if g.native:
        candidates["native"] = functools.partial(_time_native, g, name)
    lib = library()  # one library: Note [Measured choices] says why not both
    if lib is not None:
        candidates[lib] = functools.partial(_time_packed, g, lib)
    if default not in candidates:
        return default, None
    made = tuning.decide("gemm", g.key(), candidates, default, measure=measure)
    return made.choice, made


def candidate_modules(gemms: list[tuple[WeightGemm, str]]) -> list[str]:
    """The IR of the native matmuls `choose` is about to time (each `(gemm, extern call)`; each
    the module the program would call), for the caller to compile at once with the rest."""
    return [
        matmul_module(name, _matmul(g)).ir
        for g, name in gemms
        if g.native and g.m > 1 and tuning.pending("gemm", g.key())
    ]


def native_call(
    e: ExternCall,
    g: WeightGemm,
    ops: list[str],
    names: dict[str, str],
    slot: Callable[[str, TensorType], str],
) -> tuple[list[str], list[KernelModule], Step | None]:
    """The native matmul of `g` into its destination (`backends.llvm.matmul`), with its bias
    when it has one: the lines, the native module they call and the native part the call
    computed (None: none)."""
    n = e.node
    out = n.out.name
    # x @ w: w [K, N] is B as it is; x @ w.T: B is w transposed, made once per weight version
    weight = f"W.transposed({names[g.weight]})" if g.transposed else f"{ops[1]}.contiguous()"
    mod = matmul_module(e.name, _matmul(g))
    if g.bias is not None:
        part, total, b_name = g.bias
        rest = f"{names[b_name]}.contiguous(), {names[total]}.view({g.m}, {g.n})"
        note = f"  # extern {e.name} + native {part.name}: native GEMM and bias into the output"
        return (
            [f"    {mod.symbol}(NTHREADS, {g.x}, {weight}, {rest}){note}"],
            [mod],
            part,
        )
    if out not in names:
        names[out] = slot(out, n.out.type)
    note = f"  # extern {e.name}: native GEMM into its destination"
    return (
        [f"    {mod.symbol}(NTHREADS, {g.x}, {weight}, {names[out]}.view({g.m}, {g.n})){note}"],
        [mod],
        None,
    )


def _matmul(g: WeightGemm) -> Matmul:
    return Matmul(1, g.m, g.n, g.k, g.a_strides, bias="col" if g.bias is not None else None)


def _time_native(g: WeightGemm, name: str) -> tuning.Runner:
    """One run of `g` as the native matmul, on random operands: the module is the one the
    program would call (the same IR)."""
    args = [_x(g), torch.randn(g.k, g.n)]
    if g.bias is not None:
        args.append(torch.randn(g.n))
    args.append(torch.empty(g.m, g.n))
    return native_runner(matmul_module(name, _matmul(g)), args)


def _time_packed(g: WeightGemm, lib: str) -> tuning.Runner:
    """One run of `g` as the packed GEMM of `lib` as the driver calls it: x made contiguous
    when strided, the product then copied into a kernel output, or its bias added by a pass."""
    x, w = _x(g), torch.randn(g.n, g.k)
    m, k = g.m, g.k
    out, bias = torch.empty(m, g.n), torch.randn(g.n)
    if lib == "onednn":
        wd = torch.ops.mkldnn._reorder_linear_weight(w, m)

        def product() -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x.reshape(m, k), wd, None, "none", [], "")

    else:
        packed = torch.ops.mkl._mkl_reorder_linear_weight(w, m)

        def product() -> torch.Tensor:
            return torch.ops.mkl._mkl_linear(x.reshape(m, k), packed, w, None, m)

    def run() -> None:
        y = product()
        if g.bias is not None:
            torch.add(y, bias, out=out)
        elif g.into_output:
            out.copy_(y)

    return run


def _x(g: WeightGemm) -> torch.Tensor:
    """A random x laid out as the program reads it: row-major, or a strided view."""
    _, sm, sk = g.a_strides
    size = 1 + (g.m - 1) * sm + (g.k - 1) * sk
    return torch.randn(size).as_strided((g.m, g.k), (sm, sk))


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
    "auto" is oneDNN on a CPU that is not Intel's, MKL on Intel's. The library is chosen by
    vendor, not measured (Note [Measured choices] says why); whether a GEMM runs in it or
    natively is measured. oneDNN's reordered weight is an opaque tensor, so it
    is rebuilt in each process, as MKL's packed copy is."""
    choice = config.load().gemm
    if choice == "auto":
        intel = cpu_fields().get("vendor_id", "GenuineIntel") == "GenuineIntel"
        choice = "mkl" if intel else "onednn"
    if _available(choice):
        return choice
    other = "mkl" if choice == "onednn" else "onednn"
    return other if _available(other) else None


def _available(lib: str) -> bool:
    """Whether this torch has the packed GEMM of `lib`, "mkl" or "onednn"."""
    if lib == "mkl":
        return torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def packed_call(g: WeightGemm, ops: list[str], lib: str) -> tuple[str, str]:
    """The packed GEMM of `lib` ("mkl" or "onednn") for `g`, the weight packed once per version
    (`PackedWeights`), as an expression and the library's name.

    Note [No packing for one row]
    A one-row product (a timestep embedding's MLP, DiT's adaLN modulation) reads every weight
    element once: packing cannot make it faster, and MKL's packed copy for one row is larger
    than the weight (1280x1280: 8.1 MiB resident against 6.25), and no faster (times in
    docs/llvm_backend.md, Measurements). So one row is a plain `torch.matmul` on the weight
    itself, which a loaded artifact reads straight from its memory-mapped file."""
    m, k = g.m, g.k
    x, shape = f"{ops[0]}.reshape({m}, {k})", g.shape
    # HF Conv1D's x @ w packs w.T; nn.Linear's x @ w.T packs w as it is
    transposed = not g.transposed
    if lib == "onednn":
        w_dnnl = f"W.dnnl({local(g.weight)}, {m}, transposed={transposed})"
        call = f"torch.ops.mkldnn._linear_pointwise({x}, {w_dnnl}, None, 'none', [], '')"
        return f"{call}.view({shape})", "oneDNN packed GEMM"
    packed = f"W.pack({local(g.weight)}, {m}, transposed={transposed})"
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
