"""The Triton matmul template under TRITON_INTERPRET=1 against torch (float64 reference, the
DESIGN parity rule against eager at the same dtype). Repro: pytest tests/test_triton_matmul.py"""

from __future__ import annotations

import pytest
import torch

from backends.triton_matmul import MatmulKernel, render_matmul
from backends.triton_targets import load_module
from passes.tile_config import TileConfig

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FLOOR = {"fp32": 1e-5, "fp16": 1e-3, "bf16": 8e-3}
# portable tanh-GELU (the interpreter has no libdevice): tanh(u) = 2 sigmoid(2u) - 1
GELU = (
    "acc = 0.5 * acc * (1.0 + (2.0 * tl.sigmoid(1.5957691216057308"
    " * (acc + 0.044715 * acc * acc * acc)) - 1.0))"
)


def assert_parity(out: torch.Tensor, ref: torch.Tensor, eager: torch.Tensor, dtype: str) -> None:
    err = (out.double() - ref).abs().max().item()
    eager_err = (eager.double() - ref).abs().max().item()
    budget = 2 * eager_err + FLOOR[dtype] * ref.abs().max().item()
    assert err <= budget, f"max error {err:.3g} > budget {budget:.3g} (eager {eager_err:.3g})"


def tile(bm: int, bn: int, bk: int, split: int = 1) -> TileConfig:
    blocks = (("BLOCK_M", bm), ("BLOCK_N", bn), ("BLOCK_K", bk))
    return TileConfig(blocks, num_warps=4, num_stages=2, split_k=split, group_m=2)


def run(kernel: MatmulKernel, t: TileConfig, *tensors: torch.Tensor) -> torch.Tensor:
    module = load_module(render_matmul(kernel, t), interpret=True)
    return module.launch(*tensors)


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_bias_gelu_residual_ragged_transposed(dtype: str, split: int) -> None:
    """Ragged M/N/K (37x29x50 on 16x16x16 tiles), B transposed by strides, batched A with a
    shared weight, bias + tanh-GELU + residual epilogue; split-K through the workspace."""
    g = torch.Generator().manual_seed(0)
    dt = DTYPES[dtype]
    a = torch.randn(2, 37, 50, generator=g).to(dt)
    w = (torch.randn(29, 50, generator=g) / 7).to(dt)  # [N, K]: the kernel reads w.t()
    bias = torch.randn(29, generator=g).to(dt)
    res = torch.randn(2, 37, 29, generator=g).to(dt)
    out = torch.empty(2, 37, 29, dtype=dt)
    k = MatmulKernel(
        dtype=dtype, split_k=split, epilogue=("acc = acc + bias", GELU, "acc = acc + res"),
        epilogue_inputs=("bias", "res"), row_vectors=("bias",),
    )  # fmt: skip
    run(k, tile(16, 16, 16, split), a, w.t(), out, bias, res)

    def model(a, w, bias, res):
        return torch.nn.functional.gelu(a @ w.t() + bias, approximate="tanh") + res

    ref = model(a.double(), w.double(), bias.double(), res.double())
    eager = model(a, w, bias, res)  # torch on CPU at the model dtype
    assert_parity(out, ref, eager, dtype)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_transposed_a_and_batched_b(dtype: str) -> None:
    """A transposed ([batch, K, M] storage), B batched (not shared): q @ k^T-like bmm."""
    g = torch.Generator().manual_seed(1)
    dt = DTYPES[dtype]
    at = torch.randn(3, 24, 19, generator=g).to(dt)  # [batch, K, M]
    b = torch.randn(3, 24, 33, generator=g).to(dt)
    out = torch.empty(3, 19, 33, dtype=dt)
    run(MatmulKernel(dtype=dtype), tile(16, 32, 16), at.transpose(1, 2), b, out)
    ref = at.double().transpose(1, 2) @ b.double()
    assert_parity(out, ref, at.transpose(1, 2) @ b, dtype)


@pytest.mark.parametrize("gate", ["swiglu", "geglu"])
@pytest.mark.parametrize("split", [1, 2])
def test_dual_gemm_gate(gate: str, split: int) -> None:
    """Two B operands share A; the epilogue combines both accumulators (SwiGLU/GEGLU)."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(1, 21, 40, generator=g).half()
    w_up = (torch.randn(40, 18, generator=g) / 6).half()
    w_gate = (torch.randn(40, 18, generator=g) / 6).half()
    out = torch.empty(1, 21, 18, dtype=torch.float16)
    act = (
        "acc2 * tl.sigmoid(acc2)"
        if gate == "swiglu"
        else GELU.split(" = ", 1)[1].replace("acc", "acc2")
    )
    k = MatmulKernel(dtype="fp16", n_b=2, split_k=split, epilogue=(f"acc = acc * ({act})",))
    run(k, tile(16, 16, 16, split), a, w_up, w_gate, out)
    f = torch.nn.functional

    def model(a, wu, wg):
        gated = a @ wg
        gated = f.silu(gated) if gate == "swiglu" else f.gelu(gated, approximate="tanh")
        return (a @ wu) * gated

    ref = model(a.double(), w_up.double(), w_gate.double())
    eager = model(a.float(), w_up.float(), w_gate.float()).half()
    assert_parity(out, ref, eager, "fp16")


def test_prologue_geglu_on_a_and_scale() -> None:
    """A prologue rewrites the A tile from two A-shaped inputs (the unet's GEGLU feeding
    ff_net_2: a = h[..., :F] * gelu(h[..., F:])), and an epilogue scale."""
    g = torch.Generator().manual_seed(3)
    h = torch.randn(1, 23, 2 * 36, generator=g).half()
    w = (torch.randn(36, 20, generator=g) / 6).half()
    out = torch.empty(1, 23, 20, dtype=torch.float16)
    gelu_gate = GELU.split(" = ", 1)[1].replace("acc", "gate")
    k = MatmulKernel(
        dtype="fp16",
        prologue=("gate = gate.to(tl.float32)", f"a = a.to(tl.float32) * ({gelu_gate})"),
        prologue_inputs=("gate",), epilogue=("acc = acc * 0.5",),
    )  # fmt: skip
    run(k, tile(16, 16, 16), h[..., :36], w, out, h[..., 36:])
    f = torch.nn.functional

    def model(h, w):
        return 0.5 * ((h[..., :36] * f.gelu(h[..., 36:], approximate="tanh")) @ w)

    ref = model(h.double(), w.double())
    eager = model(h.float(), w.float()).half()
    assert_parity(out, ref, eager, "fp16")


def test_module_is_self_contained_and_says_why() -> None:
    """The rendered module names the tile, the fp32 dot precision and the bf16 note."""
    fp32 = render_matmul(MatmulKernel(dtype="fp32"), tile(64, 64, 32))
    assert 'input_precision="ieee"' in fp32 and "if DOT_F32" not in fp32
    bf16 = render_matmul(MatmulKernel(dtype="bf16", split_k=2), tile(64, 64, 32, 2))
    assert "interpreter returns garbage from bf16 tl.dot" in bf16 and "if DOT_F32" in bf16
    assert "def k_matmul_reduce(" in bf16 and "tl.atomic" not in bf16
    assert "# tile (no profile): 64x64x32 s2 w4 split2" in bf16
    with pytest.raises(ValueError, match="split_k"):
        render_matmul(MatmulKernel(split_k=1), tile(64, 64, 32, 2))
