"""The diffusion family: diffusers UNet2DConditionModel and the VAE decoder, and the patterns
diffusion models are made of (timestep embeddings, adaLN, GEGLU, cross-attention, group norm on
any layout), in f32 and bf16 against eager.

Repro: pytest tests/test_diffusion.py -k "unet and bfloat16"
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import compiler
from examples import dit, unet
from tests.op_samples import randn, transposed

DTYPES = [torch.float32, torch.bfloat16]
DTYPE_IDS = ["float32", "bfloat16"]


def tiny_unet(dtype: torch.dtype) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    unet = unet.eval().to(dtype)
    inputs = (randn(1, 4, 8, 8, dtype=dtype), torch.tensor([10]), randn(1, 6, 24, dtype=dtype))
    return unet, inputs


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_diffusers_unet_parity(dtype: torch.dtype) -> None:
    unet, inputs = tiny_unet(dtype)
    report = compiler.check_parity(unet, inputs)
    assert report.ok, f"\n{report}"
    assert report.rows[0].output == "['sample']"


def test_diffusers_unet_output_structure() -> None:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    unet, inputs = tiny_unet(torch.float32)
    with torch.no_grad():
        want = unet(*inputs).sample
    out = compiler.compile(unet, inputs, backend="numpy")(*inputs)
    assert isinstance(out, UNet2DConditionOutput)
    torch.testing.assert_close(out.sample, want, rtol=1e-4, atol=1e-4)
    plain = compiler.compile(unet, inputs, {"return_dict": False}, backend="numpy")
    out = plain(*inputs, return_dict=False)
    assert isinstance(out, tuple) and len(out) == 1
    torch.testing.assert_close(out[0], want, rtol=1e-4, atol=1e-4)
    report = compiler.check_parity(unet, inputs, {"return_dict": False})
    assert report.ok, f"\n{report}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_diffusers_vae_decoder_parity(dtype: torch.dtype) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    decoder = vae.decoder.eval().to(dtype)
    report = compiler.check_parity(decoder, (randn(1, 4, 8, 8, dtype=dtype),))
    assert report.ok, f"\n{report}"


# ----------------------------------------------------------------------------- patterns


def timestep_embedding(t: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """diffusers get_timestep_embedding, flip_sin_to_cos=True."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / half
    emb = t[:, None].float() * torch.exp(exponent)[None, :]
    return torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)


def adaln_modulate(x: torch.Tensor, c: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    shift, scale = F.linear(F.silu(c), w).chunk(2, dim=1)
    x = F.layer_norm(x, x.shape[-1:], eps=1e-6)
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def geglu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    hidden, gate = F.linear(x, w, b).chunk(2, dim=-1)
    return hidden * F.gelu(gate)


def cross_attention(x: torch.Tensor, ctx: torch.Tensor, wq: torch.Tensor, wkv: torch.Tensor) -> Any:
    b, n, _ = x.shape
    q = (x @ wq).reshape(b, n, 8, 40).transpose(1, 2)
    k, v = (ctx @ wkv).reshape(b, ctx.shape[1], 2, 8, 40).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, 320)


def group_norm_silu_cat(x: torch.Tensor, skip: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    h = torch.cat([x, skip], dim=1)
    return F.silu(F.group_norm(h, 4, w, -w))


PATTERNS = {
    "timestep-embedding": (timestep_embedding, lambda d: (torch.tensor([0, 10, 999]),)),
    "timestep-embedding-float-t": (timestep_embedding, lambda d: (torch.tensor([0.5, 500.0]),)),
    "adaln-modulate": (
        adaln_modulate,
        lambda d: (randn(2, 5, 16, dtype=d), randn(2, 24, dtype=d), randn(32, 24, dtype=d) * 0.3),
    ),
    "geglu": (
        geglu,
        lambda d: (randn(2, 5, 16, dtype=d), randn(48, 16, dtype=d), randn(48, dtype=d)),
    ),
    "cross-attention-8x40-kv16": (
        cross_attention,
        lambda d: (
            randn(1, 64, 320, dtype=d) * 0.1,
            randn(1, 16, 768, dtype=d) * 0.1,
            randn(320, 320, dtype=d) * 0.1,
            randn(768, 640, dtype=d) * 0.05,
        ),
    ),
    "group-norm-silu-cat-channels-last-odd": (
        group_norm_silu_cat,
        lambda d: (
            randn(1, 6, 5, 7, dtype=d).to(memory_format=torch.channels_last),
            transposed(1, 2, 5, 7, dtype=d),
            randn(8, dtype=d),
        ),
    ),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(PATTERNS))
def test_pattern_parity(name: str, dtype: torch.dtype) -> None:
    fn, make = PATTERNS[name]
    report = compiler.check_parity(fn, make(dtype))
    assert report.ok, f"\n{report}"


# ----------------------------------------------------------------------------- our examples

EXAMPLES = {
    "unet": lambda d: unet.build(
        size=8, channels=32, groups=8, heads=2, context_len=4, context_dim=24, temb_dim=64, dtype=d
    ),
    "dit": lambda d: dit.build(size=8, hidden=32, heads=2, depth=2, dtype=d),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_example_parity(name: str, dtype: torch.dtype) -> None:
    model, inputs = EXAMPLES[name](dtype)
    report = compiler.check_parity(model, inputs)
    assert report.ok, f"\n{report}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("example", [unet, dit], ids=["unet", "dit"])
def test_examples_at_default_size(example: Any, dtype: torch.dtype) -> None:
    model, inputs = example.build(dtype=dtype)
    report = compiler.check_parity(model, inputs)
    assert report.ok, f"\n{report}"


# ----------------------------------------------------------------------------- more diffusers


def _sdxl_like_unet() -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=16,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(4, 8),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        norm_num_groups=16,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=32 + 6 * 8,
    )
    cond = {"text_embeds": randn(1, 32), "time_ids": randn(1, 6)}
    inputs = (randn(1, 4, 16, 16), torch.tensor([500]), randn(1, 5, 32))
    return unet, inputs, {"added_cond_kwargs": cond}


def _vae() -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(32, 64),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    return vae, (randn(1, 3, 16, 16),), {"sample_posterior": False}


def _dit() -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]:
    from diffusers import DiTTransformer2DModel

    model = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=1000,
    )
    return model, (randn(1, 4, 8, 8), torch.tensor([10]), torch.tensor([3])), {}


def _sd3() -> tuple[torch.nn.Module, tuple[Any, ...], dict[str, Any]]:
    from diffusers import SD3Transformer2DModel

    model = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        caption_projection_dim=32,
        pooled_projection_dim=20,
        out_channels=4,
        pos_embed_max_size=16,
    )
    kwargs = {
        "hidden_states": randn(1, 4, 8, 8),
        "encoder_hidden_states": randn(1, 5, 24),
        "pooled_projections": randn(1, 20),
        "timestep": torch.tensor([10]),
    }
    return model, (), kwargs


DIFFUSERS = {"unet-sdxl-like": _sdxl_like_unet, "vae": _vae, "dit": _dit, "sd3": _sd3}


def _cast(tree: Any, dtype: torch.dtype) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.to(dtype) if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: _cast(v, dtype) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_cast(v, dtype) for v in tree)
    return tree


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", list(DIFFUSERS))
def test_more_diffusers_models(name: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model, inputs, kwargs = DIFFUSERS[name]()
    model = model.eval().to(dtype)
    report = compiler.check_parity(model, _cast(inputs, dtype), _cast(kwargs, dtype))
    assert report.ok, f"\n{report}"
