"""The Triton conv2d template: NCHW convolution as an implicit GEMM with an epilogue.

`render_conv(ConvKernel(...), tile)` returns a self-contained module like the matmul one
(backends/triton/matmul.py, whose conventions it shares). Per group g, the GEMM is

    M = N * Ho * Wo   (rows: output pixels, m -> (n, oh, ow))
    N = Cout / groups (columns: output channels of the group)
    K = Cin / groups * KH * KW   (k -> (c, r, s), the weight's own contiguous order)

and A[m, k] = x[n, c, oh * SH - PH + r * DH, ow * SW - PW + s * DW] is gathered on load, zero
outside the image (that is the padding): no im2col buffer exists. Kernel size, stride,
padding and dilation are constexprs, so 1x1 (k = c), 3x3 stride 1/2 and patchify
(kernel = stride, no padding) are the same template with the index math folded. Bias is
added in fp32 before the epilogue statements; epilogue inputs broadcast to [N, Cout, Ho, Wo]
(a time embedding [N, Cout, 1, 1], a residual) and are loaded as fp32 tiles, and the
epilogue sees `acc`, `offs_m`, `offs_n` (channel within the group), `ch` (channel) and `mask`.
Split-K uses the fp32 workspace and a second pass (Note [Split-K through an fp32 workspace,
not atomics] in backends/triton/matmul.py).

The A gather walks c with stride H*W: fine for correctness and tensor cores, but a
channels-last (NHWC) variant would coalesce better; that is a later optimization.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.triton.heavy import TL_DOT, Gemm, lin, owned_outputs, store_outputs
from backends.triton.pointwise import Storage
from backends.triton.template import (
    DOT_F32_NOTE,
    GEMM_KERNEL,
    GEMM_REDUCE_KERNEL,
    MODULE_HEAD,
    dot_lines,
    dot_section,
    fill,
    grouped_pids,
    k_loop_lines,
    params_text,
    tile_header,
    upcast_lines,
    workspace_store_lines,
    workspace_sum_lines,
)
from backends.triton.values import TileValues
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig

# the GEMM skeleton's N size and program_id(1): output channels of one group, the group
GEMM_COLS, GEMM_BPID = "COUT_G", "pid_g"


@dataclass(frozen=True)
class ConvKernel:
    name: str = "k_conv2d"
    dtype: str = "fp16"
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    bias: bool = True
    epilogue: tuple[str, ...] = ()
    epilogue_inputs: tuple[str, ...] = ()  # [N, Cout, Ho, Wo]-broadcastable tensors
    split_k: int = 1


# output pixel (o_n, o_h, o_w) and channel `ch` of each tile row and column
OUT_PIXEL_LINES = [
    "mask = (offs_m[:, None] < M) & (offs_n[None, :] < COUT_G)",
    "o_n = offs_m // HWo",
    "o_hw = offs_m % HWo",
    "o_h = o_hw // Wo",
    "o_w = o_hw % Wo",
    "ch = pid_g * COUT_G + offs_n",
]
# input pixel origin of each (wrapped) tile row, before the K loop
PIXEL_LINES = [
    "a_n = rm // HWo",
    "a_hw = rm % HWo",
    "ih0 = (a_hw // Wo) * SH - PH",
    "iw0 = (a_hw % Wo) * SW - PW",
]
# in the K loop: k -> (channel c, tap r, s) and the input pixel it reads; zero padding
TAP_LINES = [
    "kk = k0 + offs_k",
    "c = kk // (KH * KW)",
    "r = (kk % (KH * KW)) // KW",
    "s = kk % KW",
    "ih = ih0[:, None] + r[None, :] * DH",
    "iw = iw0[:, None] + s[None, :] * DW",
    "a_mask = (kk[None, :] < K) & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)  # padding",
]


def _epilogue(k: ConvKernel) -> list[str]:
    lines = list(OUT_PIXEL_LINES)
    if k.bias:
        lines.append(
            "acc += tl.load(bias_ptr + ch, mask=offs_n < COUT_G, other=0.0).to(tl.float32)[None, :]"
        )
    for x in k.epilogue_inputs:
        lines.append(
            f"{x} = tl.load({x}_ptr + o_n[:, None] * stride_{x}_n + ch[None, :] * stride_{x}_c"
            f" + o_h[:, None] * stride_{x}_h + o_w[:, None] * stride_{x}_w, mask=mask,"
            " other=0.0).to(tl.float32)"
        )
    lines += ["# epilogue", *k.epilogue] if k.epilogue else []
    lines += [
        "out_ptrs = (out_ptr + o_n[:, None] * stride_on + ch[None, :] * stride_oc"
        " + o_h[:, None] * stride_oh + o_w[:, None] * stride_ow)",
        "tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask)",
    ]
    return lines


def _mainloop(k: ConvKernel, split: bool) -> list[str]:
    loop = "range(pid_k * BLOCK_K, K, BLOCK_K * SPLIT_K)" if split else "range(0, K, BLOCK_K)"
    body = [
        *TAP_LINES,
        "x_offs = x_row[:, None] + c[None, :] * stride_xc + ih * stride_xh + iw * stride_xw",
        "a = tl.load(x_ptr + x_offs, mask=a_mask, other=0.0)",
        "w_offs = (w_col[None, :] + c[:, None] * stride_wc + r[:, None] * stride_wh",
        "          + s[:, None] * stride_ww)",
        "b = tl.load(w_ptr + w_offs, mask=kk[:, None] < K, other=0.0)",
        *upcast_lines(["a", "b"], k.dtype),
        *dot_lines("a", "b", "acc", k.dtype),
    ]
    return [
        "offs_k = tl.arange(0, BLOCK_K)",
        "rm = offs_m % M  # wrapped rows/cols stay in bounds; the store mask drops them",
        "rn = offs_n % COUT_G",
        *PIXEL_LINES,
        "x_row = a_n * stride_xn + pid_g * CIN_G * stride_xc  # int32 offsets, one add per load",
        "w_col = (pid_g * COUT_G + rn) * stride_wo",
        "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
        *(
            ["# split-K: this program sums the K blocks pid_k, pid_k + SPLIT_K, ..."]
            if split
            else []
        ),
        f"for k0 in {loop}:",
        *("    " + b for b in body),
    ]


HOST = """
def arguments(${host_args}):
    \"\"\"The launches: x [N, Cin, H, W], w [Cout, Cin/groups, KH, KW],
    out [N, Cout, Ho, Wo]${doc}.\"\"\"
    n, cin, h, w_ = x.shape
    cout, cin_g = w.shape[0], w.shape[1]
    groups = cin // cin_g
    ho, wo = out.shape[2], out.shape[3]
    M, cout_g, K = n * ho * wo, cout // groups, cin_g * KH * KW
    $expand
    dot_f32 = ${bf16} and isinstance(${name}, InterpretedFunction)
    tiles = triton.cdiv(M, BLOCK_M) * triton.cdiv(cout_g, BLOCK_N)
    meta = dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M,
                SPLIT_K=SPLIT_K, DOT_F32=dot_f32, KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW,
                DH=DH, DW=DW)
    sizes = (M, cout_g, K, cin_g, h, w_, wo, ho * wo)
    $launches


