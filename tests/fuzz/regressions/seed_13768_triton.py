"""Found by the fuzzer: seed 13768 (drop=[0], steps=2, size_cap=1), float32, an image [1, 1, 1, 1], contiguous.
triton: crash: triton.runtime.errors.InterpreterError: ValueError('Mask argument cannot be block type if pointer argument is not a block')
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 13768 (drop=[0], steps=2, size_cap=1): float32, an image [1, 1, 1, 1], contiguous"""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v0 = F.pad(x, (2, 2))  # [1, 1, 1, 5]
        return v0


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(13768)
    x = torch.randn(1, 1, 1, 1, generator=g, dtype=torch.float32)
    return (x,)
