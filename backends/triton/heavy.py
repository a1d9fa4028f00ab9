"""Matmul, conv2d and attention KernelSpecs as kernels of the Triton program: what their
instantiations share.

Each hand-written template instantiates itself for one KernelSpec beside its own text
(`instantiate` in backends/triton/matmul.py, conv.py, attention.py; the GEMM skeleton they
fill is in backends/triton/template.py); `render_heavy` in backends/triton/render.py picks
the template by kernel kind. A GEMM (matmul or conv2d) comes back as a `Gemm`, which
`render_gemm` fills into the skeleton (split-K's second pass included); attention renders
itself. `finish` makes the `HeavyKernel`: the @triton.jit function(s) under the kernel's IR
as a header comment, and the host functions the program calls:

    def arguments_k3_fused_matmul_add(a_t18, a_w, a_b, a_t4, a_t24):
        ...  # [(kernel, grid, args, constexprs), ...]: one launch, or split-K's two
    def launch_k3_fused_matmul_add(a_t18, a_w, a_b, a_t4, a_t24):
        for (kernel, grid, args, meta), options in zip(arguments_k3_...(...), (...)):
            kernel[grid](*args, **meta, **options)

What the templates take as strides and hook statements comes from the kernel body:
every operand tile is the IR value at the tile's symbolic index (backends/triton/values.py),
so views (a head split, `permute(reshape(attention_out))` before a projection, a 5-d QKV
slice), prologues (SiLU before the time-embedding GEMM, the sinusoidal embedding, GEGLU
before the FF projection, the residual add before a downsampling conv, RoPE on q and k) and
epilogues (bias, GELU/SiLU, residual, adaLN gate, time-embedding add, an embedding gather)
are index arithmetic and fp32 statements around the dot, never a copy and never torch.

- An operand that is a view of a kernel input is loaded raw (its storage dtype feeds the
  dot); a computed one is rounded to the operand dtype, as the reference rounds it, and
  zeroed outside the tile's mask (K tail, conv padding, padded head dims).
- Several GEMMs reading one A (Q/K/V, cross-attention K/V) are one GEMM over the joint N:
  column n belongs to the GEMM whose segment holds it, B is loaded per segment, and each
  output's epilogue runs on its own segment. When an epilogue combines them (SwiGLU's
  gate and up), they are the template's dual GEMM instead: one accumulator each.
- Split-K (`tile.split_k > 1`): pass 1 writes fp32 partials into a workspace the launcher
  allocates, pass 2 (`<name>_reduce`) sums them and runs the epilogue.
- Epilogue inputs that vary along one tile axis only (a bias, a per-row scale) are loaded
  as one row or column, not as a tile of copies.

`heavy_module(spec, tile)` (backends/triton/render.py) is the same kernel as a self-contained
module defining `arguments(*tensors)`, with meta example tensors, for target verification.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from backends.index import Lin, Var
from backends.triton.ops import TritonUnsupportedError
from backends.triton.pointwise import (
    JitEntry,
    Param,
    header,
    index_in,
    launch_args,
    local,
)
from backends.triton.template import (
    GEMM_KERNEL,
    GEMM_REDUCE_KERNEL,
    fill,
    grouped_pids,
    workspace_store_lines,
    workspace_sum_lines,
)
from backends.triton.values import Index, TileValues
from compiler.core.ir import ConstArray, Node
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig
from compiler.core.types import DType

HEAVY_KINDS = ("matmul", "conv2d", "attention")
ANCHOR_OPS = {"matmul": "matmul", "conv2d": "conv2d", "attention": "sdpa"}
TL_DOT = {DType.f64: "fp64", DType.f32: "fp32", DType.f16: "fp16", DType.bf16: "bf16"}
REDUCE_BLOCK = 64  # split-K pass 2 tile (both sides)
REDUCE_OPTIONS = {"num_warps": 4, "num_stages": 1}  # pass 2 has no dot


@dataclass(frozen=True)
class HeavyKernel:
    """A heavy kernel of the program: jit source (header + kernels), host functions, the
    jit functions' entries for target verification, and the constants it reads."""

    name: str
    source: str
    host: str
    entries: tuple[JitEntry, ...]
    constants: tuple[tuple[str, ConstArray], ...] = ()
    checks: tuple[tuple[str, str, str, int, int], ...] = ()  # as `RenderedKernel.checks`


