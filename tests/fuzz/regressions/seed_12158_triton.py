"""Found by the fuzzer: seed 12158 (size_cap=3), bfloat16, tokens [1, 1, 3], strided.
triton: mismatch: FAIL
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 12158 (size_cap=3): bfloat16, tokens [1, 1, 3], strided"""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(12158)
        self.p0 = nn.Parameter(torch.randn((6, 3), generator=g) * 0.5774)
        self.p1 = nn.Parameter(torch.randn((6,), generator=g) * 0.1)
        self.p2 = nn.Parameter(torch.randn((3, 3), generator=g) * 0.5774)
        self.p3 = nn.Parameter(torch.randn((3, 6), generator=g) * 0.4082)
        self.p4 = nn.Parameter(torch.randn((3, 6), generator=g) * 0.4082)
        self.p5 = nn.Parameter(torch.randn((1, 3), generator=g) * 0.5774)
        self.p6 = nn.Parameter(torch.randn((1,), generator=g) * 0.1)
        self.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v0 = F.linear(x, self.p0, self.p1)  # [1, 1, 6]
        v1 = v0.chunk(2, dim=-1)[0] * F.gelu(v0.chunk(2, dim=-1)[1])  # [1, 1, 3]
        v2 = F.linear(v1, self.p2).reshape(1, 1, 1, 3).transpose(1, 2)  # [1, 1, 1, 3]
        v3 = F.linear(v0, self.p3).reshape(1, 1, 1, 3).transpose(1, 2)  # [1, 1, 1, 3]
        v4 = F.linear(v0, self.p4).reshape(1, 1, 1, 3).transpose(1, 2)  # [1, 1, 1, 3]
        v5 = (v2 @ v3.transpose(-2, -1)) * 0.57735  # [1, 1, 1, 1]
        v6 = torch.arange(1)[None, :] <= torch.arange(1)[:, None] + 0  # [1, 1]
        v7 = (v6 & (torch.arange(1)[None, :] != torch.arange(1)[:, None] + 0)) | (torch.arange(1) == 0)[None, :]  # [1, 1]
        v8 = v5.masked_fill(~v7, float('-inf'))  # [1, 1, 1, 1]
        v9 = torch.softmax(v8, dim=-1) @ v4  # [1, 1, 1, 3]
        v10 = v9.transpose(1, 2).reshape(1, 1, 3)  # [1, 1, 3]
        v11 = v10.mean(-1, keepdim=True)  # [1, 1, 1]
        v12 = (v10 - v11).pow(2).mean(-1, keepdim=True)  # [1, 1, 1]
        v13 = (v10 - v11) / torch.sqrt(v12 + 1e-5)  # [1, 1, 3]
        v14 = F.linear(v13, self.p5, self.p6)  # [1, 1, 1]
        return v14


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(12158)
    x = torch.randn(1, 2, 6, generator=g, dtype=torch.bfloat16)[:, ::2, 1:4]
    return (x,)
