"""Found by the fuzzer: seed 1158 (steps=1, size_cap=2), float32, an image [1, 2, 2, 2], transposed.
triton: crash: SyntaxError: invalid decimal literal
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 1158 (steps=1, size_cap=2): float32, an image [1, 2, 2, 2], transposed"""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v0 = F.interpolate(x, size=(1, 1), mode='nearest')  # [1, 2, 1, 1]
        return v0


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1158)
    x = torch.randn(1, 2, 2, 2, generator=g, dtype=torch.float32).transpose(2, 3)
    return (x,)
