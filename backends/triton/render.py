"""The Triton backend: a schedule as ONE readable Python module of @triton.jit kernels plus a
launcher named after the graph.

    @triton.jit
    def k0_fused_add_gelu(a_x_ptr, a_x_s0, a_x_s1, a_b_ptr, a_b_s0, a_v1_ptr, XBLOCK: tl.constexpr):
        ...

    def launch_k0_fused_add_gelu(a_x, a_b, a_v1):
        grid = (1,)
        k0_fused_add_gelu[grid](a_x, a_x.stride(0), ..., XBLOCK=64, num_warps=1, num_stages=1)

    def block(a_x, a_b):
        device = a_x.device
        arena = torch.empty(256, dtype=torch.uint8, device=device)
        a_v0 = _at(arena, 0, (4, 16), torch.float32)
        ...
        return (a_v1,)

The launcher allocates the planned arena (`passes.memory.plan_memory`, floats stored in their
IR dtype: `memory_request`) and views each planned value at its offset, computes each grid
from the kernel's TileConfig (kernels compiled without `gpu=` are tiled for
`compiler.core.gpu.default_profile()` here) and launches the kernels in order. Graph inputs
are read through runtime strides (non-contiguous tensors need no copy); intermediates are
contiguous views of the arena.

Every kernel kind renders, with no fallback to torch: pointwise and reduction kernels from the
op table (backends/triton/pointwise.py, backends/triton/reduction.py), and matmul, conv2d and
attention kernels from the hand-written templates with their fused prologues and epilogues
(backends/triton/heavy.py). A heavy kernel's launch function goes through its
`arguments_<kernel>(...)`, which lists its launches: one, or for split-K the partial GEMM
into an fp32 workspace it allocates and the `<kernel>_reduce` pass that sums it and runs the
epilogue. A kernel holding an op with no Triton rendering is a TritonUnsupportedError naming
the kernel and the op.

Note [Interpreted and compiled definitions]
Triton reads TRITON_INTERPRET when a @triton.jit function is *defined*, and an interpreted
definition cannot be compiled for a target. So the module is executed once per mode:
`load()`/`load_namespace()` define it interpreted when no CUDA/ROCm device is present
(TRITON_INTERPRET=1 only while the module executes, under a lock, then restored: the shared
loader backends.triton.loader.load_module), and `load_compiled()` defines it compiled
(TRITON_INTERPRET=0 meanwhile) for target verification, returning per @triton.jit function
(split-K's `_reduce` pass included) its jit function, signature, constexprs and launch
options. `heavy_module(spec, tile)` gives one heavy kernel's text as a
module of its own for the same purpose.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from backends.triton import attention as attention_template
from backends.triton import conv as conv_template
from backends.triton import matmul as matmul_template
from backends.triton.heavy import ANCHOR_OPS, HEAVY_KINDS, HeavyKernel, render_gemm
from backends.triton.ops import HELPERS, TORCH_DTYPES, TritonUnsupportedError, unsupported
from backends.triton.pointwise import (
    RenderedKernel,
    Storage,
    frame,
    launch_args,
    local,
    render_pointwise,
)
from backends.triton.reduction import render_reduction
from backends.triton.values import TileValues
from compiler.core.gpu import default_profile
from compiler.core.ir import ConstArray, Node, format_attr, print_graph
from compiler.core.schedule import KernelSpec, Schedule, output_chains
from compiler.core.tile_config import TileConfig
from compiler.core.types import DType
from passes import tiling
from passes.memory import Arena, MemoryRequest, stored_in

INTERPRETER_WARNING = (
    "tilefuse: no CUDA/ROCm device, so the Triton kernels run under the Triton interpreter "
    "(TRITON_INTERPRET=1): this checks their numerics, it is not fast"
)

_LOCK = threading.Lock()
_LOADED: dict[tuple[str, bool], dict[str, Any]] = {}
_warned = False


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def unsupported_reason(spec: KernelSpec) -> str | None:
    """Why this backend cannot render `spec`, or None when it can."""
    for n in spec.body:
        why = _unsupported(spec, n)
        if why is not None:
            return f"kernel {spec.name}: {why}"
    try:
        render_kernel(spec, frozenset(), "float32")
    except TritonUnsupportedError as e:
        return str(e)
    return None


def _unsupported(spec: KernelSpec, n: Node) -> str | None:
    if spec.kind in HEAVY_KINDS and n.op == ANCHOR_OPS[spec.kind]:
        return None  # the template's anchor
    return unsupported(n.op)


def supports(spec: KernelSpec) -> bool:
    """Kernels whose every op has a Triton rendering (every kind: pointwise, reduction,
    matmul, conv2d, attention)."""
    return unsupported_reason(spec) is None


def storage_dtype(float_dtype: str, wide: bool = False) -> Callable[[DType], DType]:
    """How the program stores IR dtypes: as themselves, or every float in the compute type
    (float64, or `wide`: the per-kernel program bisection compares with the reference, whose
    floats are not rounded to 16 bits between kernels)."""
    if float_dtype == "float64":
        return lambda d: DType.f64 if d.is_float else d
    if wide:
        return lambda d: DType.f32 if d.is_float else d
    return lambda d: d


def render_kernel(
    spec: KernelSpec, strided: frozenset[str], float_dtype: str, wide: bool = False
) -> RenderedKernel | HeavyKernel:
    """The @triton.jit kernel(s) for `spec` (tiled for the default profile when it carries
    no TileConfig): pointwise and reduction kernels here, matmul/conv2d/attention by the
    templates (backends/triton/heavy.py)."""
    for n in spec.body:
        why = _unsupported(spec, n)
        if why is not None:
            raise TritonUnsupportedError(f"triton backend: kernel {spec.name}: {why}")
    if spec.empty:  # no @triton.jit function: its launcher returns at once
        note = f"# {spec.name}: every output is empty (a size-0 dimension): nothing to launch\n"
        return RenderedKernel(spec.name, note, (), (), 0, 1, 1)
    _check_index_range(spec)
    try:
        tile = spec.tile if spec.tile is not None else default_tile(spec)
        compute = "tl.float64" if float_dtype == "float64" else "tl.float32"
        storage = storage_dtype(float_dtype, wide)
        if spec.kind in HEAVY_KINDS:
            return render_heavy(spec, tile, strided, storage, compute)
        render = render_reduction if spec.kind == "reduction" else render_pointwise
        return render(spec, tile, strided, storage, compute)
    except ZeroDivisionError:  # a size-0 dimension it must read (a sum over it, a GEMM's K)
        values = [(v.name, v.type) for v in spec.inputs] + [
            (n.out.name, n.out.type) for n in spec.body
        ]
        empty = [f"{name} ({t})" for name, t in values if t.numel == 0]
        if not empty:
            raise
        raise TritonUnsupportedError(
            f"triton backend: kernel {spec.name} computes non-empty outputs from the empty "
            f"tensor {empty[0]}; the Triton kernels do not read size-0 dimensions: compile "
            "with backend='llvm' or backend='numpy'"
        ) from None


INDEX_LIMIT = 2**31


def _check_index_range(spec: KernelSpec) -> None:
    """The kernels index with int32 (program ids, aranges and their products with strides):
    a tensor of 2^31 elements or more would wrap silently, so it is refused by name."""
    for v in (*spec.inputs, *(n.out for n in spec.body)):
        if v.type.numel >= INDEX_LIMIT:
            raise TritonUnsupportedError(
                f"triton backend: kernel {spec.name}: {v.name} {v.type} has {v.type.numel} "
                f"elements, past what int32 indexing addresses (2^31); int64 indexing is not "
                "implemented"
            )


def default_tile(spec: KernelSpec) -> TileConfig:
    """The TileConfig of a kernel compiled without `gpu=`: tiled for the default profile."""
    return tiling.tile(spec, default_profile())


@dataclass(frozen=True)
class TritonKernel:
    """What target verification needs to compile one kernel: `triton.compile(ASTSource(fn,
    signature, constexprs), target=..., options={"num_warps": ..., "num_stages": ...})`."""

    name: str
    fn: Any
    signature: dict[str, str]
    constexprs: dict[str, int]
    num_warps: int
    num_stages: int


@dataclass(frozen=True)
class TritonProgram:
    """The generated module; `load()` gives the callable over torch tensors."""

    name: str
    source: str
    kernels: tuple[RenderedKernel | HeavyKernel, ...]
    constants: dict[str, np.ndarray] = field(default_factory=dict)

    def load(self) -> Callable[..., tuple[Any, ...]]:
        """The program: graph inputs (torch tensors, in order) -> tuple of outputs."""
        interpret = not has_gpu()
        return _quiet(self._namespace(interpret=interpret)[self.name], interpret)

    def load_namespace(self) -> dict[str, Any]:
        """The kernel launch functions by kernel name, each taking the kernel's inputs and
        then one tensor per output (written in place). A kernel that checks indices gets
        its status words here and raises as the program would."""
        interpret = not has_gpu()
        ns = self._namespace(interpret=interpret)
        checking = [k.name for k in self.kernels if k.checks]

        def checked(name: str, launch: Callable[..., None]) -> Callable[..., None]:
            site = checking.index(name)

            def run(*args: torch.Tensor) -> None:
                status = torch.zeros(2 * len(checking), dtype=torch.int64, device=args[0].device)
                launch(*args, status[2 * site : 2 * site + 2])
                if status.any():
                    raise ns["_index_error"](status.tolist(), ns["_CHECKS"])

            return run

        launches = {k.name: ns[f"launch_{k.name}"] for k in self.kernels}
        launches = {n: checked(n, f) if n in checking else f for n, f in launches.items()}
        return {n: _quiet(f, interpret) for n, f in launches.items()}

    def load_compiled(self) -> dict[str, TritonKernel]:
        """Per @triton.jit function of the module (a split-K GEMM has two: `<kernel>` and
        `<kernel>_reduce`), the compiled-mode jit function and its signature, constexprs and
        options (Note [Interpreted and compiled definitions])."""
        ns = self._namespace(interpret=False)
        out = {}
        for k in self.kernels:
            for e in k.entries:
                sig, consts = dict(e.signature), dict(e.constexprs)
                out[e.name] = TritonKernel(
                    e.name, ns[e.name], sig, consts, e.num_warps, e.num_stages
                )
        return out

    def _namespace(self, *, interpret: bool) -> dict[str, Any]:
        global _warned
        key = (self.source, interpret)
        with _LOCK:
            if key not in _LOADED:
                _LOADED[key] = _execute(self.source, self.name, self.constants, interpret)
            warn = interpret and not _warned
            _warned = _warned or interpret
        if warn:
            warnings.warn(INTERPRETER_WARNING, RuntimeWarning, stacklevel=3)
        return _LOADED[key]


def _quiet(fn: Callable[..., Any], interpret: bool) -> Callable[..., Any]:
    """Under the interpreter (NumPy underneath) IEEE results such as 1/0 in masked-off lanes
    come without NumPy's warnings, as on a GPU."""
    if not interpret:
        return fn

    def run(*args: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args)

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", "run")
    return run


