"""Found by the fuzzer: seed 12056 (drop=[0, 2], steps=5, size_cap=2), bfloat16, tokens [1, 2, 2], contiguous.
triton: mismatch: FAIL
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 12056 (drop=[0, 2], steps=5, size_cap=2): bfloat16, tokens [1, 2, 2], contiguous"""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(12056)
        self.p0 = nn.Parameter(torch.randn((4, 2), generator=g) * 0.7071)
        self.p1 = nn.Parameter(torch.randn((4,), generator=g) * 0.1)
        self.register_buffer('idx2', torch.tensor([3]))
        self.to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v0 = F.linear(x, self.p0, self.p1)  # [1, 2, 4]
        v1 = F.silu(v0.chunk(2, dim=-1)[1]) * v0.chunk(2, dim=-1)[0]  # [1, 2, 2]
        v2 = v0[:, :, self.idx2]  # [1, 2, 1]
        v3 = (v2 @ v2.transpose(1, 2)) * 1  # [1, 2, 2]
        return v3


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(12056)
    x = torch.randn(1, 2, 2, generator=g, dtype=torch.bfloat16)
    return (x,)
