"""Matmul, conv2d and attention KernelSpecs as kernels of the Triton program.

`render_heavy(spec, tile, strided, storage, compute)` instantiates the hand-written templates
(backends/triton/matmul.py, conv.py, attention.py: their skeletons, grouped
program ids, K loop, dots, split-K workspace passes and online softmax) for one KernelSpec
and returns a `HeavyKernel`: the @triton.jit function(s) under the kernel's IR as a header
comment, and the host functions the program calls:

    def arguments_k3_fused_matmul_add(a_t18, a_w, a_b, a_t4, a_t24):
        ...  # [(kernel, grid, args, constexprs), ...]: one launch, or split-K's two
    def launch_k3_fused_matmul_add(a_t18, a_w, a_b, a_t4, a_t24):
        for (kernel, grid, args, meta), options in zip(arguments_k3_...(...), (...)):
            kernel[grid](*args, **meta, **options)

What the templates take as strides and hook statements comes from the kernel body here:
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

`heavy_module(spec, tile)` is the same kernel as a self-contained module defining
`arguments(*tensors)`, with meta example tensors, for target verification.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.index import Lin, Var, unravel
from backends.index_maps import broadcast
from backends.triton import attention as attention_template
from backends.triton import conv as conv_template
from backends.triton import matmul as matmul_template
from backends.triton.ops import HELPERS, TORCH_DTYPES, TritonUnsupportedError
from backends.triton.pointwise import (
    JitEntry,
    Param,
    Storage,
    frame,
    header,
    index_in,
    launch_args,
    local,
)
from backends.triton.template import fill
from backends.triton.values import Index, TileValues
from compiler.core.ir import ConstArray, Node
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig, pow2
from compiler.core.types import DType

HEAVY_KINDS = ("matmul", "conv2d", "attention")
ANCHOR_OPS = {"matmul": "matmul", "conv2d": "conv2d", "attention": "sdpa"}
TL_DOT = {DType.f64: "fp64", DType.f32: "fp32", DType.f16: "fp16", DType.bf16: "bf16"}
REDUCE_BLOCK = 64  # split-K pass 2 tile (both sides)
REDUCE_OPTIONS = {"num_warps": 4, "num_stages": 1}  # pass 2 has no dot
K_A, K_B = frozenset({"ka"}), frozenset({"kb"})  # the K axis of the A and B operand tiles
W_TAPS = frozenset({"wc", "wr", "wt"})  # the K axis of a conv weight tile


@dataclass(frozen=True)
class HeavyKernel:
    """A heavy kernel of the program: jit source (header + kernels), host functions, the
    jit functions' entries for target verification, and the constants it reads."""

    name: str
    source: str
    host: str
    entries: tuple[JitEntry, ...]
    constants: tuple[tuple[str, ConstArray], ...] = ()


def _lin(name: str, extent: int) -> Lin:
    return Var(name, max(extent, 1)).lin


def _descendants(spec: KernelSpec, roots: set[str]) -> set[str]:
    out = set(roots)
    for n in spec.body:
        if any(i in out for i in n.inputs):
            out.add(n.out.name)
    return out


def _blocks(tile: TileConfig, defaults: dict[str, int]) -> dict[str, int]:
    blocks = dict(defaults)
    blocks.update({k: v for k, v in tile.blocks if k in defaults})
    return blocks


def _store_outputs(
    v: TileValues, spec: KernelSpec, outputs: list[str], idx: Index, shape: tuple[int, ...]
) -> None:
    for o in outputs:
        at = index_in(spec.type_of(o).shape, idx, shape, f"output {o} of kernel {spec.name}")
        v.store(v.pointers[f"out:{o}"], at, v.value(o, at))


def _owned_outputs(spec: KernelSpec, anchors: list[Node]) -> list[list[str]]:
    """Per anchor, the kernel outputs computed from it (every output from exactly one, or
    from all of them when they share a tile)."""
    owned: list[list[str]] = [[] for _ in anchors]
    reach = [_descendants(spec, {a.out.name}) for a in anchors]
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


def _params_text(params: list[Param], constexprs: list[str]) -> str:
    names = [p.name for p in params] + [f"{c}: tl.constexpr" for c in constexprs]
    return "\n".join(f"    {n}," for n in names)