def _execute(
    source: str, name: str, constants: dict[str, np.ndarray], interpret: bool
) -> dict[str, Any]:
    """The module's globals, defined in one mode by the shared per-mode loader
    (backends.triton.loader.load_module: TRITON_INTERPRET set only while the module executes,
    and triton.language's own jit helpers routed to interpreted twins during interpreted
    launches), with the constants bound."""
    import torch

    from backends.triton.loader import load_module

    module = load_module(source, interpret=interpret)
    for k, v in constants.items():
        setattr(module, k, torch.from_numpy(v.copy()))
    return vars(module)


PRELUDE = '''\
import torch
import triton
import triton.language as tl


def _at(arena, offset, shape, dtype):
    count = 1
    for n in shape:
        count *= n
    return arena[offset : offset + count * dtype.itemsize].view(dtype).view(shape)


_devices = {}


def _on(t, device):
    """A module constant on `device` (copied there once)."""
    if t.device == device:
        return t
    key = (id(t), str(device))
    if key not in _devices:
        _devices[key] = t.to(device)
    return _devices[key]


def _index_error(status, checks):
    """The first index check that failed, as an IndexOutOfRangeError (status: two words per
    checking kernel, (which check + 1, the index); checks: per kernel, its checks)."""
    from compiler.core.errors import IndexOutOfRangeError

    for site, kernel_checks in enumerate(checks):
        which, index = status[2 * site], status[2 * site + 1]
        if which:
            op, node, source, size, lowest = kernel_checks[which - 1]
            return IndexOutOfRangeError(op, node, source, index, size, lowest)
    raise AssertionError("no index check failed")


def _interpreted(kernel):
    """True for a kernel defined under the interpreter (Note [bf16 rounding under the
    interpreter] in backends/triton/ops.py: it then rounds to bf16 on the bits)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def _default_device():
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
'''


