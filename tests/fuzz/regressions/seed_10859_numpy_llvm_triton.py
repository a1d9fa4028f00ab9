"""Found by the fuzzer: seed 10859 (steps=5, size_cap=8), float32, tokens [1, 8, 2], contiguous.
numpy, llvm, triton: mismatch: max abs err 1.2e+08 against a budget of 2.1e-03 (the -1e4 causal
mask taken for is_causal: masked scores ~1e4 above the kept ones)
"""

BACKENDS = ('numpy', 'llvm', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 10859 (steps=5, size_cap=8): float32, tokens [1, 8, 2], contiguous"""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(10859)
        self.p0 = nn.Parameter(torch.randn((6, 2), generator=g) * 0.7071)
        self.p1 = nn.Parameter(torch.randn((6,), generator=g) * 0.1)
        self.p2 = nn.Parameter(torch.randn((3, 3), generator=g) * 0.5774)
        self.p3 = nn.Parameter(torch.randn((3, 3), generator=g) * 0.5774)
        self.p4 = nn.Parameter(torch.randn((3, 3), generator=g) * 0.5774)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v0 = x + x  # [1, 8, 2]
        v1 = v0 * v0  # [1, 8, 2]
        v2 = F.linear(v1, self.p0, self.p1)  # [1, 8, 6]
        v3 = v2[..., :3] * F.gelu(v2[..., 3:])  # [1, 8, 3]
        v4 = v3 ** 3 * 0.1  # [1, 8, 3]
        v5 = F.linear(v4, self.p2).reshape(1, 8, 1, 3).transpose(1, 2)  # [1, 1, 8, 3]
        v6 = F.linear(v4, self.p3).reshape(1, 8, 1, 3).transpose(1, 2)  # [1, 1, 8, 3]
        v7 = F.linear(v4, self.p4).reshape(1, 8, 1, 3).transpose(1, 2)  # [1, 1, 8, 3]
        v8 = torch.arange(8)[None, :] <= torch.arange(8)[:, None] + 0  # [8, 8]
        v9 = torch.where(v8, 0.0, -1e4).to(v5.dtype)  # [8, 8]
        v10 = F.scaled_dot_product_attention(v5, v6, v7, attn_mask=v9)  # [1, 1, 8, 3]
        v11 = v10.transpose(1, 2).reshape(1, 8, 3)  # [1, 8, 3]
        return v11


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(10859)
    x = torch.randn(1, 8, 2, generator=g, dtype=torch.float32)
    return (x,)