def _matmul(spec: KernelSpec, tile: TileConfig, storage: Storage, v: TileValues) -> Gemm:
    mms = [n for n in spec.body if n.op == "matmul"]
    lhs, out = mms[0].inputs[0], mms[0].out.type
    if any(m.inputs[0] != lhs or m.out.type.shape[:-1] != out.shape[:-1] for m in mms):
        raise TritonUnsupportedError(
            f"triton backend: kernel {spec.name}: its GEMMs do not share one A operand"
        )
    reach = [_descendants(spec, {m.out.name}) - {m.out.name} for m in mms]
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
    bidx = unravel(_lin("pid_b", math.prod(bs)), bs) if bs else ()
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
    lines += matmul_template.k_loop_lines(split)
    v.push()
    v.line("ka = (k0 + offs_k)[None, :]")
    v.line("kb = (k0 + offs_k)[:, None]")
    v.line("a_mask = ka < K")
    v.line("b_mask = kb < K")
    v.mask = "a_mask"
    v.mask_axes = {"a_mask": (K_A,), "b_mask": (K_B,)}
    v.mask_axes |= {f"b_mask & seg{j}": (K_B, frozenset({f"cn{j}"})) for j in range(len(mms))}
    a_idx = broadcast((*bidx, _lin("rm", M), _lin("ka", K)), v.types[lhs].shape)
    v.line(f"a = {v.operand(lhs, a_idx, dtype, '(BLOCK_M, BLOCK_K)')}")
    bs_names = ["b"] + ([f"b{i + 1}" for i in range(1, len(mms))] if combined else [])
    for j, m in enumerate(mms):
        col = _lin(f"cn{j}", widths[j]) if joint else _lin("rn", N)
        v.mask = f"b_mask & seg{j}" if joint else "b_mask"
        rhs = m.inputs[1]
        b_idx = broadcast((*bidx, _lin("kb", K), col), v.types[rhs].shape)
        tile_b = v.operand(rhs, b_idx, dtype, "(BLOCK_K, BLOCK_N)")
        if joint and j:
            v.line(f"b = tl.where(seg{j}, {tile_b}, b)")
        else:
            v.line(f"{bs_names[j] if combined else 'b'} = {tile_b}")
    body = v.pop() + matmul_template.dot_section("a", bs_names, accs, TL_DOT[dtype])
    mainloop = lines + ["    " + b for b in body]
    owned = _owned_outputs(spec, mms)

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
            idx = (*bidx, _lin("om", M), _lin("on", N))
            v.anchor_tiles = {m.out.name: (idx, a) for m, a in zip(mms, accs, strict=True)}
            v.mask = "mask"
            v.narrow_masks = [(rows, "row_mask"), (cols, "col_mask")]
            _store_outputs(v, spec, [o for outs in owned for o in outs], idx, out.shape)
            return v.pop()
        for j, (m, off, w) in enumerate(zip(mms, offsets, widths, strict=True)):
            v.push()
            v.line(f"on{j} = on - {off}  # the columns of {m.out.name}")
            v.line(f"col_mask{j} = (on >= {off}) & (on < {off + w})")
            v.line(f"mask{j} = row_mask & col_mask{j}")
            idx = (*bidx, _lin("om", M), _lin(f"on{j}", w))
            v.anchor_tiles = {m.out.name: (idx, "acc")}
            v.mask = f"mask{j}"
            seg = frozenset({f"on{j}"})
            v.mask_axes |= {f"mask{j}": (rows, seg), f"col_mask{j}": (seg,)}
            v.narrow_masks = [(rows, "row_mask"), (seg, f"col_mask{j}")]
            _store_outputs(v, spec, owned[j], idx, m.out.type.shape)
            segment = v.pop()
            v.lines.extend(segment)
        return v.pop()

    sizes = {"M": M, "N": N, "K": K}
    batch = max(1, math.prod(bs))
    return Gemm(spec, v, sizes, batch, accs, mainloop, epilogue)


