"""Pointwise Triton kernels, and the frame every pointwise/reduction kernel shares.

A pointwise kernel is one flat loop over its domain, XBLOCK elements per program; each output
is stored at its own row-major offset of the domain index, each input read through its index
map (backends/triton/values.py):

    # k0_fused_add_gelu  pointwise  domain=[4, 16]
    #   in:  x: f32[4,16], b: f32[16]
    #   out: v1
    #     v0: f32[4,16] = add(x, b)
    #     v1: f32[4,16] = gelu(v0, approximate='tanh')
    @triton.jit
    def k0_fused_add_gelu(a_x_ptr, a_x_s0, a_x_s1, a_b_ptr, a_b_s0, a_v1_ptr, XBLOCK: tl.constexpr):
        offs = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
        mask = offs < 64
        ...

`frame(spec, strided, storage)` gives the parameters (pointer per input, constant and output;
runtime strides for `strided` inputs, the graph inputs, which may be non-contiguous) and the
`Pointer`s the value emitter reads through. `RenderedKernel` is the result both renderers
return: the source, its parameters, constexprs, grid and launch options.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.index import Var, linearize, unravel
from backends.triton.ops import SIGNATURE_TYPES, TritonUnsupportedError
from backends.triton.template import fill
from backends.triton.values import Index, Pointer, TritonValues
from compiler.core.ir import ConstArray
from compiler.core.ops.structural import index_reads
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig
from compiler.core.types import DType, TensorType

Storage = Callable[[DType], DType]  # IR dtype -> the dtype the program stores it as


@dataclass(frozen=True)
class Param:
    """One kernel parameter: `kind` is "ptr" (of IR value `value`), "stride" (dim `dim` of
    `value`), "const" (pointer to constant `value`), "out", "status" (the two words an index
    check writes, the launcher's `status`: Note [Index checks] in backends/index_maps.py), or
    "workspace" (the launcher's fp32 buffer named `value`)."""

    name: str
    kind: str
    value: str = ""
    dim: int = 0
    signature: str = ""


@dataclass(frozen=True)
class JitEntry:
    """One @triton.jit function of the module as target verification compiles it: its
    signature (parameter -> Triton type, "constexpr" for constexprs, in parameter order), the
    constexpr values of a compiled launch, and the launch options."""

    name: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, Any], ...]
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class RenderedKernel:
    """A @triton.jit function's source and what launching it needs."""

    name: str
    source: str
    params: tuple[Param, ...]
    constexprs: tuple[tuple[str, int], ...]
    grid: int
    num_warps: int
    num_stages: int
    constants: tuple[tuple[str, ConstArray], ...] = ()  # IR name -> its array
    # the index checks the kernel makes, numbered as it writes them into `status`:
    # (op, node, source line, size of the dimension indexed, lowest index allowed)
    checks: tuple[tuple[str, str, str, int, int], ...] = ()

    @property
    def entries(self) -> tuple[JitEntry, ...]:
        if "@triton.jit" not in self.source:  # nothing to launch (every output empty)
            return ()
        sig = [(p.name, p.signature) for p in self.params]
        sig += [(c, "constexpr") for c, _ in self.constexprs]
        return (JitEntry(self.name, tuple(sig), self.constexprs, self.num_warps, self.num_stages),)


def local(name: str) -> str:
    return f"a_{name}"


def launch_args(
    params: list[Param] | tuple[Param, ...],
    constants: tuple[tuple[str, ConstArray], ...],
    device: str,
) -> list[str]:
    """The launcher's argument expression for each data parameter: the tensor, its runtime
    stride, or the module constant moved to `device`; any other parameter (a workspace) is
    the host variable named by its `value`."""
    digests = dict(constants)
    args = []
    for p in params:
        if p.kind in ("ptr", "out"):
            args.append(local(p.value))
        elif p.kind == "stride":
            args.append(f"{local(p.value)}.stride({p.dim})")
        elif p.kind == "const":
            args.append(f"_on(_const_{digests[p.value].digest}, {device})")
        else:
            args.append(p.value)
    return args


def header(spec: KernelSpec) -> list[str]:
    lines = [f"# {line}" for line in str(spec).splitlines()]
    if spec.tile is not None:
        lines.append(f"#   tile ({spec.tile.gpu}): {spec.tile.short}")
    return lines