def memory_request(s: Schedule, float_dtype: str, wide: bool = False) -> MemoryRequest:
    """This backend's storage policy: every value as `storage_dtype` says, no scratch."""
    storage = storage_dtype(float_dtype, wide)
    return stored_in(s, lambda d: storage(d).itemsize)


def render_schedule(
    s: Schedule, arena: Arena, *, float_dtype: str = "float32", wide: bool = False
) -> TritonProgram:
    """One module: helpers, every kernel, a launch function per kernel and the program, whose
    planned values live in `arena` (planned for `memory_request(s, float_dtype, wide)`)."""
    g = s.graph
    strided = frozenset(v.name for v in g.inputs)
    kernels = [render_kernel(k, strided, float_dtype, wide) for k in s.kernels]
    storage = storage_dtype(float_dtype, wide)
    constants: dict[str, np.ndarray] = {}
    for k in kernels:
        for _, c in k.constants:
            constants[f"_const_{c.digest}"] = _constant_array(c, float_dtype)
    for n in g.nodes:
        for _, v in n.attrs:
            if isinstance(v, ConstArray):
                constants.setdefault(f"_const_{v.digest}", _constant_array(v, float_dtype))
    parts = [
        f'"""tilefuse Triton kernels for {g.name}: {len(s)} kernels, {len(arena.blocks)} planned '
        f"values in an arena of {arena.size} bytes; floats computed in "
        f'{"fp64" if float_dtype == "float64" else "fp32"}."""',
        PRELUDE,
        HELPERS,
    ]
    for spec, k in zip(s.kernels, kernels, strict=True):
        host = k.host if isinstance(k, HeavyKernel) else _launcher(spec, k)
        parts += [k.source, host]
    checks = [k.checks for k in kernels if k.checks]
    if checks:  # per checking kernel, its checks (Note [Index checks] in backends/index_maps.py)
        parts.append(f"_CHECKS = {tuple(checks)!r}")
    parts.append(_program(s, arena, storage, kernels))
    source = "\n\n".join(p.rstrip("\n") for p in parts) + "\n"
    return TritonProgram(g.name, source, tuple(kernels), constants)


