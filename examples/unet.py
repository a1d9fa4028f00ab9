"""Stable Diffusion 1.5 style UNet down stage in plain PyTorch: a tilefuse example model.

The first down stage of the SD-1.5 UNet: ``conv_in``, the sinusoidal timestep embedding
(diffusers ``get_timestep_embedding`` with ``flip_sin_to_cos=True``, computed in float32)
and its MLP, one ResNet block (GroupNorm, SiLU, 3x3 convs, timestep injection), one spatial
transformer (GroupNorm, linear projections, self-attention, cross-attention to a text
context and a GEGLU feed-forward) and the stride-2 downsampler. Modules are named like
diffusers (``conv_in``, ``time_embedding.linear_1``, ``resnets.0.norm1``,
``attentions.0.transformer_blocks.0.attn1.to_q``, ...); weights use PyTorch's default
seeded init. Running this file checks the compiled model against eager PyTorch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers ``get_timestep_embedding`` (flip_sin_to_cos=True, shift 0), in float32."""
    half = dim // 2
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / half
    emb = timesteps[:, None].float() * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(emb), torch.sin(emb)], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    def __init__(self, in_dim: int, temb_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, temb_dim)
        self.linear_2 = nn.Linear(temb_dim, temb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ResnetBlock2D(nn.Module):
    def __init__(self, channels: int, temb_dim: int, groups: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, channels, eps=eps)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb_dim, channels)
        self.norm2 = nn.GroupNorm(groups, channels, eps=eps)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h  # identity shortcut, output_scale_factor 1


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        assert dim % heads == 0, "channels must be divisible by heads"
        context_dim = dim if context_dim is None else context_dim
        self.heads = heads
        self.head_dim = dim // heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, s, c = x.shape
        q = self.to_q(x).reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = self.to_k(context).reshape(b, -1, self.heads, self.head_dim).transpose(1, 2)
        v = self.to_v(context).reshape(b, -1, self.heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(b, s, c)
        return self.to_out[0](y)


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden, gate = self.proj(x).chunk(2, dim=-1)
        return hidden * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        # diffusers layout: net.0 = GEGLU, net.1 = dropout (omitted), net.2 = output Linear.
        inner = mult * dim
        self.net = nn.ModuleList([GEGLU(dim, inner), nn.Identity(), nn.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(dim, heads, context_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        x = x + self.ff(self.norm3(x))
        return x


class Transformer2DModel(nn.Module):
    def __init__(self, channels: int, heads: int, context_dim: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, context_dim)]
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        residual = x
        x = self.norm(x)
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # use_linear_projection=True
        x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        x = self.proj_out(x)
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        return x + residual


class Downsample2D(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class UNetDownStage(nn.Module):
    def __init__(
        self,
        in_channels: int = 4,
        channels: int = 320,
        groups: int = 32,
        heads: int = 8,
        context_dim: int = 768,
        temb_dim: int = 1280,
    ) -> None:
        super().__init__()
        self.channels = channels
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.time_embedding = TimestepEmbedding(channels, temb_dim)
        self.resnets = nn.ModuleList([ResnetBlock2D(channels, temb_dim, groups)])
        self.attentions = nn.ModuleList([Transformer2DModel(channels, heads, context_dim, groups)])
        self.downsamplers = nn.ModuleList([Downsample2D(channels)])

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> torch.Tensor:
        # Sinusoid in float32, cast to the model dtype before the MLP (like diffusers).
        t_emb = timestep_embedding(timestep, self.channels).to(sample.dtype)
        temb = self.time_embedding(t_emb)
        x = self.conv_in(sample)
        for resnet, attn in zip(self.resnets, self.attentions, strict=True):
            x = resnet(x, temb)
            x = attn(x, encoder_hidden_states)
        for down in self.downsamplers:
            x = down(x)
        return x


def build(
    size: int = 32,
    channels: int = 320,
    groups: int = 32,
    heads: int = 8,
    context_len: int = 16,
    context_dim: int = 768,
    temb_dim: int = 1280,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return (model in eval mode, cast to dtype, with seeded random weights,
    (sample, timestep, encoder_hidden_states))."""
    assert channels % groups == 0, "channels must be divisible by groups"
    torch.manual_seed(seed)
    model = UNetDownStage(4, channels, groups, heads, context_dim, temb_dim)
    model = model.to(dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 4, size, size, generator=gen).to(dtype)
    timestep = torch.tensor([500] * batch, dtype=torch.long)
    context = torch.randn(batch, context_len, context_dim, generator=gen).to(dtype)
    return model, (sample, timestep, context)


if __name__ == "__main__":  # parity of this example, like `tilefuse check FILE.py:build`
    import sys

    from compiler.cli import main

    raise SystemExit(main(["check", f"{__file__}:build", *sys.argv[1:]]))
