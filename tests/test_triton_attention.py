"""The Triton flash-attention template under TRITON_INTERPRET=1 against torch's SDPA (float64
reference; the parity rule against eager at the same dtype), and attention
KernelSpecs through the program against the numpy backend and eager.
Repro: pytest tests/test_triton_attention.py"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backends.triton.attention import AttentionKernel, render_attention
from backends.triton.targets import load_module
from compiler.core.tile_config import TileConfig
from tests.test_triton_matmul import DTYPES, _rand, assert_parity, check_program

# (causal, mask, head dim, L, S, Hq, Hkv)
CASES = {
    "causal-hd64": (True, "", 64, 37, 37, 2, 2),
    "additive-hd40-cross": (False, "add", 40, 20, 45, 2, 2),
    "bool-causal-hd80-gqa": (True, "bool", 80, 33, 50, 4, 1),
    "gqa-hd96": (False, "", 96, 17, 23, 4, 2),
    "cross-hd128-short-keys": (False, "", 128, 24, 5, 2, 2),
}


def tile(head_dim: int, bm: int = 16, bn: int = 16) -> TileConfig:
    pad = 1 << max(4, (head_dim - 1).bit_length())
    return TileConfig((("BLOCK_M", bm), ("BLOCK_N", bn), ("HEAD_DIM", pad)), num_warps=4)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return torch.cat([-x[..., d:], x[..., :d]], -1)


# every case in fp16; fp32 and bf16 on the first three (interpreter time)
PAIRS = [(c, "fp16") for c in CASES] + [(c, d) for c in list(CASES)[:3] for d in ("fp32", "bf16")]


@pytest.mark.parametrize(("case", "dtype"), PAIRS, ids=[f"{c}-{d}" for c, d in PAIRS])
def test_flash_attention(case: str, dtype: str) -> None:
    causal, mask, D, L, S, H, Hkv = CASES[case]
    g = torch.Generator().manual_seed(0)
    dt = DTYPES[dtype]
    q = torch.randn(2, H, L, D, generator=g).to(dt)
    k = torch.randn(2, Hkv, S, D, generator=g).to(dt)
    v = torch.randn(2, Hkv, S, D, generator=g).to(dt)
    m = None
    if mask == "add":
        m = torch.randn(1, 1, L, S, generator=g).to(dt)  # broadcast over batch and heads
    elif mask == "bool":
        m = torch.rand(2, 1, L, S, generator=g) > 0.3
        m[0, 0, 3] = False  # a row with every key masked gives zeros (safe softmax)
    out = torch.empty_like(q)
    kernel = AttentionKernel(dtype=dtype, causal=causal, mask=mask)
    module = load_module(render_attention(kernel, tile(D), D), interpret=True)
    module.launch(q, k, v, out, *([m] if m is not None else []))
    gqa = Hkv != H

    def ref_mask(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None or x.dtype == torch.bool else x.double()

    ref = F.scaled_dot_product_attention(
        q.double(), k.double(), v.double(), attn_mask=ref_mask(m) if mask != "bool" else m,
        is_causal=causal, enable_gqa=gqa,
    )  # fmt: skip
    eager = F.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal, enable_gqa=gqa)
    if mask == "bool":  # torch gives NaN for the fully masked row; the IR's sdpa gives 0
        row = ref[0, :, 3].clone()
        assert torch.isnan(row).all() or (row == 0).all()
        ref, eager = ref.nan_to_num(0.0), eager.nan_to_num(0.0)
        assert (out[0, :, 3] == 0).all()
    assert_parity(out, ref, eager, dtype)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_rope_prologue(dtype: str) -> None:
    """q and k rotated on load (rotate-half RoPE), head dim 64, causal."""
    g = torch.Generator().manual_seed(1)
    dt, D, L = DTYPES[dtype], 64, 29
    q, k, v = (torch.randn(1, 2, L, D, generator=g).to(dt) for _ in range(3))
    pos = torch.arange(L, dtype=torch.float64)[:, None]
    freq = 1.0 / 10000 ** (torch.arange(D // 2, dtype=torch.float64) / (D // 2))
    angle = torch.cat([pos * freq, pos * freq], -1)
    cos, sin = angle.cos().to(dt), angle.sin().to(dt)
    out = torch.empty_like(q)
    kernel = AttentionKernel(dtype=dtype, causal=True, rope=True)
    load_module(render_attention(kernel, tile(D), D), interpret=True).launch(q, k, v, out, cos, sin)

    def model(q, k, v, cos, sin):
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    ref = model(q.double(), k.double(), v.double(), cos.double(), sin.double())
    assert_parity(out, ref, model(q, k, v, cos, sin), dtype)


def test_rendered_kernel_properties() -> None:
    """fp32 dots are IEEE; the head dim is padded and masked; causal stops early."""
    src = render_attention(AttentionKernel(dtype="fp32", causal=True), tile(80, 64, 32), 80)
    assert src.count('input_precision="ieee"') == 2
    assert "HEAD_DIM = 128" in src and "d_mask = offs_d < D" in src
    assert "hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)" in src
    with pytest.raises(ValueError, match="HEAD_DIM"):
        render_attention(AttentionKernel(), tile(64), 80)


# --- attention KernelSpecs through the program

SMALL = TileConfig((("BLOCK_M", 16), ("BLOCK_N", 16), ("HEAD_DIM", 16)), num_warps=4)


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_program_causal_from_fused_qkv(dtype: str) -> None:
    """GPT-2: q, k, v are slices of one [B, L, 3C] projection split into heads (views, read
    by index math), causal; ragged L on 16-row blocks."""
    qkv = _rand(2, 21, 3 * 32, dtype=DTYPES[dtype])

    def fn(qkv):
        q, k, v = (t.reshape(2, 21, 2, 16).transpose(1, 2) for t in qkv.split(32, dim=2))
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    c, prog = check_program(fn, (qkv,), SMALL)
    assert [k.kind for k in c.kernels] == ["attention"]
    assert prog.source.count("tl.dot(") == 2


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_program_rope_prologue_gqa(dtype: str) -> None:
    """LLaMA: RoPE (rotate-half, written out by hand) on q and k computed on load, 4 query
    heads over 2 key/value heads, causal."""
    dt = DTYPES[dtype]
    q, k, v = (
        _rand(1, 4, 13, 16, dtype=dt),
        _rand(1, 2, 13, 16, seed=1, dtype=dt),
        _rand(1, 2, 13, 16, seed=2, dtype=dt),
    )
    pos = torch.arange(13, dtype=torch.float32)[:, None]
    angle = torch.cat([pos * 0.3 ** torch.arange(8), pos * 0.3 ** torch.arange(8)], -1)
    cos, sin = angle.cos().to(dt), angle.sin().to(dt)

    def fn(q, k, v, cos, sin):
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    c, _ = check_program(fn, (q, k, v, cos, sin), SMALL)
    (kernel,) = c.kernels
    assert "rope" in kernel.name and kernel.kind == "attention"


@pytest.mark.parametrize("mask", ["add", "bool"])
def test_program_cross_attention_masks_padded_head(mask: str) -> None:
    """Cross-attention (L 9, S 11), head dim 40 padded to 64, an additive or boolean mask
    broadcast over heads."""
    q = _rand(1, 2, 9, 40, dtype=torch.float16)
    k = _rand(1, 2, 11, 40, seed=1, dtype=torch.float16)
    v = _rand(1, 2, 11, 40, seed=2, dtype=torch.float16)
    if mask == "add":
        m = _rand(1, 1, 9, 11, seed=3, dtype=torch.float16)
    else:
        m = _rand(1, 1, 9, 11, seed=3) > -0.5
        m[..., 0] = True  # every row keeps a key (torch gives NaN for a fully masked row)

    def fn(q, k, v, m):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=m)

    check_program(fn, (q, k, v, m), SMALL)


def test_program_dit_qkv_unbind() -> None:
    """DiT: qkv.reshape(B, L, 3, H, D).permute(2, 0, 3, 1, 4) and its three slices."""
    qkv = _rand(2, 10, 3 * 2 * 16)

    def fn(qkv):
        q, k, v = qkv.reshape(2, 10, 3, 2, 16).permute(2, 0, 3, 1, 4).unbind(0)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 10, 32)

    check_program(fn, (qkv,), SMALL)


def test_program_attention_epilogue() -> None:
    """Elementwise ops after the attention (a scale and a residual) run on its output tile."""
    q, k, v = (_rand(1, 2, 12, 24, seed=i) for i in range(3))
    r = _rand(1, 2, 12, 24, seed=3)

    def fn(q, k, v, r):
        return F.scaled_dot_product_attention(q, k, v, scale=0.3) * 2.0 + r

    c, _ = check_program(fn, (q, k, v, r), SMALL)
    (kernel,) = c.kernels
    assert kernel.kind == "attention" and "mul" in kernel.name