def _conv(spec: KernelSpec, tile: TileConfig, storage: Storage, v: TileValues) -> Gemm:
    conv = next(n for n in spec.body if n.op == "conv2d")
    x, w = conv.inputs[0], conv.inputs[1]
    n, cin, h, wd = v.types[x].shape
    cout, cin_g, kh, kw = v.types[w].shape
    _, _, ho, wo = conv.out.type.shape
    groups = conv.attr("groups") or 1
    (sh, sw), (ph, pw), (dh, dw) = conv.attr("stride"), conv.attr("padding"), conv.attr("dilation")
    M, cout_g, K = n * ho * wo, cout // groups, cin_g * kh * kw
    dtype = storage(conv.out.type.dtype)
    split = tile.split_k > 1
    lines = [
        "offs_k = tl.arange(0, BLOCK_K)",
        "rm = offs_m % M  # wrapped rows/cols stay in bounds; the store mask drops them",
        "rn = offs_n % COUT_G",
        *conv_template.PIXEL_LINES,
        "xn = a_n[:, None]",
        "wo_ = (pid_g * COUT_G + rn)[None, :]",
        "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
        *matmul_template.k_loop_lines(split),
    ]
    v.push()
    for line in conv_template.TAP_LINES:
        v.line(line)
    v.line("xc = (pid_g * CIN_G + c)[None, :]")
    v.mask = "a_mask"
    taps = frozenset({"ih", "iw"})
    v.mask_axes = {"a_mask": (taps | {"xn"}, taps | {"xc"}), "b_mask": (W_TAPS,)}
    x_idx = (_lin("xn", n), _lin("xc", cin), _lin("ih", h), _lin("iw", wd))
    v.line(f"a = {v.operand(x, x_idx, dtype, '(BLOCK_M, BLOCK_K)')}")
    v.line("b_mask = kk[:, None] < K")
    v.line("wc = c[:, None]")
    v.line("wr = r[:, None]")
    v.line("wt = s[:, None]")
    v.mask = "b_mask"
    w_idx = (_lin("wo_", cout), _lin("wc", cin_g), _lin("wr", kh), _lin("wt", kw))
    v.line(f"b = {v.operand(w, w_idx, dtype, '(BLOCK_K, BLOCK_N)')}")
    body = v.pop() + matmul_template.dot_section("a", ["b"], ["acc"], TL_DOT[dtype])
    mainloop = lines + ["    " + b for b in body]
    (outputs,) = _owned_outputs(spec, [conv])

    def epilogue() -> list[str]:
        v.push()
        for line in conv_template.OUT_PIXEL_LINES:
            v.line(line)
        v.line("row_mask = offs_m[:, None] < M")
        v.line("col_mask = offs_n[None, :] < COUT_G")
        v.line("yn = o_n[:, None]")
        v.line("yc = ch[None, :]")
        v.line("yh = o_h[:, None]")
        v.line("yw = o_w[:, None]")
        v.mask = "mask"
        rows, cols = frozenset({"yn", "yh", "yw"}), frozenset({"yc"})
        v.mask_axes = {"mask": (rows, cols), "row_mask": (rows,), "col_mask": (cols,)}
        v.narrow_masks = [(rows, "row_mask"), (cols, "col_mask")]
        idx = (_lin("yn", n), _lin("yc", cout), _lin("yh", ho), _lin("yw", wo))
        acc = "acc"
        if len(conv.inputs) == 3:
            bias = v.value(conv.inputs[2], (_lin("yc", cout),))
            acc = v.emit(f"acc + {bias}", "acc_bias")
        v.anchor_tiles = {conv.out.name: (idx, acc)}
        _store_outputs(v, spec, outputs, idx, conv.out.type.shape)
        return v.pop()

    sizes = {"M": M, "COUT_G": cout_g, "K": K, "CIN_G": cin_g, "H": h, "W": wd, "Wo": wo}
    sizes |= {"HWo": ho * wo, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "PH": ph, "PW": pw}
    sizes |= {"DH": dh, "DW": dw}
    return Gemm(spec, v, sizes, groups, ["acc"], mainloop, epilogue)