def launch(${host_args}):
    for kernel, grid, args, meta in arguments(${host_args}):
        kernel[grid](*args, **meta, **OPTIONS)
    return out
"""

SIZES = "M, COUT_G, K, CIN_G, H, W, Wo, HWo"
GEOMETRY = (
    "KH: tl.constexpr, KW: tl.constexpr, SH: tl.constexpr, SW: tl.constexpr, "
    "PH: tl.constexpr, PW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr"
)
META = [
    "BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr",
    "GROUP_M: tl.constexpr, SPLIT_K: tl.constexpr, DOT_F32: tl.constexpr",
    GEOMETRY,
]


def _epilogue_params(k: ConvKernel) -> tuple[list[str], list[str]]:
    ptrs = (["bias_ptr"] if k.bias else []) + [f"{x}_ptr" for x in k.epilogue_inputs]
    strides = ["stride_on, stride_oc, stride_oh, stride_ow"]
    strides += [", ".join(f"stride_{x}_{d}" for d in "nchw") for x in k.epilogue_inputs]
    return ptrs, strides


def render_kernels(k: ConvKernel) -> str:
    split = k.split_k > 1
    ptrs, strides = _epilogue_params(k)
    x_w = [
        "stride_xn, stride_xc, stride_xh, stride_xw",
        "stride_wo, stride_wc, stride_wh, stride_ww",
    ]
    pids = grouped_pids(split, GEMM_COLS, GEMM_BPID)
    if split:
        params = [", ".join(["x_ptr", "w_ptr", "ws_ptr"]), SIZES, *x_w, *META]
        tail = workspace_store_lines(["acc"], GEMM_COLS, GEMM_BPID)
    else:
        params = [", ".join(["x_ptr", "w_ptr", "out_ptr", *ptrs]), SIZES, *x_w, *strides, *META]
        tail = _epilogue(k)
    blocks = {"params": [params_text(params)], "pids": pids, "mainloop": _mainloop(k, split)}
    blocks["tail"] = tail
    parts = [fill(GEMM_KERNEL, **blocks, name=k.name)]
    if split:
        rparams = [", ".join(["ws_ptr", "out_ptr", *ptrs]), SIZES, *strides, *META]
        sums = workspace_sum_lines(["acc"], GEMM_COLS, GEMM_BPID)
        blocks = {"params": [params_text(rparams)], "sums": sums, "tail": _epilogue(k)}
        reduce = fill(GEMM_REDUCE_KERNEL, **blocks, name=k.name, cols=GEMM_COLS, bpid=GEMM_BPID)
        parts.append(reduce)
    return "\n\n\n".join(parts)


def render_host(k: ConvKernel) -> str:
    names = ["x", "w", "out"] + (["bias"] if k.bias else []) + list(k.epilogue_inputs)
    expand = [f"{x} = {x}.expand(n, cout, ho, wo)" for x in k.epilogue_inputs]
    extra_ptrs = "".join(f", {x}" for x in names[3:])
    extra_strides = "".join(f", *{x}.stride()" for x in k.epilogue_inputs)
    geometry = "*x.stride(), *w.stride()"
    if k.split_k == 1:
        launches = [
            f"args = (x, w, out{extra_ptrs}, *sizes, {geometry}, *out.stride(){extra_strides})",
            f"return [({k.name}, (tiles, groups), args, meta)]",
        ]
    else:
        launches = [
            "ws = torch.empty((SPLIT_K, groups, M, cout_g), dtype=torch.float32,"
            " device=out.device)",
            f"args = (x, w, ws, *sizes, {geometry})",
            f"reduce_args = (ws, out{extra_ptrs}, *sizes, *out.stride(){extra_strides})",
            "reduce_meta = dict(meta, BLOCK_M=REDUCE_BLOCK, BLOCK_N=REDUCE_BLOCK)",
            "reduce_grid = (triton.cdiv(M, REDUCE_BLOCK) * triton.cdiv(cout_g, REDUCE_BLOCK),"
            " groups)",
            f"return [({k.name}, (tiles, groups, SPLIT_K), args, meta),",
            f"        ({k.name}_reduce, reduce_grid, reduce_args, reduce_meta)]",
        ]
    doc = ", bias [Cout]" if k.bias else ""
    doc += ", epilogue inputs broadcast to [N, Cout, Ho, Wo]" if k.epilogue_inputs else ""
    return fill(
        HOST,
        expand=expand,
        launches=launches,
        host_args=", ".join(names),
        name=k.name,
        doc=doc,
        bf16=str(k.dtype == "bf16"),
    )


def render_conv(k: ConvKernel, tile: TileConfig | None = None, header: str = "") -> str:
    """The module for `k` at `tile` (`k.split_k` must match `tile.split_k`)."""
    if tile is not None and tile.split_k != k.split_k:
        raise ValueError(f"{k.name}: split_k {k.split_k} but the tile says {tile.split_k}")
    consts = tile_header(tile, {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32})
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k.kernel, k.stride, k.padding, k.dilation
    geometry = [
        f"GROUP_M = {tile.group_m if tile is not None else 8}",
        f"SPLIT_K = {k.split_k}",
        *(["REDUCE_BLOCK = 64  # split-K pass 2 tile"] if k.split_k > 1 else []),
        f"KH, KW, SH, SW, PH, PW, DH, DW = {kh}, {kw}, {sh}, {sw}, {ph}, {pw}, {dh}, {dw}",
    ]
    consts[-1:-1] = geometry
    what = f"{k.name}, {k.dtype} conv2d {kh}x{kw} stride {sh}x{sw} as implicit GEMM"
    parts = [fill(MODULE_HEAD, what=what)]
    if header:
        parts.append("\n".join(f"# {line}" for line in header.splitlines()))
    parts += ["\n".join(consts), DOT_F32_NOTE if k.dtype == "bf16" else ""]
    parts += [render_kernels(k), render_host(k)]
    return "\n\n\n".join(p for p in parts if p) + "\n"


# --------------------------------------------------------------------------- in the program

W_TAPS = frozenset({"wc", "wr", "wt"})  # the K axis of a conv weight tile


def instantiate(spec: KernelSpec, tile: TileConfig, storage: Storage, v: TileValues) -> Gemm:
    """This template for a conv2d KernelSpec of the program (backends/triton/heavy.py): the
    implicit GEMM's input and weight tiles at the kernel body's symbolic indices, the dot,
    and the epilogue (bias, then every output computed from the accumulator)."""
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
        *PIXEL_LINES,
        "xn = a_n[:, None]",
        "wo_ = (pid_g * COUT_G + rn)[None, :]",
        "acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)",
        *k_loop_lines(split),
    ]
    v.push()
    for line in TAP_LINES:
        v.line(line)
    v.line("xc = (pid_g * CIN_G + c)[None, :]")
    v.mask = "a_mask"
    taps = frozenset({"ih", "iw"})
    v.mask_axes = {"a_mask": (taps | {"xn"}, taps | {"xc"}), "b_mask": (W_TAPS,)}
    x_idx = (lin("xn", n), lin("xc", cin), lin("ih", h), lin("iw", wd))
    v.line(f"a = {v.operand(x, x_idx, dtype, '(BLOCK_M, BLOCK_K)')}")
    v.line("b_mask = kk[:, None] < K")
    v.line("wc = c[:, None]")
    v.line("wr = r[:, None]")
    v.line("wt = s[:, None]")
    v.mask = "b_mask"
    w_idx = (lin("wo_", cout), lin("wc", cin_g), lin("wr", kh), lin("wt", kw))
    v.line(f"b = {v.operand(w, w_idx, dtype, '(BLOCK_K, BLOCK_N)')}")
    body = v.pop() + dot_section("a", ["b"], ["acc"], TL_DOT[dtype])
    mainloop = lines + ["    " + b for b in body]
    (outputs,) = owned_outputs(spec, [conv])

    def epilogue() -> list[str]:
        v.push()
        for line in OUT_PIXEL_LINES:
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
        idx = (lin("yn", n), lin("yc", cout), lin("yh", ho), lin("yw", wo))
        acc = "acc"
        if len(conv.inputs) == 3:
            bias = v.value(conv.inputs[2], (lin("yc", cout),))
            acc = v.emit(f"acc + {bias}", "acc_bias")
        v.anchor_tiles = {conv.out.name: (idx, acc)}
        store_outputs(v, spec, outputs, idx, conv.out.type.shape)
        return v.pop()

    sizes = {"M": M, "COUT_G": cout_g, "K": K, "CIN_G": cin_g, "H": h, "W": wd, "Wo": wo}
    sizes |= {"HWo": ho * wo, "KH": kh, "KW": kw, "SH": sh, "SW": sw, "PH": ph, "PW": pw}
    sizes |= {"DH": dh, "DW": dw}
    return Gemm(spec, v, sizes, groups, ["acc"], mainloop, epilogue, GEMM_COLS, GEMM_BPID)
