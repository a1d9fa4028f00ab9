"""The Triton matmul template: a tutorial-style batched GEMM with prologue and epilogue hooks.

`render_matmul(MatmulKernel(...), tile)` returns a self-contained Python module: the
@triton.jit kernel(s) instantiated from the template below, the TileConfig's constants, and
`arguments(...)` / `launch(...)` host functions. The kernel is Triton tutorial 03 grown the
features tilefuse needs:

- batched (program_id(1) is the batch; a stride-0 batch shares a weight), explicit strides on
  every operand, so a transposed operand is only strides (`w.t()` is a view);
- ragged M/N: row/column indices wrap (`% M`) so every load stays in bounds and the store mask
  drops the wrapped lanes; ragged K: masked loads with zero fill;
- fp32 accumulator; fp32 operands use `input_precision="ieee"` (no silent TF32);
- GROUP_M grouped program order: GROUP_M row blocks in a row sweep the same B panels, which
  stay in L2;
- a dual GEMM (`n_b=2`: GEGLU/SwiGLU gate): two B operands share each A tile, and the epilogue
  sees both accumulators `acc` and `acc2`;
- a prologue on A: statements rewriting the loaded tile `a` ([BLOCK_M, BLOCK_K]) with
  `offs_m`, `k0 + offs_k` and A-shaped prologue inputs (loaded with A's offsets) in scope;
- an epilogue: statements on `acc` (fp32 [BLOCK_M, BLOCK_N]) with `offs_m`, `offs_n` (row
  and column of the [M, N] view of the output), `pid_b` and `mask` in scope; every epilogue
  input `x` is loaded as an fp32 tile named `x` first (a stride-0 row stride makes a bias).

Note [Split-K through an fp32 workspace, not atomics]
With `split_k > 1` program (pid, batch, s) sums the K blocks s, s + SPLIT_K, ... into its own
fp32 slice of a workspace [n_acc, SPLIT_K, batch, M, N], and a second kernel sums the slices,
runs the epilogue and stores. Atomics would save the workspace round trip but (1) make the
result depend on arrival order (not bitwise reproducible run to run), (2) cannot run a
non-linear epilogue (GELU, the dual-GEMM gate) without a second pass anyway, and (3) need a
zeroed fp32 output even for fp16/bf16 models. The workspace traffic is exactly what tiling
prices for split-K (passes/tiling_mma.py `split_k_partial_bytes`).

Note [bf16 dots under the interpreter]
Triton 3.9's interpreter returns garbage from `tl.dot` on bf16 operands. The launcher passes
DOT_F32=True only when the kernel is an InterpretedFunction and the operands are bf16; the
generated branch then upcasts both operands to fp32. Compiled kernels get DOT_F32=False and
the branch is pruned at compile time, so GPUs run the bf16 tensor-core dot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from backends.index import unravel
from backends.index_maps import broadcast
from backends.triton.heavy import (
    TL_DOT,
    Gemm,
    descendants,
    lin,
    owned_outputs,
    store_outputs,
)
from backends.triton.ops import TritonUnsupportedError
from backends.triton.pointwise import Storage
from backends.triton.template import (
    DOT_F32_NOTE,
    GEMM_KERNEL,
    GEMM_REDUCE_KERNEL,
    MODULE_HEAD,
    dot_section,
    fill,
    grouped_pids,
    k_loop_lines,
    params_text,
    tile_header,
    workspace_store_lines,
    workspace_sum_lines,
)
from backends.triton.values import TileValues
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig


@dataclass(frozen=True)
class MatmulKernel:
    """What one matmul kernel computes, beyond the tile: operand dtype, how many B operands
    share A, and the hook statements with the tensors they read (see the module docstring)."""

    name: str = "k_matmul"
    dtype: str = "fp16"  # operand dtype: fp32 | fp16 | bf16
    n_b: int = 1  # 2: dual GEMM, the epilogue sees `acc` (B) and `acc2` (B2)
    prologue: tuple[str, ...] = ()
    prologue_inputs: tuple[str, ...] = ()  # [batch, M, K]-broadcastable tensors
    epilogue: tuple[str, ...] = ()
    epilogue_inputs: tuple[str, ...] = ()  # [batch, M, N]-broadcastable tensors
    split_k: int = 1
    row_vectors: tuple[str, ...] = ()  # epilogue inputs constant over rows (a bias): [1, BN]

    @property
    def accs(self) -> list[str]:
        return ["acc"] + [f"acc{i + 1}" for i in range(1, self.n_b)]

    @property
    def bs(self) -> list[str]:
        return ["b"] + [f"b{i + 1}" for i in range(1, self.n_b)]


def _strides(name: str, dims: str) -> list[str]:
    return [f"stride_{name}_{d}" for d in dims]


def epilogue_lines(k: MatmulKernel, out: str = "out_ptr") -> list[str]:
    """Load the epilogue inputs, run the epilogue on `acc`, store: the shared tail of the
    one-pass kernel and the split-K reduction."""
    lines = ["mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)"]
    for x in k.epilogue_inputs:
        sb, sm, sn = _strides(x, "bmn")
        if x in k.row_vectors:  # one [1, BLOCK_N] row, not a [BLOCK_M, BLOCK_N] tile of copies
            lines.append(
                f"{x} = tl.load({x}_ptr + pid_b * {sb} + offs_n * {sn}, mask=offs_n < N,"
                " other=0.0).to(tl.float32)[None, :]"
            )
            continue
        lines.append(
            f"{x} = tl.load({x}_ptr + pid_b * {sb} + offs_m[:, None] * {sm}"
            f" + offs_n[None, :] * {sn}, mask=mask, other=0.0).to(tl.float32)"
        )
    lines += ["# epilogue", *k.epilogue] if k.epilogue else []
    lines += [
        "out_ptrs = out_ptr + pid_b * stride_ob + offs_m[:, None] * stride_om"
        " + offs_n[None, :] * stride_on",
        f"tl.store(out_ptrs, acc.to({out}.dtype.element_ty), mask=mask)",
    ]
    return lines


def mainloop_lines(k: MatmulKernel, split: bool) -> list[str]:
    """offs_m/offs_n of this program -> the accumulators over its share of K."""
    lines = [
        "offs_k = tl.arange(0, BLOCK_K)",
        "rm = offs_m % M  # wrapped rows/cols stay in bounds; the store mask drops them",
        "rn = offs_n % N",
        "a_ptrs = (a_ptr + pid_b * stride_ab + rm[:, None] * stride_am"
        " + offs_k[None, :] * stride_ak)",
        "b_offs = pid_b * stride_bb + offs_k[:, None] * stride_bk + rn[None, :] * stride_bn",
    ]
    for x in k.prologue_inputs:
        sb, sm, sk = _strides(x, "bmk")
        lines.append(
            f"{x}_ptrs = {x}_ptr + pid_b * {sb} + rm[:, None] * {sm} + offs_k[None, :] * {sk}"
        )
    lines += [f"{a} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)" for a in k.accs]
    lines += k_loop_lines(split)
    body = [
        "a_mask = offs_k[None, :] < K - k0",
        "a = tl.load(a_ptrs + k0 * stride_ak, mask=a_mask, other=0.0)",
    ]
    for x in k.prologue_inputs:
        body.append(f"{x} = tl.load({x}_ptrs + k0 * stride_{x}_k, mask=a_mask, other=0.0)")
    if k.prologue:
        body += ["# prologue", *k.prologue]
        body.append("a = tl.where(a_mask, a, 0.0).to(b_ptr.dtype.element_ty)  # K tail stays 0")
    for b in k.bs:
        body.append(
            f"{b} = tl.load({b}_ptr + b_offs + k0 * stride_bk,"
            " mask=offs_k[:, None] < K - k0, other=0.0)"
        )
    body += dot_section("a", k.bs, k.accs, k.dtype)
    return lines + ["    " + b for b in body]


HOST = """
def arguments(${host_args}):
    \"\"\"The launches of this kernel: (kernel, grid, args, constexprs) per launch. `a` is
    [batch, M, K], `out` [batch, M, N]; B operands, prologue and epilogue inputs broadcast to
    [batch, K, N], [batch, M, K] and [batch, M, N] (a weight shared over the batch, a bias).\"\"\"
    batch, M, N = out.shape
    K = a.shape[-1]
    a = a.expand(batch, M, K)
    $expand
    dot_f32 = ${bf16} and isinstance(${name}, InterpretedFunction)
    tiles = triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N)
    meta = dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
                SPLIT_K=SPLIT_K, DOT_F32=dot_f32)
    $launches


