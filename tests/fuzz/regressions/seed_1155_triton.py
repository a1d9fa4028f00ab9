"""Found by the fuzzer: seed 1155 (drop=[0, 1, 2, 3, 4, 5, 6], size_cap=1), float32, an image [1, 1, 1, 1], contiguous.
triton: crash: triton.runtime.errors.InterpreterError: AttributeError("'int' object has no attribute 'to'")
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 1155 (drop=[0, 1, 2, 3, 4, 5, 6], size_cap=1): float32, an image [1, 1, 1, 1], contiguous"""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v0 = x[:, :, :, torch.arange(0, -1, -1)]  # [1, 1, 1, 1]
        return v0


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1155)
    x = torch.randn(1, 1, 1, 1, generator=g, dtype=torch.float32)
    return (x,)