def lin(name: str, extent: int) -> Lin:
    return Var(name, max(extent, 1)).lin


def descendants(spec: KernelSpec, roots: set[str]) -> set[str]:
    out = set(roots)
    for n in spec.body:
        if any(i in out for i in n.inputs):
            out.add(n.out.name)
    return out


def tile_blocks(tile: TileConfig, defaults: dict[str, int]) -> dict[str, int]:
    blocks = dict(defaults)
    blocks.update({k: v for k, v in tile.blocks if k in defaults})
    return blocks


def store_outputs(
    v: TileValues, spec: KernelSpec, outputs: list[str], idx: Index, shape: tuple[int, ...]
) -> None:
    for o in outputs:
        at = index_in(spec.type_of(o).shape, idx, shape, f"output {o} of kernel {spec.name}")
        v.store(v.pointers[f"out:{o}"], at, v.value(o, at))


def owned_outputs(spec: KernelSpec, anchors: list[Node]) -> list[list[str]]:
    """Per anchor, the kernel outputs computed from it (every output from exactly one, or
    from all of them when they share a tile)."""
    owned: list[list[str]] = [[] for _ in anchors]
    reach = [descendants(spec, {a.out.name}) for a in anchors]
    for o in spec.outputs:
        hits = [i for i, r in enumerate(reach) if o in r]
        if not hits:
            raise TritonUnsupportedError(
                f"triton backend: kernel {spec.name}: output {o} does not depend on its "
                f"{anchors[0].op} anchor"
            )
        owned[hits[0]].append(o)
    return owned


# --------------------------------------------------------------------------- GEMMs


@dataclass
class Gemm:
    """One GEMM-shaped heavy kernel being rendered (matmul or conv2d)."""

    spec: KernelSpec
    values: TileValues
    sizes: dict[str, int]  # constexpr sizes (M, N, K, ...)
    batch: int  # program_id(1): the batch (matmul) or the group (conv2d)
    accs: list[str]
    mainloop: list[str]
    epilogue: Callable[[], list[str]]  # statements after the accumulators are complete
    cols: str = "N"  # the name of the N size in `sizes` and the kernel
    bpid: str = "pid_b"  # the name of program_id(1)


def jit_params(params: list[Param], constexprs: list[str]) -> str:
    names = [p.name for p in params] + [f"{c}: tl.constexpr" for c in constexprs]
    return "\n".join(f"    {n}," for n in names)


def render_gemm(
    g: Gemm, tile: TileConfig, params: list[Param], constants: tuple, dtype: DType
) -> HeavyKernel:
    spec, split = g.spec, tile.split_k > 1
    blocks = tile_blocks(tile, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32})
    M, N = g.sizes["M"], g.sizes[g.cols]
    n_tiles = math.ceil(M / blocks["BLOCK_M"]) * math.ceil(N / blocks["BLOCK_N"])
    ws_type = "*fp64" if g.values.compute == "tl.float64" else "*fp32"
    ws = [Param("ws_ptr", "workspace", "ws", signature=ws_type)] if split else []
    meta = {**g.sizes, **blocks, "GROUP_M": max(1, tile.group_m), "SPLIT_K": tile.split_k}
    pids = grouped_pids(split, g.cols, g.bpid)
    tail = workspace_store_lines(g.accs, g.cols, g.bpid) if split else g.epilogue()
    body = {"pids": pids, "mainloop": g.mainloop, "tail": list(tail)}
    uses_bits = any("BF16_BITS" in line for line in g.mainloop + body["tail"])
    names = [*meta, "DOT_F32", *(["BF16_BITS"] if uses_bits else [])]
    body["params"] = [jit_params(params + ws, names)]
    kernels = [fill(GEMM_KERNEL, **body, name=spec.name)]
    grid = (n_tiles, g.batch, tile.split_k) if split else (n_tiles, g.batch)
    dot_f32 = dtype is DType.bf16
    launches = [(spec.name, grid, meta, dot_f32, uses_bits, tile.num_warps, tile.num_stages)]
    if split:
        epilogue = g.epilogue()
        bits = any("BF16_BITS" in line for line in epilogue)
        reduce_meta = {**g.sizes, "BLOCK_M": REDUCE_BLOCK, "BLOCK_N": REDUCE_BLOCK}
        reduce_meta["SPLIT_K"] = tile.split_k
        rnames = [*reduce_meta, *(["BF16_BITS"] if bits else [])]
        rbody = {"params": [jit_params(params + ws, rnames)], "tail": epilogue}
        rbody["sums"] = workspace_sum_lines(g.accs, g.cols, g.bpid)
        reduce = fill(GEMM_REDUCE_KERNEL, **rbody, name=spec.name, cols=g.cols, bpid=g.bpid)
        kernels.append(reduce)
        rgrid = (math.ceil(M / REDUCE_BLOCK) * math.ceil(N / REDUCE_BLOCK), g.batch)
        launches.append((f"{spec.name}_reduce", rgrid, reduce_meta, False, bits, 4, 1))
    workspace = len(g.accs) * tile.split_k * g.batch * M * N if split else 0
    wide = g.values.compute == "tl.float64"
    checks = tuple(g.values.checks)
    return finish(spec, params + ws, constants, kernels, launches, workspace, wide, checks)


