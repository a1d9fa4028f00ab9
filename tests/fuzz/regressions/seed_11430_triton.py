"""Found by the fuzzer: seed 11430 (drop=[0], steps=5, size_cap=2), float32, tokens [1, 2, 2], transposed, token ids < 2.
triton: crash: triton.runtime.errors.InterpreterError: ValueError("Expected pointer argument to have shape ['constexpr[8]', 'constexpr[2]'] but got ['constexpr[8]', 'constexpr[1]']")
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 11430 (drop=[0], steps=5, size_cap=2): float32, tokens [1, 2, 2], transposed, token ids < 2"""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        v0 = x.mean(-1, keepdim=True)  # [1, 2, 1]
        v1 = (x - v0).pow(2).mean(-1, keepdim=True)  # [1, 2, 1]
        v2 = (x - v0) / torch.sqrt(v1 + 1e-5)  # [1, 2, 2]
        v3 = torch.cumsum(v2, dim=0) * 1  # [1, 2, 2]
        v4 = torch.reciprocal(v1.abs() + 1.0)  # [1, 2, 1]
        v5 = v1 + v0  # [1, 2, 1]
        return v5


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(11430)
    x = torch.randn(1, 2, 2, generator=g, dtype=torch.float32).transpose(1, 2)
    ids = torch.randint(0, 2, (1, 2), generator=g)
    return (x, ids)
