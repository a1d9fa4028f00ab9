"""The Triton flash-attention forward template (Triton tutorial 06 style, one pass).

`render_attention(AttentionKernel(...), tile)` returns a self-contained module: one
@triton.jit kernel, the TileConfig's constants and `arguments(...)` / `launch(...)`.

Program (pid_m, b * H + h) owns BLOCK_M query rows of head h and streams the keys in BLOCK_N
blocks with the online softmax: a running row max `m_i` and sum `l_i`, the accumulator
rescaled by exp2(m_old - m_new) whenever the max grows. Scores are kept in base 2 (scale
folded with log2(e)) so the exponentials are `exp2`.

- Grouped-query heads: key/value head = query head // GROUP (GROUP = Hq / Hkv; 1 is MHA).
- Query and key lengths differ (L, S: cross-attention); causal is top-left aligned like
  torch's `is_causal` (query i sees keys j <= i), and a causal program stops at its last
  visible key block.
- Masks: additive (float, added to the scores) or boolean (True keeps), read through
  [B, H, L, S] strides, so a broadcast mask is stride 0.
- Head dims that are not powers of two (40, 80, 96) are padded to HEAD_DIM = next power of
  two and masked on load, so padded columns add nothing to q.k and are never stored.
- A row whose keys are all masked gives zeros (torch's safe softmax), not NaN.
- fp32 inputs use `input_precision="ieee"` dots; bf16 under the interpreter upcasts (Note
  [bf16 dots under the interpreter] in backends/triton/matmul.py).
- Optional RoPE prologue (`rope=True`): q and k are rotated on load with cos/sin tables
  [positions, D] (rotate-half convention: x * cos + rotate_half(x) * sin), positions being
  the query row and key column indices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backends.index import unravel
from backends.index_maps import broadcast
from backends.triton.heavy import (
    TL_DOT,
    HeavyKernel,
    finish,
    jit_params,
    lin,
    owned_outputs,
    store_outputs,
    tile_blocks,
)
from backends.triton.ops import TritonUnsupportedError
from backends.triton.pointwise import Param, Storage
from backends.triton.template import DOT_F32_NOTE, MODULE_HEAD, fill, params_text, tile_header
from backends.triton.values import TileValues
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig, pow2
from compiler.core.types import DType


@dataclass(frozen=True)
class AttentionKernel:
    name: str = "k_attention"
    dtype: str = "fp16"
    causal: bool = False
    mask: str = ""  # "" | "add" (float scores bias) | "bool" (True keeps)
    rope: bool = False


def _rope_lines(x: str, rows: str, transposed: bool) -> list[str]:
    """Rotate tile `x` (q: [rows, d]; k transposed: [d, rows]) by the cos/sin tables."""
    if transposed:
        idx = f"{rows}[None, :] * stride_cs_m + offs_d[:, None] * stride_cs_d"
        partner = f"{rows}[None, :] * stride_{x}n + partner_d[:, None] * stride_{x}d"
        sign = "sign[:, None]"
    else:
        idx = f"{rows}[:, None] * stride_cs_m + offs_d[None, :] * stride_cs_d"
        partner = f"{rows}[:, None] * stride_{x}m + partner_d[None, :] * stride_{x}d"
        sign = "sign[None, :]"
    return [
        f"# RoPE prologue: {x} * cos + rotate_half({x}) * sin",
        f"{x}_cos = tl.load(cos_ptr + {idx}, mask={x}_mask, other=0.0).to(tl.float32)",
        f"{x}_sin = tl.load(sin_ptr + {idx}, mask={x}_mask, other=0.0).to(tl.float32)",
        f"{x}_half = tl.load({x}_base + {partner}, mask={x}_mask, other=0.0).to(tl.float32)",
        f"{x} = ({x}.to(tl.float32) * {x}_cos + {sign} * {x}_half * {x}_sin)"
        f".to({x}_ptr.dtype.element_ty)",
    ]


KERNEL = """
@triton.jit
def ${name}(
$params
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    kv_h = h // GROUP  # grouped-query heads: GROUP query heads share one key/value head
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)  # padded to a power of two; columns >= D are masked
    d_mask = offs_d < D
    q_mask = (offs_m[:, None] < L) & d_mask[None, :]
    $load_q
    $rope_setup
    $rope_q
    qk_scale = sm_scale * 1.4426950408889634  # scores in base 2: exp(x) = exp2(x * log2(e))
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    $bounds
    for start_n in range(0, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_mask = offs_n < S
        k_mask = d_mask[:, None] & n_mask[None, :]
        $load_k
        $rope_k
        $dot_qk
        qk = qk * qk_scale
        keep = (offs_m[:, None] < L) & n_mask[None, :]
        $masking
        qk = tl.where(keep, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # fully masked rows so far
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        v_mask = n_mask[:, None] & d_mask[None, :]
        $load_v
        $dot_pv
        m_i = m_new
    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]  # all keys masked: 0, not NaN
    $store
"""

# the strided operand loads and output store of the template (the hooks above)
LOAD_Q = [
    "q_base = q_ptr + b * stride_qb + h * stride_qh",
    "k_base = k_ptr + b * stride_kb + kv_h * stride_kh",
    "v_base = v_ptr + b * stride_vb + kv_h * stride_vh",
    "q = tl.load(q_base + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd,",
    "            mask=q_mask, other=0.0)",
]
LOAD_K = [
    "k = tl.load(k_base + offs_n[None, :] * stride_kn + offs_d[:, None] * stride_kd,",
    "            mask=k_mask, other=0.0)  # [HEAD_DIM, BLOCK_N]: k transposed by strides",
]
LOAD_V = [
    "v = tl.load(v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,",
    "            mask=v_mask, other=0.0)",
]
STORE = [
    "out_ptrs = (out_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om",
    "            + offs_d[None, :] * stride_od)",
    "tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=q_mask)",
]

HOST = """
def arguments(${host_args}, scale=None):
    \"\"\"The launches: q [B, H, L, D], k/v [B, Hkv, S, D], out [B, H, L, D]${mask_doc}.\"\"\"
    B, H, L, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    $expand
    sm_scale = scale if scale is not None else D ** -0.5
    dot_f32 = ${bf16} and isinstance(${name}, InterpretedFunction)
    meta = dict(BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, HEAD_DIM=HEAD_DIM, IS_CAUSAL=${causal},
                DOT_F32=dot_f32)
    args = (${ptr_args}, H, H // Hkv, L, S, D, sm_scale, *q.stride(), *k.stride(), *v.stride(),
            *out.stride()${extra_strides})
    return [(${name}, (triton.cdiv(L, BLOCK_M), B * H), args, meta)]


def launch(${host_args}, scale=None):
    for kernel, grid, args, meta in arguments(${host_args}, scale=scale):
        kernel[grid](*args, **meta, **OPTIONS)
    return out
"""


def kernel_blocks(k: AttentionKernel) -> dict[str, list[str]]:
    """The template's blocks for `k`: parameters, operand loads and store (strided), the
    RoPE prologue, the causal bound, the two dots and the masking. A caller with other
    operand loads (backends/triton/heavy.py) replaces some and fills KERNEL itself."""
    ptrs = ["q_ptr", "k_ptr", "v_ptr", "out_ptr"]
    ptrs += ["mask_ptr"] if k.mask else []
    ptrs += ["cos_ptr", "sin_ptr"] if k.rope else []
    params = [", ".join(ptrs), "H, GROUP, L, S, D, sm_scale"]
    params += [", ".join(f"stride_{t}{d}" for d in ("b", "h", r, "d")) for t, r in
               (("q", "m"), ("k", "n"), ("v", "n"), ("o", "m"))]  # fmt: skip
    params += ["stride_mb, stride_mh, stride_mm, stride_mn"] if k.mask else []
    params += ["stride_cs_m, stride_cs_d"] if k.rope else []
    params += ["BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr"]
    params += ["IS_CAUSAL: tl.constexpr, DOT_F32: tl.constexpr"]
    ieee = ', input_precision="ieee"' if k.dtype == "fp32" else ""
    up_qk = up_pv = []
    if k.dtype == "bf16":
        guard = "if DOT_F32:  # interpreter only (Note [bf16 dots under the interpreter])"
        up_qk = [guard, "    q_dot = q.to(tl.float32); k = k.to(tl.float32)"]
        up_pv = [guard, "    p_dot = p; v = v.to(tl.float32)", "else:", "    p_dot = p.to(v.dtype)"]
    dot_qk = [*up_qk, f"qk = tl.dot({'q_dot' if up_qk else 'q'}, k{ieee})"]
    if not up_pv:
        up_pv = ["p_dot = p.to(v.dtype)"]
    dot_pv = [*up_pv, f"acc = tl.dot(p_dot, v, acc{ieee})"]
    if up_qk:  # q_dot defaults to q for the compiled path
        dot_qk.insert(0, "q_dot = q")
    masking = []
    if k.mask:
        ptr = (
            "mask_ptr + b * stride_mb + h * stride_mh + offs_m[:, None] * stride_mm"
            " + offs_n[None, :] * stride_mn"
        )
        load = f"tl.load({ptr}, mask=keep, other=0)"
        if k.mask == "add":
            masking = [f"qk += {load}.to(tl.float32) * 1.4426950408889634  # additive mask"]
        else:
            masking = [f"keep = keep & ({load} != 0)  # boolean mask: True keeps"]
    if k.causal:
        masking.append("keep = keep & (offs_m[:, None] >= offs_n[None, :])  # causal")
        bounds = ["hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)  # causal: later keys unseen"]
    else:
        bounds = ["hi = S"]
    rope_setup = rope_q = rope_k = []
    if k.rope:
        rope_setup = [
            "half = D // 2  # rotate_half pairs column d with d + D/2 (negated) and back",
            "partner_d = tl.where(offs_d < half, offs_d + half, offs_d - half)",
            "sign = tl.where(offs_d < half, -1.0, 1.0)",
        ]
        rope_q = _rope_lines("q", "offs_m", False)
        rope_k = _rope_lines("k", "offs_n", True)
    return {
        "params": [params_text(params)],
        "load_q": LOAD_Q,
        "load_k": LOAD_K,
        "load_v": LOAD_V,
        "store": STORE,
        "rope_setup": rope_setup,
        "rope_q": rope_q,
        "rope_k": rope_k,
        "bounds": bounds,
        "dot_qk": dot_qk,
        "masking": masking,
        "dot_pv": dot_pv,
    }


def render_kernel(k: AttentionKernel) -> str:
    return fill(KERNEL, **kernel_blocks(k), name=k.name)


def render_host(k: AttentionKernel) -> str:
    names = (
        ["q", "k", "v", "out"] + (["mask"] if k.mask else []) + (["cos", "sin"] if k.rope else [])
    )
    expand = ["mask = mask.expand(B, H, L, S)"] if k.mask else []
    extra = ", *mask.stride()" if k.mask else ""
    extra += ", *cos.stride()" if k.rope else ""
    if k.rope:
        expand.append("assert cos.stride() == sin.stride(), 'cos and sin share strides'")
    doc = ", mask broadcast to [B, H, L, S]" if k.mask else ""
    doc += ", cos/sin [positions, D]" if k.rope else ""
    return fill(
        HOST,
        expand=expand,
        host_args=", ".join(names),
        ptr_args=", ".join(names),
        extra_strides=extra,
        mask_doc=doc,
        name=k.name,
        causal=str(k.causal),
        bf16=str(k.dtype == "bf16"),
    )


def render_attention(
    k: AttentionKernel, tile: TileConfig | None = None, head_dim: int = 64, header: str = ""
) -> str:
    """The module for `k` at `tile` (BLOCK_M, BLOCK_N, HEAD_DIM = padded head dim)."""
    pad = 1 << max(4, (head_dim - 1).bit_length())
    consts = tile_header(tile, {"BLOCK_M": 64, "BLOCK_N": 32, "HEAD_DIM": pad})
    if tile is not None and dict(tile.blocks).get("HEAD_DIM", pad) < head_dim:
        raise ValueError(f"{k.name}: tile HEAD_DIM {tile.block('HEAD_DIM')} < head dim {head_dim}")
    what = f"{k.name}, {k.dtype} flash attention" + (", causal" if k.causal else "")
    parts = [fill(MODULE_HEAD, what=what)]
    if header:
        parts.append("\n".join(f"# {line}" for line in header.splitlines()))
    parts += ["\n".join(consts), DOT_F32_NOTE if k.dtype == "bf16" else ""]
    parts += [render_kernel(k), render_host(k)]
    return "\n\n\n".join(p for p in parts if p) + "\n"


# --------------------------------------------------------------------------- in the program


def instantiate(
    spec: KernelSpec, tile: TileConfig, params: list[Param], constants: tuple, v: TileValues,
    storage: Storage,
) -> HeavyKernel:  # fmt: skip
    """This template for an attention KernelSpec of the program (backends/triton/heavy.py):
    Q, K and V tiles (and the mask) at the kernel body's symbolic indices in the template's
    hooks, the epilogue storing every output computed from the accumulator."""
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
    kernel = AttentionKernel(spec.name, TL_DOT[dtype], causal)
    blocks = kernel_blocks(kernel)
    bidx = unravel(lin("b", B), bs) if bs else ()
    h, kvh = lin("h", H), lin("kv_h", Hkv)
    qm, kn = lin("qm", L), lin("kn", S)
    v.push()
    v.line("qm = offs_m[:, None]")
    v.line("qd = offs_d[None, :]")
    v.mask = "q_mask"
    q_rows, k_cols = frozenset({"qm"}), frozenset({"kn"})
    v.mask_axes = {"q_mask": (q_rows, frozenset({"qd"})), "keep": (q_rows, k_cols)}
    v.mask_axes |= {"k_mask": (frozenset({"kd"}), k_cols)}
    v.mask_axes |= {"v_mask": (frozenset({"vn"}), frozenset({"vd"}))}
    q_idx = broadcast((*bidx, h, qm, lin("qd", D)), qt.shape)
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
        idx = broadcast((*bidx, kvh, kn, lin("kd", D)), kt.shape)
        v.line(f"k = {v.operand(k, idx, dtype, '(HEAD_DIM, BLOCK_N)')}  # k transposed")

    def load_v() -> None:
        v.mask = "v_mask"
        idx = broadcast((*bidx, kvh, lin("vn", S), lin("vd", D)), vt.shape)
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
    idx = (*bidx, h, qm, lin("qd", D))
    v.anchor_tiles = {a.out.name: (idx, "acc")}
    (outputs,) = owned_outputs(spec, [a])
    store_outputs(v, spec, outputs, idx, a.out.type.shape)
    blocks["store"] = v.pop()
    for hook in ("rope_setup", "rope_q", "rope_k"):
        blocks[hook] = []
    head = max(dict(tile.blocks).get("HEAD_DIM", 0), pow2(max(D, 16)))
    tiles = tile_blocks(tile, {"BLOCK_M": 64, "BLOCK_N": 32})
    scale = a.attr("scale")
    meta: dict[str, Any] = {"H": H, "GROUP": H // Hkv, "L": L, "S": S, "D": D}
    meta["sm_scale"] = float(scale) if scale is not None else D**-0.5
    meta |= {**tiles, "HEAD_DIM": head, "IS_CAUSAL": causal}
    lines = [line for b in blocks.values() for line in b]
    bits = any("BF16_BITS" in line for line in lines)
    names = [*meta, "DOT_F32", *(["BF16_BITS"] if bits else [])]
    blocks["params"] = [jit_params(params, names)]
    source = fill(KERNEL, **blocks, name=spec.name)
    grid = (math.ceil(L / tiles["BLOCK_M"]), B * H)
    launch = (spec.name, grid, meta, dtype is DType.bf16, bits, tile.num_warps, tile.num_stages)
    wide = v.compute == "tl.float64"
    return finish(spec, params, constants, [source], [launch], 0, wide)