def _constant_array(c: ConstArray, float_dtype: str) -> np.ndarray:
    a = c.array()
    if a.dtype.kind == "f" and float_dtype == "float64":
        a = a.astype(np.float64)
    return a


def _launcher(spec: KernelSpec, k: RenderedKernel) -> str:
    names = [local(v.name) for v in spec.inputs] + [local(o) for o in spec.outputs]
    names += ["status"] if k.checks else []
    args = launch_args(k.params, k.constants, f"{local(spec.outputs[0])}.device")
    args += [
        f"{c}=_interpreted({k.name})" if c == "BF16_BITS" else f"{c}={v}" for c, v in k.constexprs
    ]
    args += [f"num_warps={k.num_warps}", f"num_stages={k.num_stages}"]
    lines = [f"def launch_{k.name}({', '.join(names)}):"]
    if k.grid == 0:
        lines.append("    return  # an empty domain")
        return "\n".join(lines)
    lines.append(f"    grid = ({k.grid},)")
    call = f"    {k.name}[grid]({', '.join(args)})"
    if len(call) > 100:
        call = f"    {k.name}[grid](\n" + "".join(f"        {a},\n" for a in args) + "    )"
    lines.append(call)
    return "\n".join(lines)


def _program(
    s: Schedule,
    arena: Arena,
    storage: Callable[[DType], DType],
    kernels: list[RenderedKernel | HeavyKernel],
) -> str:
    """The program function: the arena, each kernel launched in order, the index checks'
    words read once at the end (a kernel that checks indices gets two of `status`)."""
    g = s.graph
    offsets = arena.offsets
    checking = [k.name for k in kernels if k.checks]
    lines = [f"def {g.name}({', '.join(local(v.name) for v in g.inputs)}):"]
    lines += [f"    # {line}" for line in print_graph(g).splitlines()[:1]]
    first = local(g.inputs[0].name) if g.inputs else None
    lines.append(f"    device = {first}.device" if first else "    device = _default_device()")
    if arena.blocks:
        lines.append(f"    arena = torch.empty({arena.size}, dtype=torch.uint8, device=device)")
    if checking:
        n = 2 * len(checking)
        lines.append(f"    status = torch.zeros({n}, dtype=torch.int64, device=device)")
    for k in s.kernels:
        for o in k.outputs:
            t = k.type_of(o)
            dtype = TORCH_DTYPES[storage(t.dtype)]
            if o in offsets:
                lines.append(f"    {local(o)} = _at(arena, {offsets[o]}, {t.shape}, {dtype})")
            else:
                lines.append(
                    f"    {local(o)} = torch.empty({t.shape}, dtype={dtype}, device=device)"
                )
        args = [local(v.name) for v in k.inputs] + [local(o) for o in k.outputs]
        if k.name in checking:
            site = checking.index(k.name)
            args.append(f"status[{2 * site} : {2 * site + 2}]")
        lines.append(f"    launch_{k.name}({', '.join(args)})")
    if checking:  # one read per call (on a GPU, a wait for the kernels)
        lines.append("    if status.any():")
        lines.append("        raise _index_error(status.tolist(), _CHECKS)")
    done = {v.name for v in g.inputs} | {o for k in s.kernels for o in k.outputs}
    chains = output_chains(g)
    for n in g.nodes:  # outputs that are views (or sources): torch views of kernel outputs
        if n.out.name in done or n.out.name not in chains:
            continue
        lines.append(f"    {local(n.out.name)} = {_torch_view(n, storage)}")
        done.add(n.out.name)
    outs = ", ".join(local(o) for o in g.outputs)
    lines.append(f"    return ({outs},)" if len(g.outputs) == 1 else f"    return ({outs})")
    return "\n".join(lines)


