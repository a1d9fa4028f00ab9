"""DiT-S/2 style diffusion transformer in plain PyTorch: a tilefuse example model.

Patchify conv plus a fixed 2-d sin-cos positional embedding, a sinusoidal timestep
embedder and a class embedder (with the null class) summed into the conditioning ``c``,
transformer blocks with adaLN-Zero modulation (shift/scale/gate for attention and MLP),
a modulated final layer and unpatchify, named like the DiT repository (``x_embedder.proj``,
``t_embedder.mlp.0``, ``y_embedder.embedding_table``, ``blocks.N.adaLN_modulation.1``,
``final_layer.linear``, ...). learn_sigma is off, so the output has the input's channels.

Unlike DiT, which zero-initializes the adaLN modulation and final linears (the untrained
model then outputs exactly zero, making a parity check meaningless), every weight and bias
here is seeded random, normal with std 1/sqrt(fan_in) for linear and conv weights, 1 for
the class embeddings, 0.02 for biases and 1/sqrt(hidden) for the adaLN modulation linears,
so the shifts, scales and gates are O(1) and activations stay O(1) at any width. Running
this file checks the compiled model against eager PyTorch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """DiT ``get_1d_sincos_pos_embed_from_grid``: [M] positions -> [M, dim] (sin, cos)."""
    assert dim % 2 == 0, "embedding dim must be even"
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, grid_size: int) -> torch.Tensor:
    """DiT ``get_2d_sincos_pos_embed``: [grid_size**2, dim], in float32."""
    assert dim % 4 == 0, "hidden must be divisible by 4 for the 2-d sin-cos embedding"
    coords = torch.arange(grid_size, dtype=torch.float32)
    grid = torch.meshgrid(coords, coords, indexing="xy")  # np.meshgrid(grid_w, grid_h)
    emb_h = sincos_1d(dim // 2, grid[0])  # DiT's naming: grid[0] varies along w
    emb_w = sincos_1d(dim // 2, grid[1])
    return torch.cat([emb_h, emb_w], dim=1).to(torch.float32)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, hidden: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, C, H, W] -> [B, HW, C]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # Sinusoid in float32, cast to the model dtype before the MLP.
        t_freq = self.timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(t_freq)


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)  # +1: the null class

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        assert hidden % heads == 0, "hidden must be divisible by heads"
        self.heads = heads
        self.head_dim = hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        qkv = self.qkv(x).reshape(b, s, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).reshape(b, s, h)
        return self.proj(y)


class Mlp(nn.Module):
    def __init__(self, hidden: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        inner = int(hidden * mlp_ratio)
        self.fc1 = nn.Linear(hidden, inner)
        self.fc2 = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    pos_embed: torch.Tensor

    def __init__(
        self,
        input_size: int = 32,
        patch: int = 2,
        in_channels: int = 4,
        hidden: int = 384,
        depth: int = 4,
        heads: int = 6,
        num_classes: int = 1000,
        adaln_gain: float = 1.0,
    ) -> None:
        super().__init__()
        assert input_size % patch == 0, "input size must be divisible by the patch size"
        self.patch = patch
        self.out_channels = in_channels  # learn_sigma off
        self.x_embedder = PatchEmbed(in_channels, hidden, patch)
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(num_classes, hidden)
        pos = sincos_2d(hidden, input_size // patch).unsqueeze(0)
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads) for _ in range(depth))
        self.final_layer = FinalLayer(hidden, patch, self.out_channels)
        self.apply(self._init_weights)
        # Random, not zero (adaLN-Zero): O(1) shifts, scales and gates for a parity check.
        adaln = [block.adaLN_modulation[1] for block in self.blocks]
        for linear in [*adaln, self.final_layer.adaLN_modulation[1]]:
            nn.init.normal_(linear.weight, std=adaln_gain / math.sqrt(hidden))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Fan-in scaled weights keep activations O(1) at any width; biases small but nonzero.
        if isinstance(module, nn.Linear | nn.Conv2d):
            fan_in = module.weight[0].numel()
            nn.init.normal_(module.weight, mean=0.0, std=1.0 / math.sqrt(fan_in))
            if module.bias is not None:
                nn.init.normal_(module.bias, mean=0.0, std=0.02)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=1.0)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, p*p*C] -> [B, C, H, W], DiT's ``nhwpqc->nchpwq`` as a permute."""
        b, t, _ = x.shape
        c, p = self.out_channels, self.patch
        h = w = int(t**0.5)
        assert h * w == t, "token count must be a square"
        x = x.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, h * p, w * p)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        return self.unpatchify(x)


def build(
    size: int = 32,
    hidden: int = 384,
    heads: int = 6,
    depth: int = 4,
    patch: int = 2,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    num_classes: int = 1000,
    **more: Any,
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return (model in eval mode, cast to dtype, with seeded random weights, (x, t, y))."""
    torch.manual_seed(seed)
    model = DiT(size, patch, 4, hidden, depth, heads, num_classes, **more)
    model = model.to(dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, size, size, generator=gen).to(dtype)
    t = torch.randint(0, 1000, (batch,), generator=gen, dtype=torch.long)
    y = torch.randint(0, num_classes, (batch,), generator=gen, dtype=torch.long)
    return model, (x, t, y)


if __name__ == "__main__":  # parity of this example, like `tilefuse check FILE.py:build`
    import sys

    from compiler.cli import main

    raise SystemExit(main(["check", f"{__file__}:build", *sys.argv[1:]]))
