"""Convolutions on the llvm backend. 1x1: one MKL GEMM. Winograd F(2x2,3x3): the native
output transform writes the NCHW output directly and computes an epilogue of adds (bias, a
broadcast time embedding, residuals read through strided views); anything else keeps its own
native part."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import compiler


def check(model: nn.Module, *inputs: torch.Tensor) -> str:
    report = compiler.check_parity(model.eval(), inputs, backends=("llvm",))
    assert report.ok, f"\n{report}"
    return report.compiled.source("llvm")


class ConvAdds(nn.Module):
    """conv(x) + temb[:, :, None, None] + r[..] (a slice of r), as a ResNet block writes it."""

    def __init__(self, c: int, oc: int, padding: int, bias: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, oc, 3, padding=padding, bias=bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        h, w = y.shape[2:]
        return r[:, :, 1 : 1 + h, 2 : 2 + w] + (y + temb[:, :, None, None])


@pytest.mark.parametrize(
    ("size", "padding", "bias"), [(8, 1, True), (11, 1, False), (9, 0, True), (13, 2, True)]
)
def test_epilogue_of_adds_is_fused_into_the_output_transform(
    size: int, padding: int, bias: bool
) -> None:
    model = ConvAdds(32, 40, padding, bias)
    out = size + 2 * padding - 2
    x, temb = torch.randn(2, 32, size, size), torch.randn(2, 40)
    r = torch.randn(2, 40, out + 3, out + 4)
    src = check(model, x, temb, r)
    assert "native output transform + 2 addends" in src
    assert "Winograd F(2x2,3x3) output transform" in src


def test_epilogue_reading_the_width_with_a_stride_keeps_its_own_part() -> None:
    class Transposed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(32, 32, 3, padding=1)

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + r.transpose(2, 3)

    src = check(Transposed(), torch.randn(1, 32, 10, 10), torch.randn(1, 32, 10, 10))
    assert "native output transform" in src and "addends" not in src


def test_convolution_read_twice_is_not_fused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(32, 32, 3, padding=1)

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.conv(x)
            return y + r, y * 2

    src = check(Twice(), torch.randn(1, 32, 9, 9), torch.randn(1, 32, 9, 9))
    assert "addends" not in src


def test_non_add_epilogue_keeps_its_own_part() -> None:
    class Silu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(32, 32, 3, padding=1)

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.silu(self.conv(x) + r)

    src = check(Silu(), torch.randn(1, 32, 12, 12), torch.randn(1, 32, 12, 12))
    assert "addends" not in src


def test_bfloat16_convolution_with_adds() -> None:
    model = ConvAdds(32, 32, 1, True).to(torch.bfloat16)
    x, temb = torch.randn(1, 32, 9, 9).bfloat16(), torch.randn(1, 32).bfloat16()
    check(model, x, temb, torch.randn(1, 32, 12, 13).bfloat16())


@pytest.mark.parametrize(("batch", "bias"), [(1, True), (1, False), (3, True)])
def test_pointwise_convolution_is_one_gemm(batch: int, bias: bool) -> None:
    class Shortcut(nn.Module):  # a ResNet block's conv_shortcut, on a sliced (strided) input
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(24, 40, 1, bias=bias)

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return self.conv(x[:, :, 1:, :-2]) + r

    x, r = torch.randn(batch, 24, 7, 11), torch.randn(batch, 40, 6, 9)
    src = check(Shortcut(), x, r)
    assert "1x1 convolution as an MKL GEMM" in src
    check(Shortcut().to(torch.bfloat16), x.bfloat16(), r.bfloat16())
