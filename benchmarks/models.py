"""Model builders shared by the benchmarks: our four examples and their Hugging Face peers.

Each builder takes `tiny` and returns `(model in eval mode, args, kwargs)`. Full size is the
examples' default `build()` size; the Hugging Face models use the configs of
tests/test_models.py and tests/test_diffusion.py scaled to those same sizes. `tiny` gives the
test suite's tiny configs (for smoke tests). A builder whose library is missing raises
ImportError; callers skip that model with the reason.

    gpt2, hf_gpt2     hidden 512, 8 heads, 4 layers, vocab 1024, input_ids [1, 128]
    llama, hf_llama   hidden 512, 8 heads (2 KV), 4 layers, MLP 1408, vocab 1024, [1, 128]
    unet              SD-1.5 first down stage: 320 channels, 32x32 latent, context [1, 16, 768]
    hf_unet           UNet2DConditionModel with one 320-channel CrossAttn level (down, mid, up)
                      at the same latent, context, heads and groups as `unet`
    dit               DiT: 32x32 latent, patch 2, hidden 384, 6 heads, depth 4
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples import dit, gpt2, llama, unet  # noqa: E402  (needs ROOT on sys.path)

Built = tuple[nn.Module, tuple[Any, ...], dict[str, Any]]


def _ids(vocab: int, batch: int, seq: int) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(1))


def build_gpt2(tiny: bool) -> Built:
    size = dict(seq=16, hidden=64, heads=4, layers=2) if tiny else {}
    model, args = gpt2.build(**size)
    return model, args, {}


def build_llama(tiny: bool) -> Built:
    size = dict(seq=16, hidden=64, heads=4, kv_heads=2, layers=2, intermediate=128)
    model, args = llama.build(**(size if tiny else {}))
    return model, args, {}


def build_unet(tiny: bool) -> Built:
    size = dict(size=8, channels=32, groups=8, heads=2, context_len=4, context_dim=24, temb_dim=64)
    model, args = unet.build(**(size if tiny else {}))
    return model, args, {}


def build_dit(tiny: bool) -> Built:
    model, args = dit.build(**(dict(size=8, hidden=32, heads=2, depth=2) if tiny else {}))
    return model, args, {}


def build_hf_gpt2(tiny: bool) -> Built:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    if tiny:
        size = dict(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=128)
        batch, seq = 2, 16
    else:
        size = dict(n_layer=4, n_embd=512, n_head=8, n_positions=1024, vocab_size=1024)
        batch, seq = 1, 128
    last = size["vocab_size"] - 1  # GPT-2's default bos/eos id 50256 is outside a small vocab
    cfg = GPT2Config(**size, use_cache=False, bos_token_id=last, eos_token_id=last)
    model = GPT2Model(cfg).eval()
    return model, (_ids(size["vocab_size"], batch, seq),), {}


def build_hf_llama(tiny: bool) -> Built:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    size = dict(
        num_hidden_layers=2 if tiny else 4,
        hidden_size=64 if tiny else 512,
        num_attention_heads=4 if tiny else 8,
        num_key_value_heads=2,
        intermediate_size=160 if tiny else 1408,
        vocab_size=128 if tiny else 1024,
        max_position_embeddings=64 if tiny else 1024,
    )
    model = LlamaModel(LlamaConfig(**size, use_cache=False)).eval()
    return model, (_ids(size["vocab_size"], 1, 16 if tiny else 128),), {}


def build_hf_unet(tiny: bool) -> Built:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    # tiny: tests/test_diffusion.py's tiny_unet; full: the example's width at one level.
    latent, ctx_len, ctx_dim = (8, 6, 24) if tiny else (32, 16, 768)
    model = UNet2DConditionModel(
        sample_size=latent,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64) if tiny else (320,),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D")
        if tiny
        else ("CrossAttnDownBlock2D",),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D") if tiny else ("CrossAttnUpBlock2D",),
        cross_attention_dim=ctx_dim,
        attention_head_dim=8,
        norm_num_groups=8 if tiny else 32,
        use_linear_projection=not tiny,
    ).eval()
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, latent, latent, generator=gen)
    context = torch.randn(1, ctx_len, ctx_dim, generator=gen)
    return model, (sample, torch.tensor([500]), context), {"return_dict": False}


MODELS: dict[str, Callable[[bool], Built]] = {
    "gpt2": build_gpt2,
    "llama": build_llama,
    "unet": build_unet,
    "dit": build_dit,
    "hf_gpt2": build_hf_gpt2,
    "hf_llama": build_hf_llama,
    "hf_unet": build_hf_unet,
}
