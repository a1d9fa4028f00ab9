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

and more of the same families, built as a user would from the libraries' classes at small
configs (a few milliseconds a call on 2 cores), none of them tuned for:

    hf_dit            diffusers DiTTransformer2DModel, the `dit` size (4 x 384, 32x32 latent)
    hf_vae_decoder    diffusers AutoencoderKL's decoder, 4 -> 3 channels, 32x32 latent to 64x64
    hf_qwen2          Qwen2Model: hidden 384, 6 heads (2 KV, biased q/k/v), 4 layers, [1, 128]
    hf_gemma          GemmaModel: hidden 256, 4 heads (1 KV), head 64, 4 layers, GeGLU, [1, 128]
    hf_mistral        MistralModel: hidden 384, 6 heads (2 KV), 4 layers, sliding window 64,
                      [1, 128]
    hf_bert           BertModel (a text encoder): hidden 384, 6 heads, 4 layers, [2, 64] with
                      a padding mask and token types
    hf_t5_encoder     T5EncoderModel: d_model 384, 6 heads, 4 layers, relative bias, [1, 96]
    hf_pixart         diffusers PixArtTransformer2DModel: 4 x (6 x 64), 32x32 latent, text [1, 32]
    hf_sd3            diffusers SD3Transformer2DModel (MMDiT): 3 x (4 x 64), 32x32 latent
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


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def build_hf_dit(tiny: bool) -> Built:
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    heads, dim, layers, latent = (2, 16, 2, 8) if tiny else (6, 64, 4, 32)
    model = DiTTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=dim,
        in_channels=4,
        out_channels=4,
        num_layers=layers,
        sample_size=latent,
        patch_size=2,
        num_embeds_ada_norm=1000,
    ).eval()
    sample = torch.randn(1, 4, latent, latent, generator=_gen())
    return model, (sample, torch.tensor([10]), torch.tensor([3])), {"return_dict": False}


class VaeDecode(nn.Module):
    """AutoencoderKL's decode of a latent: post_quant_conv, then the decoder."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z, return_dict=False)[0]


def build_hf_vae_decoder(tiny: bool) -> Built:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    channels, latent = ((32, 64), 8) if tiny else ((64, 128), 32)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=channels,
        latent_channels=4,
        norm_num_groups=8 if tiny else 32,
        layers_per_block=1,
        sample_size=latent * 2,
    ).eval()
    return VaeDecode(vae).eval(), (torch.randn(1, 4, latent, latent, generator=_gen()),), {}


def _decoder(family: str, tiny: bool, **config: Any) -> Built:
    """transformers' `<family>Model` (a decoder LLM) without its LM head: 4 layers, 6 heads
    (2 KV), MLP 1024, vocab 2048, input_ids [1, 128]; `config` overrides (tiny: the test
    suite's sizes)."""
    import transformers

    torch.manual_seed(0)
    size = dict(
        hidden_size=64 if tiny else 384,
        num_attention_heads=4 if tiny else 6,
        num_key_value_heads=2,
        num_hidden_layers=2 if tiny else 4,
        intermediate_size=128 if tiny else 1024,
        vocab_size=256 if tiny else 2048,
        max_position_embeddings=256,
        use_cache=False,
    )
    cfg = getattr(transformers, f"{family}Config")(**(size | config))
    model = getattr(transformers, f"{family}Model")(cfg).eval()
    return model, (_ids(cfg.vocab_size, 1, 16 if tiny else 128),), {}


def build_hf_qwen2(tiny: bool) -> Built:
    return _decoder("Qwen2", tiny)


def build_hf_gemma(tiny: bool) -> Built:
    # Gemma: one KV head of 64, GeGLU, embeddings scaled by sqrt(hidden)
    wide = dict(hidden_size=256, num_attention_heads=4, head_dim=64)
    return _decoder("Gemma", tiny, num_key_value_heads=1, **({"head_dim": 16} if tiny else wide))


def build_hf_mistral(tiny: bool) -> Built:
    return _decoder("Mistral", tiny, sliding_window=8 if tiny else 64)


def build_hf_bert(tiny: bool) -> Built:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        hidden_size=64 if tiny else 384,
        num_attention_heads=4 if tiny else 6,
        num_hidden_layers=2 if tiny else 4,
        intermediate_size=128 if tiny else 1536,
        vocab_size=256 if tiny else 2048,
        max_position_embeddings=128,
    )
    model = BertModel(cfg, add_pooling_layer=False).eval()
    batch, seq = (2, 16) if tiny else (2, 64)
    ids = _ids(cfg.vocab_size, batch, seq)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq * 3 // 4 :] = 0  # the second sequence padded
    types = torch.zeros(batch, seq, dtype=torch.long)  # as a tokenizer returns them
    return model, (ids, mask, types), {"return_dict": False}