def _torch_view(n: Node, storage: Callable[[DType], DType]) -> str:
    x = local(n.inputs[0]) if n.inputs else ""
    dtype = TORCH_DTYPES[storage(n.out.type.dtype)]
    if n.op == "reshape":
        return f"{x}.reshape({format_attr(n.attr('shape'))})"
    if n.op == "permute":
        return f"{x}.permute({format_attr(n.attr('dims'))})"
    if n.op == "expand":
        return f"{x}.expand({format_attr(n.attr('shape'))})"
    if n.op == "slice":
        dim, step = n.attr("dim"), n.attr("step")
        rank = n.out.type.rank
        end = min(n.attr("end"), 2**62)
        return f"{x}[{':, ' * (dim % rank)}{n.attr('start')}:{end}:{step}]"
    if n.op == "full":
        value = n.attr("value")
        v = format_attr(value) if math.isfinite(float(value)) else f"float({str(value)!r})"
        return f"torch.full({n.out.type.shape}, {v}, dtype={dtype}, device=device)"
    if n.op == "arange":
        start, end, step = n.attr("start"), n.attr("end"), n.attr("step")
        return (
            f"torch.arange({start}, {end}, {step}, dtype=torch.float64, device=device).to({dtype})"
        )
    if n.op == "constant":
        return f"_on(_const_{n.attr('value').digest}, device).to({dtype})"
    raise TritonUnsupportedError(f"triton backend: graph output {n.out.name} is a {n.op}")