def _render_gemm(
    g: Gemm, tile: TileConfig, params: list[Param], constants: tuple, dtype: DType
) -> HeavyKernel:
    spec, split, conv = g.spec, tile.split_k > 1, g.spec.kind == "conv2d"
    template = conv_template if conv else matmul_template
    blocks = _blocks(tile, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32})
    M, N = g.sizes["M"], g.sizes["COUT_G" if conv else "N"]
    n_tiles = math.ceil(M / blocks["BLOCK_M"]) * math.ceil(N / blocks["BLOCK_N"])
    ws_type = "*fp64" if g.values.compute == "tl.float64" else "*fp32"
    ws = [Param("ws_ptr", "workspace", "ws", signature=ws_type)] if split else []
    meta = {**g.sizes, **blocks, "GROUP_M": max(1, tile.group_m), "SPLIT_K": tile.split_k}
    pids = conv_template.conv_pids(split) if conv else _matmul_pids(split)
    tail = (
        (conv_template.SPLIT_TAIL if conv else matmul_template.workspace_store_lines(g.accs))
        if split
        else g.epilogue()
    )
    body = {"pids": pids, "mainloop": g.mainloop, "tail": list(tail)}
    uses_bits = any("BF16_BITS" in line for line in g.mainloop + body["tail"])
    names = [*meta, "DOT_F32", *(["BF16_BITS"] if uses_bits else [])]
    body["params"] = [_params_text(params + ws, names)]
    kernels = [fill(template.KERNEL, **body, name=spec.name)]
    grid = (n_tiles, g.batch, tile.split_k) if split else (n_tiles, g.batch)
    dot_f32 = dtype is DType.bf16
    launches = [(spec.name, grid, meta, dot_f32, uses_bits, tile.num_warps, tile.num_stages)]
    if split:
        epilogue = g.epilogue()
        bits = any("BF16_BITS" in line for line in epilogue)
        reduce_meta = {**g.sizes, "BLOCK_M": REDUCE_BLOCK, "BLOCK_N": REDUCE_BLOCK}
        reduce_meta["SPLIT_K"] = tile.split_k
        rnames = [*reduce_meta, *(["BF16_BITS"] if bits else [])]
        rbody = {"params": [_params_text(params + ws, rnames)], "tail": epilogue}
        if not conv:  # (the conv pass 2 sums its one accumulator itself)
            rbody["sums"] = matmul_template.workspace_sum_lines(g.accs)
        kernels.append(fill(template.REDUCE_KERNEL, **rbody, name=spec.name))
        rgrid = (math.ceil(M / REDUCE_BLOCK) * math.ceil(N / REDUCE_BLOCK), g.batch)
        launches.append((f"{spec.name}_reduce", rgrid, reduce_meta, False, bits, 4, 1))
    workspace = len(g.accs) * tile.split_k * g.batch * M * N if split else 0
    wide = g.values.compute == "tl.float64"
    return _finish(spec, params + ws, constants, kernels, launches, workspace, wide)


def _matmul_pids(split: bool) -> list[str]:
    pids = textwrap.dedent(matmul_template.GROUPED_PIDS).strip().splitlines()
    if split:
        pids.insert(2, "pid_k = tl.program_id(2)")
    return pids


# --------------------------------------------------------------------------- attention


