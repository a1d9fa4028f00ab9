"""Found by the fuzzer: seed 1110 (steps=1, size_cap=1), bfloat16, tokens [1, 1, 1], strided, token ids < 1.
triton: crash: triton.runtime.errors.InterpreterError: InterpreterError("ValueError('Cannot bitcast data-type of size 1 to data-type of size 32')")
"""

BACKENDS = ('numpy', 'triton')

import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed 1110 (steps=1, size_cap=1): bfloat16, tokens [1, 1, 1], strided, token ids < 1"""

    def __init__(self) -> None:
        super().__init__()
        self.to(torch.bfloat16)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        v0 = (x >= 0.5).to(x.dtype) * (x - 0.5)  # [1, 1, 1]
        return v0


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1110)
    x = torch.randn(1, 2, 4, generator=g, dtype=torch.bfloat16)[:, ::2, 1:2]
    ids = torch.randint(0, 1, (1, 1), generator=g)
    return (x, ids)