def launch(${host_args}):
    for kernel, grid, args, meta in arguments(${host_call}):
        kernel[grid](*args, **meta, **OPTIONS)
    return out
"""


def _kernel_params(k: MatmulKernel, out: str, split: bool, extra_strides: bool) -> list[str]:
    ptrs = ["a_ptr", *(f"{b}_ptr" for b in k.bs), out]
    ptrs += [f"{x}_ptr" for x in k.prologue_inputs]
    ptrs += [] if split else [f"{x}_ptr" for x in k.epilogue_inputs]
    strides = ["stride_ab, stride_am, stride_ak", "stride_bb, stride_bk, stride_bn"]
    strides += [] if split else ["stride_ob, stride_om, stride_on"]
    strides += [", ".join(_strides(x, "bmk")) for x in k.prologue_inputs]
    if not split and extra_strides:
        strides += [", ".join(_strides(x, "bmn")) for x in k.epilogue_inputs]
    meta = ["BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr"]
    meta.append("GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, DOT_F32: tl.constexpr")
    return [", ".join(ptrs), "M, N, K", *strides, *meta]


def _reduce_params(k: MatmulKernel) -> list[str]:
    ptrs = ["ws_ptr", "out_ptr", *(f"{x}_ptr" for x in k.epilogue_inputs)]
    strides = ["stride_ob, stride_om, stride_on"]
    strides += [", ".join(_strides(x, "bmn")) for x in k.epilogue_inputs]
    meta = "BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT_K: tl.constexpr"
    return [", ".join(ptrs), "M, N", *strides, meta]


def render_kernels(k: MatmulKernel) -> str:
    """The @triton.jit source of `k` (one kernel, or the split-K pair)."""
    split = k.split_k > 1
    parts = []
    if not split:
        params = _kernel_params(k, "out_ptr", False, True)
        tail = epilogue_lines(k)
    else:
        params = _kernel_params(k, "ws_ptr", True, False)
        tail = workspace_store_lines(k.accs)
    blocks = {"params": [params_text(params)], "pids": grouped_pids(split)}
    blocks |= {"mainloop": mainloop_lines(k, split), "tail": tail}
    parts.append(fill(GEMM_KERNEL, **blocks, name=k.name))
    if split:
        blocks = {"params": [params_text(_reduce_params(k))], "sums": workspace_sum_lines(k.accs)}
        blocks["tail"] = epilogue_lines(k)
        parts.append(fill(GEMM_REDUCE_KERNEL, **blocks, name=k.name, cols="N", bpid="pid_b"))
    return "\n\n\n".join(parts)


def render_host(k: MatmulKernel) -> str:
    names = ["a", *k.bs, "out", *k.prologue_inputs, *k.epilogue_inputs]
    expand = [f"{b} = {b}.expand(batch, K, N)" for b in k.bs]
    expand += [f"{x} = {x}.expand(batch, M, K)" for x in k.prologue_inputs]
    expand += [f"{x} = {x}.expand(batch, M, N)" for x in k.epilogue_inputs]
    strides = "*a.stride(), *b.stride()"
    pro = [f"{x}" for x in k.prologue_inputs]
    pro_strides = "".join(f", *{x}.stride()" for x in k.prologue_inputs)
    epi = [f"{x}" for x in k.epilogue_inputs]
    epi_strides = "".join(f", *{x}.stride()" for x in k.epilogue_inputs)
    if k.split_k == 1:
        args = ", ".join(["a", *k.bs, "out", *pro, *epi])
        launches = [
            f"args = ({args}, M, N, K, {strides}, *out.stride(){pro_strides}{epi_strides})",
            f"return [({k.name}, (tiles, batch), args, meta)]",
        ]
    else:
        args = ", ".join(["a", *k.bs, "ws", *pro])
        launches = [
            f"ws = torch.empty(({k.n_b}, SPLIT_K, batch, M, N), dtype=torch.float32,"
            " device=out.device)",
            f"args = ({args}, M, N, K, {strides}{pro_strides})",
            "reduce_args = (ws, out"
            + "".join(f", {x}" for x in epi)
            + f", M, N, *out.stride(){epi_strides})",
            "reduce_meta = dict(BLOCK_M=REDUCE_BLOCK, BLOCK_N=REDUCE_BLOCK, SPLIT_K=SPLIT_K)",
            f"return [({k.name}, (tiles, batch, SPLIT_K), args, meta),",
            f"        ({k.name}_reduce, (triton.cdiv(M, REDUCE_BLOCK) * triton.cdiv(N,"
            " REDUCE_BLOCK), batch), reduce_args, reduce_meta)]",
        ]
    return fill(
        HOST,
        expand=expand,
        launches=launches,
        host_args=", ".join(names),
        host_call=", ".join(names),
        name=k.name,
        bf16=str(k.dtype == "bf16"),
    )


def render_matmul(k: MatmulKernel, tile: TileConfig | None = None, header: str = "") -> str:
    """The self-contained module for `k` at `tile` (its BLOCK_M/N/K, GROUP_M, warps, stages;
    `k.split_k` must match `tile.split_k` when both are given)."""
    if tile is not None and tile.split_k != k.split_k:
        raise ValueError(f"{k.name}: split_k {k.split_k} but the tile says {tile.split_k}")
    defaults = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}
    consts = tile_header(tile, defaults)
    consts.insert(-1, f"GROUP_M = {tile.group_m if tile is not None else 8}")
    consts.insert(-1, f"SPLIT_K = {k.split_k}")
    if k.split_k > 1:
        consts.insert(-1, "REDUCE_BLOCK = 64  # split-K pass 2 tile")
    what = f"{k.name}, {k.dtype} matmul" + (" (dual GEMM)" if k.n_b > 1 else "")
    parts = [fill(MODULE_HEAD, what=what)]
    if header:
        parts.append("\n".join(f"# {line}" for line in header.splitlines()))
    parts += ["\n".join(consts), DOT_F32_NOTE if k.dtype == "bf16" else ""]
    parts += [render_kernels(k), render_host(k)]
    return "\n\n\n".join(p for p in parts if p) + "\n"


# --------------------------------------------------------------------------- in the program

K_A, K_B = frozenset({"ka"}), frozenset({"kb"})  # the K axis of the A and B operand tiles


def instantiate(spec: KernelSpec, tile: TileConfig, storage: Storage, v: TileValues) -> Gemm:
    """This template for a matmul KernelSpec of the program (backends/triton/heavy.py): its
    A and B operand tiles at the kernel body's symbolic indices, the dot(s), and the
    epilogue storing every output computed from the accumulators."""
    mms = [n for n in spec.body if n.op == "matmul"]
    lhs, out = mms[0].inputs[0], mms[0].out.type
    if any(m.inputs[0] != lhs or m.out.type.shape[:-1] != out.shape[:-1] for m in mms):
        raise TritonUnsupportedError(
            f"triton backend: kernel {spec.name}: its GEMMs do not share one A operand"
        )
    reach = [descendants(spec, {m.out.name}) - {m.out.name} for m in mms]
    combined = len(mms) > 1 and any(sum(n.out.name in r for r in reach) > 1 for n in spec.body)
    if combined and any(m.out.type.shape != out.shape for m in mms):
        raise TritonUnsupportedError(
            f"triton backend: kernel {spec.name}: an epilogue combines GEMMs of different N"
        )
    bs, M, K = out.shape[:-2], out.shape[-2], v.types[lhs].shape[-1]
    widths = [m.out.type.shape[-1] for m in mms]
    offsets = [sum(widths[:i]) for i in range(len(mms))]
    N = widths[0] if combined or len(mms) == 1 else sum(widths)
    dtype = storage(out.dtype)
    accs = ["acc"] + ([f"acc{i + 1}" for i in range(1, len(mms))] if combined else [])
    bidx = unravel(lin("pid_b", math.prod(bs)), bs) if bs else ()
    split = tile.split_k > 1
    joint = len(mms) > 1 and not combined
    lines = [
        "offs_k = tl.arange(0, BLOCK_K)",
        "rm = (offs_m % M)[:, None]  # A rows wrapped in bounds; the store mask drops them",
        "rn = (offs_n % N)[None, :]",
    ]
    if joint:
        lines.append(f"# one GEMM over the joint N of {len(mms)} GEMMs reading one A")
    for j, (off, w) in enumerate(zip(offsets, widths, strict=True)):
        if joint:
            lines += [f"seg{j} = (rn >= {off}) & (rn < {off + w})  # columns of {mms[j].out.name}"]
            lines += [f"cn{j} = tl.where(seg{j}, rn - {off}, 0)"]
    lines += [f"{a} = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)" for a in accs]
    lines += k_loop_lines(split)
    v.push()
    v.line("ka = (k0 + offs_k)[None, :]")
    v.line("kb = (k0 + offs_k)[:, None]")
    v.line("a_mask = ka < K")
    v.line("b_mask = kb < K")
    v.mask = "a_mask"
    v.mask_axes = {"a_mask": (K_A,), "b_mask": (K_B,)}
    v.mask_axes |= {f"b_mask & seg{j}": (K_B, frozenset({f"cn{j}"})) for j in range(len(mms))}
    a_idx = broadcast((*bidx, lin("rm", M), lin("ka", K)), v.types[lhs].shape)
    v.line(f"a = {v.operand(lhs, a_idx, dtype, '(BLOCK_M, BLOCK_K)')}")
    bs_names = ["b"] + ([f"b{i + 1}" for i in range(1, len(mms))] if combined else [])
    for j, m in enumerate(mms):
        col = lin(f"cn{j}", widths[j]) if joint else lin("rn", N)
        v.mask = f"b_mask & seg{j}" if joint else "b_mask"
        rhs = m.inputs[1]
        b_idx = broadcast((*bidx, lin("kb", K), col), v.types[rhs].shape)
        tile_b = v.operand(rhs, b_idx, dtype, "(BLOCK_K, BLOCK_N)")
        if joint and j:
            v.line(f"b = tl.where(seg{j}, {tile_b}, b)")
        else:
            v.line(f"{bs_names[j] if combined else 'b'} = {tile_b}")
    body = v.pop() + dot_section("a", bs_names, accs, TL_DOT[dtype])
    mainloop = lines + ["    " + b for b in body]
    owned = owned_outputs(spec, mms)

    def epilogue() -> list[str]:
        v.push()
        v.line("om = offs_m[:, None]")
        v.line("on = offs_n[None, :]")
        v.line("row_mask = om < M")
        v.line("col_mask = on < N")
        v.line("mask = row_mask & col_mask")
        rows, cols = frozenset({"om"}), frozenset({"on"})
        v.mask_axes = {"mask": (rows, cols), "row_mask": (rows,), "col_mask": (cols,)}
        if not joint:  # one GEMM, or the dual GEMM's accumulators on one tile
            idx = (*bidx, lin("om", M), lin("on", N))
            v.anchor_tiles = {m.out.name: (idx, a) for m, a in zip(mms, accs, strict=True)}
            v.mask = "mask"
            v.narrow_masks = [(rows, "row_mask"), (cols, "col_mask")]
            store_outputs(v, spec, [o for outs in owned for o in outs], idx, out.shape)
            return v.pop()
        for j, (m, off, w) in enumerate(zip(mms, offsets, widths, strict=True)):
            v.push()
            v.line(f"on{j} = on - {off}  # the columns of {m.out.name}")
            v.line(f"col_mask{j} = (on >= {off}) & (on < {off + w})")
            v.line(f"mask{j} = row_mask & col_mask{j}")
            idx = (*bidx, lin("om", M), lin(f"on{j}", w))
            v.anchor_tiles = {m.out.name: (idx, "acc")}
            v.mask = f"mask{j}"
            seg = frozenset({f"on{j}"})
            v.mask_axes |= {f"mask{j}": (rows, seg), f"col_mask{j}": (seg,)}
            v.narrow_masks = [(rows, "row_mask"), (seg, f"col_mask{j}")]
            store_outputs(v, spec, owned[j], idx, m.out.type.shape)
            segment = v.pop()
            v.lines.extend(segment)
        return v.pop()

    sizes = {"M": M, "N": N, "K": K}
    batch = max(1, math.prod(bs))
    return Gemm(spec, v, sizes, batch, accs, mainloop, epilogue)
