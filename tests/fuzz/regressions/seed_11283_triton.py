"""Found by the fuzzer: seed 11283 (steps=4, size_cap=3), float32, tokens [1, 3, 3], strided.
triton: crash: TypeError: launch_k0_fused_matmul_gelu_index() missing 1 required positional argument: 'status'
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 11283 (steps=4, size_cap=3): float32, tokens [1, 3, 3], strided"""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(11283)
        self.register_buffer('idx0', torch.tensor([2]))
        self.p1 = nn.Parameter(torch.randn((6, 3), generator=g) * 0.5774)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v0 = F.gelu(x)  # [1, 3, 3]
        v1 = v0[:, self.idx0]  # [1, 1, 3]
        v2 = F.linear(v1, self.p1, None)  # [1, 1, 6]
        v3 = F.gelu(v2.chunk(2, dim=-1)[1], approximate='tanh') * v2.chunk(2, dim=-1)[0]  # [1, 1, 3]
        v4 = torch.cat([v3, torch.tanh(v3)], dim=2)  # [1, 1, 6]
        return v4


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(11283)
    x = torch.randn(1, 6, 6, generator=g, dtype=torch.float32)[:, ::2, 1:4]
    return (x,)
