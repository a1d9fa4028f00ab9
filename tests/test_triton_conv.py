"""The Triton implicit-GEMM conv2d template under TRITON_INTERPRET=1 against torch (float64
reference; the parity rule), and conv2d KernelSpecs through the program against the
numpy backend and eager. Repro: pytest tests/test_triton_conv.py"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backends.triton.conv import ConvKernel, render_conv
from backends.triton.targets import load_module
from compiler.core.tile_config import TileConfig
from tests.test_triton_matmul import DTYPES, _rand, assert_parity, check_program

# (kernel, stride, padding, H, split_k, groups)
CASES = {
    "1x1": (1, 1, 0, 9, 1, 1),
    "3x3-s1": (3, 1, 1, 9, 1, 1),
    "3x3-s2-splitk": (3, 2, 1, 11, 2, 1),
    "patchify-2": (2, 2, 0, 8, 1, 1),
    "3x3-groups2": (3, 1, 1, 7, 1, 2),
}


def tile(split: int) -> TileConfig:
    blocks = (("BLOCK_M", 32), ("BLOCK_N", 16), ("BLOCK_K", 16))
    return TileConfig(blocks, num_warps=4, num_stages=2, split_k=split, group_m=4)


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("case", list(CASES))
def test_conv_bias_time_embedding_residual(case: str, dtype: str) -> None:
    """Ragged sizes (Cin 6, Cout 10, odd images), bias, then a [N, C, 1, 1] time-embedding
    add and a residual add in the epilogue."""
    ks, st, pad, H, split, groups = CASES[case]
    g = torch.Generator().manual_seed(0)
    dt = DTYPES[dtype]
    x = torch.randn(2, 6, H, H, generator=g).to(dt)
    w = (torch.randn(10, 6 // groups, ks, ks, generator=g) / 4).to(dt)
    b = torch.randn(10, generator=g).to(dt)

    def model(x, w, b, temb, res):
        return F.conv2d(x, w, b, stride=st, padding=pad, groups=groups) + temb + res

    shape = F.conv2d(x.double(), w.double(), stride=st, padding=pad, groups=groups).shape
    temb = torch.randn(2, 10, 1, 1, generator=g).to(dt)
    res = torch.randn(shape, generator=g).to(dt)
    out = torch.empty(shape, dtype=dt)
    kernel = ConvKernel(
        dtype=dtype, kernel=(ks, ks), stride=(st, st), padding=(pad, pad), split_k=split,
        epilogue=("acc = acc + temb + res",), epilogue_inputs=("temb", "res"),
    )  # fmt: skip
    load_module(render_conv(kernel, tile(split)), interpret=True).launch(x, w, out, b, temb, res)
    ref = model(x.double(), w.double(), b.double(), temb.double(), res.double())
    assert_parity(out, ref, model(x, w, b, temb, res), dtype)


def test_conv_without_bias_channels_last_input() -> None:
    """No bias; the input is a channels-last view (strides, not a copy)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 8, 6, 6, generator=g).half().to(memory_format=torch.channels_last)
    w = (torch.randn(12, 8, 3, 3, generator=g) / 4).half()
    out = torch.empty(1, 12, 6, 6, dtype=torch.float16)
    kernel = ConvKernel(dtype="fp16", padding=(1, 1), bias=False)
    load_module(render_conv(kernel, tile(1)), interpret=True).launch(x, w, out)
    ref = F.conv2d(x.double(), w.double(), padding=1)
    assert_parity(out, ref, F.conv2d(x, w, padding=1), "fp16")


# --- conv2d KernelSpecs through the program


@pytest.mark.parametrize(("dtype", "split"), [("fp32", 1), ("fp16", 1), ("bf16", 2)])
def test_program_resnet_conv_time_embedding_silu(dtype: str, split: int) -> None:
    """unet's ResNet conv: 3x3 pad 1 + bias, the [N, C] time embedding added per channel,
    SiLU, a residual; ragged channels and image."""
    dt = DTYPES[dtype]
    x, w = _rand(2, 6, 7, 9, dtype=dt), _rand(10, 6, 3, 3, seed=1, scale=0.25, dtype=dt)
    b, temb, res = (_rand(*s, seed=i, dtype=dt) for i, s in
                    ((2, (10,)), (3, (2, 10)), (4, (2, 10, 7, 9))))  # fmt: skip

    def fn(x, w, b, temb, res):
        return F.silu(F.conv2d(x, w, b, padding=1) + temb[:, :, None, None]) + res

    c, prog = check_program(fn, (x, w, b, temb, res), tile(split))
    (k,) = c.kernels
    assert k.kind == "conv2d" and "silu" in k.name
    assert (f"def {k.name}_reduce(" in prog.source) == (split > 1)


def test_program_downsample_with_residual_prologue() -> None:
    """unet's downsampler reads `proj_out + residual` (in NCHW from a [B, HW, C] tensor):
    the add and the layout change are computed on the A gather; stride 2, padding 1."""
    h, res = _rand(1, 49, 8, dtype=torch.float16), _rand(1, 8, 7, 7, seed=1, dtype=torch.float16)
    w = _rand(6, 8, 3, 3, seed=2, scale=0.2, dtype=torch.float16)
    b = _rand(6, seed=3, dtype=torch.float16)

    def fn(h, res, w, b):
        x = h.reshape(1, 7, 7, 8).permute(0, 3, 1, 2) + res
        return F.conv2d(x, w, b, stride=2, padding=1)

    c, _ = check_program(fn, (h, res, w, b), tile(1))
    assert [k.kind for k in c.kernels][-1] == "conv2d"


@pytest.mark.parametrize("case", ["patchify", "groups-1x1"])
def test_program_patchify_and_grouped_convs(case: str) -> None:
    """DiT's patch embedding (2x2 stride 2) and a grouped 1x1 conv without bias."""
    x = _rand(2, 4, 8, 8)
    if case == "patchify":
        w, b = _rand(12, 4, 2, 2, seed=1, scale=0.3), _rand(12, seed=2)
        check_program(lambda x, w, b: F.conv2d(x, w, b, stride=2), (x, w, b), tile(1))
    else:
        w = _rand(6, 2, 1, 1, seed=1)
        check_program(lambda x, w: F.conv2d(x, w, groups=2), (x, w), tile(1))