def frame(
    spec: KernelSpec, strided: frozenset[str], storage: Storage, checks: bool = False
) -> tuple[list[Param], dict[str, Pointer], tuple[tuple[str, ConstArray], ...]]:
    """The kernel's data parameters and the pointers its values are read and written by;
    with `checks`, a `status` pointer where the kernel reads index tensors (its values then
    check them: `TritonValues.check_indices`)."""
    params: list[Param] = []
    pointers: dict[str, Pointer] = {}

    def typed(t: TensorType) -> TensorType:
        return TensorType(t.shape, storage(t.dtype))

    for v in spec.inputs:
        p = f"{local(v.name)}_ptr"
        params.append(Param(p, "ptr", v.name, signature=SIGNATURE_TYPES[storage(v.type.dtype)]))
        strides = None
        if v.name in strided:
            strides = tuple(f"{local(v.name)}_s{d}" for d in range(v.type.rank))
            params += [Param(s, "stride", v.name, d, "i32") for d, s in enumerate(strides)]
        pointers[v.name] = Pointer(p, typed(v.type), strides)
    constants = []
    for n in spec.body:
        if n.op == "constant":
            p = f"const_{n.out.name}_ptr"
            sig = SIGNATURE_TYPES[storage(n.out.type.dtype)]
            params.append(Param(p, "const", n.out.name, signature=sig))
            pointers[n.out.name] = Pointer(p, typed(n.out.type))
            constants.append((n.out.name, n.attr("value")))
    for o in spec.outputs:
        t = spec.type_of(o)
        p = f"{local(o)}_ptr"
        params.append(Param(p, "out", o, signature=SIGNATURE_TYPES[storage(t.dtype)]))
        pointers[f"out:{o}"] = Pointer(p, typed(t))
    reads_indices = any(index_reads(n.op, [spec.type_of(i) for i in n.inputs]) for n in spec.body)
    if checks and reads_indices:
        params.append(Param("status_ptr", "status", "status", signature="*i64"))
        pointers["status"] = Pointer("status_ptr", TensorType((2,), DType.i64))
    return params, pointers, tuple(constants)


def rounding(body: list[str]) -> list[tuple[str, int]]:
    """The BF16_BITS constexpr when the body rounds to bf16 (Note [bf16 rounding under the
    interpreter] in backends/triton/ops.py); its value here is the compiled one (False)."""
    return [("BF16_BITS", 0)] if any("BF16_BITS" in line for line in body) else []


def signature_line(params: list[Param], constexprs: list[str]) -> str:
    names = [p.name for p in params] + [f"{c}: tl.constexpr" for c in constexprs]
    return ", ".join(names)


def index_in(shape: tuple[int, ...], idx: Index, domain: tuple[int, ...], what: str) -> Index:
    """`idx` (an index of `domain`) as the index of a value of `shape` with the same
    elements in row-major order; a value of another size cannot be stored from here."""
    if shape == domain:
        return idx
    if math.prod(shape) != math.prod(domain):
        raise TritonUnsupportedError(f"triton backend: {what} {list(shape)} is not {list(domain)}")
    return unravel(linearize(idx, domain), shape)


POINTWISE = """
${header}
@triton.jit
def ${name}(${params}):
    offs = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)
    mask = offs < ${numel}
    ${body}
"""


def render_pointwise(
    spec: KernelSpec, tile: TileConfig, strided: frozenset[str], storage: Storage, compute: str
) -> RenderedKernel:
    """A pointwise kernel: XBLOCK (from `tile`) elements of the domain per program."""
    params, pointers, constants = frame(spec, strided, storage, checks=True)
    numel = math.prod(spec.domain)
    values = TritonValues(spec, pointers, compute)
    idx = unravel(Var("offs", max(numel, 1)).lin, spec.domain)
    for o in spec.outputs:
        at = index_in(spec.type_of(o).shape, idx, spec.domain, f"output {o}")
        values.store(pointers[f"out:{o}"], at, values.value(o, at))
    xblock = dict(tile.blocks).get("XBLOCK", 1024)
    body = values.pop()
    constexprs = [("XBLOCK", xblock), *rounding(body)]
    source = fill(
        POINTWISE,
        header=header(spec),
        name=spec.name,
        params=signature_line(params, [c for c, _ in constexprs]),
        numel=str(numel),
        body=body,
    )
    source += "\n"
    return RenderedKernel(
        spec.name,
        source,
        tuple(params),
        tuple(constexprs),
        math.ceil(numel / xblock),
        tile.num_warps,
        tile.num_stages,
        constants,
        tuple(values.checks),
    )
