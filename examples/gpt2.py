"""GPT-2 style decoder in plain PyTorch: a tilefuse example model.

Pre-LayerNorm blocks with fused-qkv causal attention and a tanh-GELU MLP, named like the
Hugging Face GPT-2 modules (``wte``, ``wpe``, ``h.N.attn.c_attn``, ...). Running this file
checks the compiled model against eager PyTorch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        assert hidden % heads == 0, "hidden must be divisible by heads"
        self.heads = heads
        self.head_dim = hidden // heads
        self.c_attn = nn.Linear(hidden, 3 * hidden)
        self.c_proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, h = x.shape
        q, k, v = self.c_attn(x).split(h, dim=-1)
        q = q.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = k.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(b, s, h)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.c_fc = nn.Linear(hidden, 4 * hidden)
        self.c_proj = nn.Linear(4 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(hidden, eps=eps)
        self.attn = Attention(hidden, heads)
        self.ln_2 = nn.LayerNorm(hidden, eps=eps)
        self.mlp = MLP(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT2(nn.Module):
    def __init__(
        self,
        vocab: int = 1024,
        max_positions: int = 1024,
        hidden: int = 512,
        heads: int = 8,
        layers: int = 4,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, hidden)
        self.wpe = nn.Embedding(max_positions, hidden)
        self.h = nn.ModuleList(Block(hidden, heads, eps) for _ in range(layers))
        self.ln_f = nn.LayerNorm(hidden, eps=eps)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 style init: N(0, 0.02) for weights, zero biases, LayerNorm at identity.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        positions = torch.arange(seq, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


def build(
    seq: int = 128,
    hidden: int = 512,
    heads: int = 8,
    layers: int = 4,
    batch: int = 1,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    vocab: int = 1024,
    max_positions: int = 1024,
    **more: Any,
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Return (model in eval mode, cast to dtype, with seeded random weights, (input_ids,))."""
    assert seq <= max_positions, "seq must not exceed max_positions"
    torch.manual_seed(seed)
    model = GPT2(vocab, max_positions, hidden, heads, layers, **more)
    model = model.to(dtype).eval()
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, vocab, (batch, seq), generator=gen, dtype=torch.long)
    return model, (input_ids,)


if __name__ == "__main__":  # parity of this example, like `tilefuse check FILE.py:build`
    import sys

    from compiler.cli import main

    raise SystemExit(main(["check", f"{__file__}:build", *sys.argv[1:]]))