# --------------------------------------------------------------------------- heavy kernels


def render_heavy(
    spec: KernelSpec, tile: TileConfig, strided: frozenset[str], storage: Storage, compute: str
) -> HeavyKernel:
    """The Triton kernel(s) and host functions of a matmul, conv2d or attention `spec` at
    `tile` (see the module docstring). Inputs in `strided` are read through runtime strides."""
    if spec.kind not in HEAVY_KINDS:
        raise ValueError(f"{spec.name} is a {spec.kind} kernel, not a heavy one")
    # GEMM and convolution prologues check the indices they read; attention's cannot (refused)
    params, pointers, constants = frame(spec, strided, storage, spec.kind != "attention")
    v = TileValues(spec, pointers, compute)
    anchor = next(n for n in spec.body if n.op == ANCHOR_OPS[spec.kind])
    if spec.kind == "attention":
        return attention_template.instantiate(spec, tile, params, constants, v, storage)
    template = conv_template if spec.kind == "conv2d" else matmul_template
    g = template.instantiate(spec, tile, storage, v)
    return render_gemm(g, tile, params, constants, storage(anchor.out.type.dtype))


MODULE = '''\
"""tilefuse heavy kernel {name} ({kind}), as the program module has it, for target
verification: `arguments(*tensors)` gives its launches."""
import torch
import triton
import triton.language as tl


def _interpreted(kernel):
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def _on(t, device):
    return t.to(device)
'''


def heavy_module(
    spec: KernelSpec, tile: TileConfig, strided: frozenset[str] | None = None
) -> tuple[str, tuple[Any, ...], str]:
    """(module source defining `arguments(*tensors)`, example meta tensors for it, a note)
    for a heavy `spec` at `tile`: the kernel text the program's launcher uses, with every
    input read through runtime strides unless `strided` says which are (the program passes
    strides for graph inputs only). Tensors: the inputs, then the outputs, contiguous, then the
    status words of a kernel that checks indices."""
    import torch

    strided = frozenset(v.name for v in spec.inputs) if strided is None else strided
    k = render_heavy(spec, tile, strided, lambda d: d, "tl.float32")
    consts = [
        f"_const_{c.digest} = torch.empty({spec.type_of(n).shape}, dtype="
        f"{TORCH_DTYPES[spec.type_of(n).dtype]}, device='meta')"
        for n, c in k.constants
    ]
    parts = [MODULE.format(name=spec.name, kind=spec.kind), HELPERS, "\n".join(consts)]
    parts += [k.source, k.host, f"arguments = arguments_{spec.name}"]
    source = "\n\n\n".join(p.strip("\n") for p in parts if p) + "\n"
    tensors = []
    for t in [v.type for v in spec.inputs] + [spec.type_of(o) for o in spec.outputs]:
        dtype = getattr(torch, TORCH_DTYPES[t.dtype].removeprefix("torch."))
        tensors.append(torch.empty(t.shape, dtype=dtype, device="meta"))
    if k.checks:  # its index checks' two words (Note [Index checks] in backends/index_maps.py)
        tensors.append(torch.empty((2,), dtype=torch.int64, device="meta"))
    passes = "split-K pass 1 and 2" if tile.split_k > 1 else "one pass"
    return source, tuple(tensors), f"{len(k.entries)} jit function(s): {passes}"
