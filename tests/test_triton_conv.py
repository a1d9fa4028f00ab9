"""The Triton implicit-GEMM conv2d template under TRITON_INTERPRET=1 against torch (float64
reference; the DESIGN parity rule). Repro: pytest tests/test_triton_conv.py"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backends.triton_conv import ConvKernel, render_conv
from backends.triton_targets import load_module
from passes.tile_config import TileConfig
from tests.test_triton_matmul import DTYPES, assert_parity

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