def build_hf_t5_encoder(tiny: bool) -> Built:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(
        d_model=64 if tiny else 384,
        d_kv=16 if tiny else 64,
        num_heads=4 if tiny else 6,
        num_layers=2 if tiny else 4,
        d_ff=128 if tiny else 1024,
        vocab_size=256 if tiny else 2048,
        feed_forward_proj="gated-gelu",
    )
    model = T5EncoderModel(cfg).eval()
    return model, (_ids(cfg.vocab_size, 1, 16 if tiny else 96),), {"return_dict": False}


def build_hf_pixart(tiny: bool) -> Built:
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(0)
    heads, dim, layers, latent, text = (2, 16, 2, 8, 24) if tiny else (6, 64, 4, 32, 64)
    model = PixArtTransformer2DModel(
        num_attention_heads=heads,
        attention_head_dim=dim,
        in_channels=4,
        out_channels=8,
        num_layers=layers,
        cross_attention_dim=heads * dim,
        sample_size=latent,
        patch_size=2,
        caption_channels=text,
        interpolation_scale=1,
    ).eval()
    gen = _gen()
    sample = torch.randn(1, 4, latent, latent, generator=gen)
    caption = torch.randn(1, 8 if tiny else 32, text, generator=gen)
    kwargs = {
        "encoder_hidden_states": caption,
        "timestep": torch.tensor([10]),
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        "return_dict": False,
    }
    return model, (sample,), kwargs


def build_hf_sd3(tiny: bool) -> Built:
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    heads, dim, layers, latent = (2, 16, 2, 8) if tiny else (4, 64, 3, 32)
    model = SD3Transformer2DModel(
        sample_size=latent,
        patch_size=2,
        in_channels=4,
        num_layers=layers,
        attention_head_dim=dim,
        num_attention_heads=heads,
        joint_attention_dim=64 if not tiny else 24,
        caption_projection_dim=heads * dim,
        pooled_projection_dim=64 if not tiny else 20,
        out_channels=4,
        pos_embed_max_size=latent,
    ).eval()
    gen = _gen()
    kwargs = {
        "hidden_states": torch.randn(1, 4, latent, latent, generator=gen),
        "encoder_hidden_states": torch.randn(
            1, 16 if not tiny else 5, 64 if not tiny else 24, generator=gen
        ),
        "pooled_projections": torch.randn(1, 64 if not tiny else 20, generator=gen),
        "timestep": torch.tensor([10]),
        "return_dict": False,
    }
    return model, (), kwargs


MODELS: dict[str, Callable[[bool], Built]] = {
    "gpt2": build_gpt2,
    "llama": build_llama,
    "unet": build_unet,
    "dit": build_dit,
    "hf_gpt2": build_hf_gpt2,
    "hf_llama": build_hf_llama,
    "hf_unet": build_hf_unet,
    "hf_dit": build_hf_dit,
    "hf_vae_decoder": build_hf_vae_decoder,
    "hf_qwen2": build_hf_qwen2,
    "hf_gemma": build_hf_gemma,
    "hf_bert": build_hf_bert,
    "hf_mistral": build_hf_mistral,
    "hf_t5_encoder": build_hf_t5_encoder,
    "hf_pixart": build_hf_pixart,
    "hf_sd3": build_hf_sd3,
}