def _attention(
    spec: KernelSpec, tile: TileConfig, params: list[Param], constants: tuple, v: TileValues,
    storage: Storage,
) -> HeavyKernel:  # fmt: skip
    a = next(n for n in spec.body if n.op == "sdpa")
    q, k, val = a.inputs[:3]
    qt, kt, vt = (v.types[i] for i in (q, k, val))
    H, L, D = qt.shape[-3:]
    Hkv, S = kt.shape[-3], kt.shape[-2]
    if vt.shape[-1] != D:
        raise TritonUnsupportedError(
            f"triton backend: kernel {spec.name}: value head dim {vt.shape[-1]} != {D}"
        )
    bs = a.out.type.shape[:-3]
    B = max(1, math.prod(bs))
    dtype = storage(a.out.type.dtype)
    mask = ""
    if len(a.inputs) == 4:
        mask = "bool" if v.types[a.inputs[3]].dtype is DType.bool else "add"
    causal = bool(a.attr("is_causal"))
    kernel = attention_template.AttentionKernel(spec.name, TL_DOT[dtype], causal)
    blocks = attention_template.kernel_blocks(kernel)
    bidx = unravel(_lin("b", B), bs) if bs else ()
    h, kvh = _lin("h", H), _lin("kv_h", Hkv)
    qm, kn = _lin("qm", L), _lin("kn", S)
    v.push()
    v.line("qm = offs_m[:, None]")
    v.line("qd = offs_d[None, :]")
    v.mask = "q_mask"
    q_rows, k_cols = frozenset({"qm"}), frozenset({"kn"})
    v.mask_axes = {"q_mask": (q_rows, frozenset({"qd"})), "keep": (q_rows, k_cols)}
    v.mask_axes |= {"k_mask": (frozenset({"kd"}), k_cols)}
    v.mask_axes |= {"v_mask": (frozenset({"vn"}), frozenset({"vd"}))}
    q_idx = broadcast((*bidx, h, qm, _lin("qd", D)), qt.shape)
    v.line(f"q = {v.operand(q, q_idx, dtype, '(BLOCK_M, HEAD_DIM)')}")
    load_q = list(v.lines)
    v.lines.clear()

    def block(first: list[str], emit: Callable[[], None]) -> list[str]:
        v.push()
        for line in first:
            v.line(line)
        emit()
        return v.pop()

    def load_k() -> None:
        v.mask = "k_mask"
        idx = broadcast((*bidx, kvh, kn, _lin("kd", D)), kt.shape)
        v.line(f"k = {v.operand(k, idx, dtype, '(HEAD_DIM, BLOCK_N)')}  # k transposed")

    def load_v() -> None:
        v.mask = "v_mask"
        idx = broadcast((*bidx, kvh, _lin("vn", S), _lin("vd", D)), vt.shape)
        v.line(f"v = {v.operand(val, idx, dtype, '(BLOCK_N, HEAD_DIM)')}")

    def masking() -> None:
        if not mask:
            return
        v.mask = "keep"
        mt = v.types[a.inputs[3]]
        m = v.value(a.inputs[3], broadcast((*bidx, h, qm, kn), mt.shape))
        if mask == "add":
            v.line(f"qk += tl.where(keep, {m}, 0.0) * 1.4426950408889634  # additive mask")
        else:
            v.line(f"keep = keep & ({m} != 0)  # boolean mask: True keeps")

    blocks["load_q"] = load_q
    blocks["load_k"] = block(["kn = offs_n[None, :]", "kd = offs_d[:, None]"], load_k)
    blocks["load_v"] = block(["vn = offs_n[:, None]", "vd = offs_d[None, :]"], load_v)
    blocks["masking"] = block([], masking) + blocks["masking"]
    v.mask = "q_mask"
    idx = (*bidx, h, qm, _lin("qd", D))
    v.anchor_tiles = {a.out.name: (idx, "acc")}
    (outputs,) = _owned_outputs(spec, [a])
    _store_outputs(v, spec, outputs, idx, a.out.type.shape)
    blocks["store"] = v.pop()
    for hook in ("rope_setup", "rope_q", "rope_k"):
        blocks[hook] = []
    head = max(dict(tile.blocks).get("HEAD_DIM", 0), pow2(max(D, 16)))
    tiles = _blocks(tile, {"BLOCK_M": 64, "BLOCK_N": 32})
    scale = a.attr("scale")
    meta: dict[str, Any] = {"H": H, "GROUP": H // Hkv, "L": L, "S": S, "D": D}
    meta["sm_scale"] = float(scale) if scale is not None else D**-0.5
    meta |= {**tiles, "HEAD_DIM": head, "IS_CAUSAL": causal}
    lines = [line for b in blocks.values() for line in b]
    bits = any("BF16_BITS" in line for line in lines)
    names = [*meta, "DOT_F32", *(["BF16_BITS"] if bits else [])]
    blocks["params"] = [_params_text(params, names)]
    source = fill(attention_template.KERNEL, **blocks, name=spec.name)
    grid = (math.ceil(L / tiles["BLOCK_M"]), B * H)
    launch = (spec.name, grid, meta, dtype is DType.bf16, bits, tile.num_warps, tile.num_stages)
    wide = v.compute == "tl.float64"
    return _finish(spec, params, constants, [source], [launch], 0, wide)


# --------------------------------------------------------------------------- host side


def _finish(
    spec: KernelSpec, params: list[Param], constants: tuple, kernels: list[str],
    launches: list[tuple], workspace: int, wide: bool,
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
    return HeavyKernel(name, source, "\n".join(host), tuple(entries), constants)


def render_heavy(
    spec: KernelSpec, tile: TileConfig, strided: frozenset[str], storage: Storage, compute: str
) -> HeavyKernel:
    """The Triton kernel(s) and host functions of a matmul, conv2d or attention `spec` at
    `tile` (see the module docstring). Inputs in `strided` are read through runtime strides."""
    if spec.kind not in HEAVY_KINDS:
        raise ValueError(f"{spec.name} is a {spec.kind} kernel, not a heavy one")
    params, pointers, constants = frame(spec, strided, storage)
    v = TileValues(spec, pointers, compute)
    anchor = next(n for n in spec.body if n.op == ANCHOR_OPS[spec.kind])
    if spec.kind == "attention":
        return _attention(spec, tile, params, constants, v, storage)
    g = _conv(spec, tile, storage, v) if spec.kind == "conv2d" else _matmul(spec, tile, storage, v)
    return _render_gemm(g, tile, params, constants, storage(anchor.out.type.dtype))


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
    strides for graph inputs only). Tensors: the inputs, then the outputs, contiguous."""
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
    passes = "split-K pass 1 and 2" if tile.split_k > 1 else "one pass"
    return source, tuple(tensors), f"{len(k.entries)} jit function(s): {passes}"
