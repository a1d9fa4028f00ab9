"""Convolutions on the llvm backend. 1x1: a native GEMM per image. Winograd F(2x2,3x3): the native
output transform writes the NCHW output directly and computes an epilogue of adds (bias, a
broadcast time embedding, residuals read through strided views); anything else keeps its own
native part."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

import compiler
from backends.llvm import runtime as llvm_runtime
from backends.llvm import winograd as llvm_winograd
from compiler.core import config
from compiler.core.types import DType, TensorType


def winograd_scratch(src: str) -> int:
    """Bytes of the Winograd slots (V and M: float32 views `g_<conv>_v`, `g_<conv>_m`)."""
    shapes = re.findall(r"^g_\w+_[vm] = view\(arena, \(([\d, ]+)\), torch.float32", src, re.M)
    assert shapes, "no Winograd slots in the program"
    return sum(4 * math.prod(int(d) for d in shape.split(",")) for shape in shapes)


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
    assert "1x1 convolution as a native GEMM per image" in src
    check(Shortcut().to(torch.bfloat16), x.bfloat16(), r.bfloat16())


def test_weight_transform_in_blocks_is_the_whole_transform() -> None:
    w = torch.randn(37, 20, 3, 3)  # 37 output channels: blocks of 4 leave a ragged last one
    g = torch.tensor(llvm_runtime.WINOGRAD_G, dtype=torch.float64)
    whole = torch.einsum("ik,ockl,jl->ijoc", g, w.double(), g).reshape(16, 37, 20).float()
    for block_bytes in (1, 16 * 20 * 8 * 4, 1 << 30):
        assert torch.equal(llvm_runtime.winograd_weights(w, block_bytes), whole)


@pytest.mark.parametrize(
    ("batch", "size", "padding", "budget"),
    [(1, 32, 1, 2 << 20), (2, 13, 1, 96768), (3, 10, 0, 147456), (1, 9, 2, 1), (2, 8, 1, 1 << 30)],
)
def test_winograd_chunks_cover_every_tile_once_within_the_budget(
    batch: int, size: int, padding: int, budget: int
) -> None:
    c, oc = 32, 40
    x = TensorType((batch, c, size, size), DType.f32)
    ho, _, th, tw = llvm_winograd.tiles(x, (padding, padding))
    plan = llvm_winograd.chunks(x, oc, (padding, padding), budget)
    covered = [(ch.image + i, ch.row + r) for ch in plan for i in range(ch.band.images)
               for r in range(ch.band.rows)]  # fmt: skip
    assert sorted(covered) == [(i, r) for i in range(batch) for r in range(th)]
    for ch in plan:
        tiles = ch.band.images * ch.band.rows * tw
        assert 16 * (c + oc) * 4 * tiles <= budget or ch.band.rows == 1
        assert ch.band.out_rows == min(2 * ch.band.rows, ho - 2 * ch.row)
        assert ch.band.rows == th or ch.band.images == 1


@pytest.mark.parametrize(
    ("budget", "groups"), [(1 << 30, 1), (300000, 2), (225792, 2), (225791, 4), (112896, 4)]
)
def test_winograd_in_groups_of_rows_matches_eager_with_its_scratch_bounded(
    monkeypatch: pytest.MonkeyPatch, budget: int, groups: int
) -> None:
    # 13x13 with padding 1: 7 x 7 tiles, the last row and column half tiles; all 16 products
    # of the 2 x 49 tiles take 16 * (32 + 40) * 4 * 98 = 451584 bytes of V and M
    monkeypatch.setattr(config, "WINOGRAD_SCRATCH_BYTES", budget)
    monkeypatch.setattr(config, "WINOGRAD_SCRATCH_INPUTS", 1 << 20)  # the budget decides
    x = TensorType((2, 32, 13, 13), DType.f32)
    rows = llvm_winograd.row_groups(x, 40, (1, 1), budget)
    assert len(rows) == groups and [r for g in rows for r in g] == [0, 1, 2, 3]
    model = ConvAdds(32, 40, 1, True)
    src = check(model, torch.randn(2, 32, 13, 13), torch.randn(2, 40), torch.randn(2, 40, 16, 17))
    assert src.count("# native products") == groups and "for i, r in" not in src
    assert src.count("native output transform + 2 addends") == 1
    assert src.count("native output transform, added") == groups - 1
    if groups > 1:
        assert f"{groups} groups of {16 // groups} products" in src
    assert winograd_scratch(src) == 16 * 72 * 4 * 98 // groups


@pytest.mark.parametrize(
    ("batch", "size", "padding", "budget", "bands"),
    [
        (1, 13, 1, 24192, 2),  # 7 tile rows as 3 + 3 + 1, the last a half row (odd height)
        (2, 12, 1, 24192, 1),  # 6 tile rows as 3 + 3 per image: one module for all 4 chunks
        (3, 10, 0, 36864, 2),  # whole images, 2 + 1
        (1, 11, 2, 1, 2),  # one tile row at a time, the last a half row
    ],
)
def test_winograd_in_chunks_matches_eager_with_its_scratch_bounded(
    monkeypatch: pytest.MonkeyPatch, batch: int, size: int, padding: int, budget: int, bands: int
) -> None:
    # budgets too small for 4 groups of rows over all tiles: chunks of tiles, 4 products each
    monkeypatch.setattr(config, "WINOGRAD_SCRATCH_BYTES", budget)
    monkeypatch.setattr(config, "WINOGRAD_SCRATCH_INPUTS", 1 << 20)
    model = ConvAdds(32, 40, padding, True)
    out = size + 2 * padding - 2
    x, temb = torch.randn(batch, 32, size, size), torch.randn(batch, 40)
    src = check(model, x, temb, torch.randn(batch, 40, out + 3, out + 4))
    assert "native output transform + 2 addends" in src and "for i, r in" in src
    assert src.count("# native products") == 4 * bands and "4 groups of 4 products" in src
    assert winograd_scratch(src) <= max(budget, 4 * 72 * 4 * ((out + 1) // 2))


@pytest.mark.parametrize(("inputs", "groups"), [(4, 4), (5, 4), (6, 2), (10, 2), (11, 1)])
def test_winograd_scratch_is_bounded_by_its_input(
    monkeypatch: pytest.MonkeyPatch, inputs: int, groups: int
) -> None:
    # 2 x 32 x 13 x 13 floats in (43264 bytes); V and M: 451584 bytes whole, 225792 in 2 groups
    monkeypatch.setattr(config, "WINOGRAD_SCRATCH_INPUTS", inputs)
    x = TensorType((2, 32, 13, 13), DType.f32)
    budget = llvm_winograd.scratch_budget(x)
    assert budget == min(inputs * 43264, config.WINOGRAD_SCRATCH_BYTES)
    assert len(llvm_winograd.row_groups(x, 40, (1, 1), budget)) == groups
    src = check(ConvAdds(32, 40, 1, True), torch.randn(2, 32, 13, 13), torch.randn(2, 40),
                torch.randn(2, 40, 16, 17))  # fmt: skip
    assert winograd_scratch(src) == 451584 // groups <= max(budget, 451584 // 4)


@pytest.mark.parametrize(
    ("positions", "oc", "c", "count"),
    [(16, 40, 32, 64), (4, 37, 45, 77), (2, 8, 33, 20), (1, 3, 5, 50)],
)
def test_native_winograd_products_match_a_batched_matmul(
    positions: int, oc: int, c: int, count: int
) -> None:
    """M[k] = U[k] @ V[k] in register tiles: output channels past the last 8 (1-row tiles),
    tiles past the last 32 (masked loads and stores), and nothing written past M."""
    from backends.llvm import jit as llvm_jit
    from backends.llvm.runtime import NativeKernel

    mod = llvm_winograd.products("conv", positions, oc, c, count)
    llvm_jit.openmp()
    lib = llvm_jit.NativeLibrary([llvm_jit.compile_object(mod.ir)])
    kernel = NativeKernel(mod.symbol, lib.address(mod.symbol), mod)
    u, v = torch.randn(positions, oc, c), torch.randn(positions, c, count)
    out = torch.full((positions * oc * count + 16,), float("nan"))
    kernel(2, u, v, out)
    want = torch.bmm(u.double(), v.double()).float()
    torch.testing.assert_close(out[:-16].view(positions, oc, count), want, rtol=1e-5, atol=1e-4)
    assert out[-16:].isnan().all()


@pytest.mark.parametrize("kernel", [1, 3])
def test_float64_convolutions_use_torch(kernel: int) -> None:
    """The native kernels and oneDNN take float32 only: a float64 model's convolutions are
    `F.conv2d` (oneDNN raised on double before)."""
    model = nn.Conv2d(8, 16, kernel, padding=kernel // 2).double()
    src = check(model, torch.randn(2, 8, 9, 9, dtype=torch.float64))
    assert "F.conv2d(" in src and "native GEMM" not in src and "mkldnn" not in src