# --------------------------------------------------------------------------- host side


def finish(
    spec: KernelSpec, params: list[Param], constants: tuple, kernels: list[str],
    launches: list[tuple], workspace: int, wide: bool,
    checks: tuple[tuple[str, str, str, int, int], ...] = (),
) -> HeavyKernel:  # fmt: skip
    """The HeavyKernel: header + jit sources, `arguments_`/`launch_` host functions, and
    one JitEntry per jit function (compiled-mode constexprs: DOT_F32 and BF16_BITS off).
    `wide`: an f64 program, whose dots, accumulators, softmax statistics and split-K
    partials are fp64 (the templates' fp32 ones widened; an fp64 dot into an fp32
    accumulator is garbage under the interpreter)."""
    name = spec.name
    acc = "torch.float64" if wide else "torch.float32"
    if wide:
        kernels = [k.replace("dtype=tl.float32)", "dtype=tl.float64)") for k in kernels]
    names = [local(i.name) for i in spec.inputs] + [local(o) for o in spec.outputs]
    names += ["status"] if checks else []  # the index checks' words (`RenderedKernel.checks`)
    device = f"{local(spec.outputs[0])}.device"
    args = launch_args(params, constants, device)
    host = [f"def arguments_{name}({', '.join(names)}):"]
    host.append(f'    """The launches of {name}: (kernel, grid, args, constexprs) each."""')
    if workspace:
        host.append(
            f"    ws = torch.empty({workspace}, dtype={acc}, device={device})  # split-K partials"
        )
    host.append("    args = (")
    host += [f"        {a}," for a in args]
    host.append("    )")
    host.append("    return [")
    entries, options = [], []
    for kname, grid, meta, dot_f32, bits, warps, stages in launches:
        kw = [f"{k}={v!r}" for k, v in meta.items()]
        if kname == name:
            kw.append(f"DOT_F32=_interpreted({kname})" if dot_f32 else "DOT_F32=False")
        if bits:
            kw.append(f"BF16_BITS=_interpreted({kname})")
        host.append(f"        ({kname}, {grid}, args, dict({', '.join(kw)})),")
        compiled = dict(meta)
        compiled |= {"DOT_F32": False} if kname == name else {}
        compiled |= {"BF16_BITS": False} if bits else {}
        sig = [(p.name, p.signature) for p in params] + [(c, "constexpr") for c in compiled]
        entries.append(JitEntry(kname, tuple(sig), tuple(compiled.items()), warps, stages))
        options.append(f"dict(num_warps={warps}, num_stages={stages})")
    host.append("    ]")
    host += ["", "", f"def launch_{name}({', '.join(names)}):"]
    host.append(f"    options = ({', '.join(options)},)")
    host.append(f"    launches = arguments_{name}({', '.join(names)})")
    host.append("    for (kernel, grid, args, meta), opts in zip(launches, options, strict=True):")
    host.append("        kernel[grid](*args, **meta, **opts)")
    head = "\n".join(header(spec))
    source = head + "\n" + "\n\n\n".join(kernels)
    return HeavyKernel(name, source, "\n".join(host), tuple(entries), constants, checks)
