"""The Triton matmul template under TRITON_INTERPRET=1 against torch (float64 reference, the
parity rule against eager at the same dtype), and matmul KernelSpecs through the
program (`render_schedule`): against the numpy backend and eager, with their fused prologues
and epilogues, multi-output GEMMs and split-K. Repro: pytest tests/test_triton_matmul.py"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import compiler
from backends.triton import render as triton_backend
from backends.triton.matmul import MatmulKernel, render_matmul
from backends.triton.targets import load_module
from compiler.core.tile_config import TileConfig
from tests.helpers import program

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


# --- matmul KernelSpecs through the program

HEAVY = ("matmul", "conv2d", "attention")
NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
NEAR = {"fp32": 1e-5, "fp16": 2e-3, "bf16": 1.6e-2}  # vs the numpy oracle: ~2 ulp of max|out|


def _tuple(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def check_program(
    fn: Callable[..., Any], args: tuple, tile: TileConfig | None = None
) -> tuple[Any, triton_backend.TritonProgram]:
    """`fn` compiled, its heavy kernels given `tile` (else the default profile's), the whole
    schedule rendered as one Triton program and run under the interpreter; every output
    against the numpy backend (the kernels' oracle) and, by the parity rule, eager."""
    c = compiler.compile(fn, args, backend="numpy")
    s = c.schedule
    if tile is not None:
        kernels = tuple(replace(k, tile=tile) if k.kind in HEAVY else k for k in s.kernels)
        s = replace(s, kernels=kernels)
    prog = program("triton", s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        outs = prog.load()(*c.torch_inputs(args, {}))  # floats passed as fp32 (the API's)
        stored = prog.load()(*args)  # and as stored: the same results
    for o, x in zip(outs, stored, strict=True):
        assert torch.equal(o, x)
    oracle = _tuple(c.run(args, backend="numpy"))
    eager = _tuple(fn(*args))
    ref = _tuple(fn(*(a.double() if a.is_floating_point() else a for a in args)))
    for o, n, e, r in zip(outs, oracle, eager, ref, strict=True):
        dtype = NAMES[e.dtype]
        assert o.dtype == e.dtype and o.shape == e.shape
        near = NEAR[dtype] * max(1.0, n.double().abs().max().item())
        assert (o.double() - n.double()).abs().max().item() <= near, "differs from numpy"
        assert_parity(o, r, e, dtype)
    return c, prog


def _rand(*shape: int, seed: int = 0, scale: float = 1.0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(dtype)


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
def test_program_linear_bias_gelu_residual(dtype: str, split: int) -> None:
    """Ragged M/N/K (2x37 rows, 29 columns, K 50 on 16x16x16 tiles), a transposed weight,
    bias + tanh-GELU + residual fused; split-K through the workspace and its reduce pass."""
    dt = DTYPES[dtype]
    x, w = _rand(2, 37, 50, dtype=dt), _rand(29, 50, seed=1, scale=1 / 7, dtype=dt)
    b, r = _rand(29, seed=2, dtype=dt), _rand(2, 37, 29, seed=3, dtype=dt)

    def fn(x, w, b, r):
        return F.gelu(F.linear(x, w, b), approximate="tanh") + r

    c, prog = check_program(fn, (x, w, b, r), tile(16, 16, 16, split))
    (k,) = c.kernels
    assert k.name == "k0_fused_matmul_add_gelu"
    assert all(f"# {line}" in prog.source for line in str(k).splitlines())  # its IR header
    assert (f"def {k.name}_reduce(" in prog.source) == (split > 1)
    assert ('input_precision="ieee"' in prog.source) == (dtype == "fp32")
    assert ("if DOT_F32:" in prog.source) == (dtype == "bf16")
    assert "torch.matmul" not in prog.source and "F.linear" not in prog.source


@pytest.mark.parametrize(("dtype", "split"), [("fp32", 1), ("bf16", 2), ("fp16", 1)])
def test_program_dual_gemm_swiglu(dtype: str, split: int) -> None:
    """LLaMA's MLP gate: silu(x @ w_gate) * (x @ w_up) is one dual GEMM (two accumulators
    over one A tile), the SwiGLU in its epilogue."""
    dt = DTYPES[dtype]
    x = _rand(19, 40, dtype=dt)
    wg, wu = _rand(40, 24, seed=1, scale=0.2, dtype=dt), _rand(40, 24, seed=2, scale=0.2, dtype=dt)
    c, prog = check_program(lambda x, g, u: F.silu(x @ g) * (x @ u), (x, wg, wu),
                            tile(16, 16, 16, split))  # fmt: skip
    (k,) = c.kernels
    assert "matmul_x2" in k.name and "swiglu" in k.name
    assert "acc2 = tl.dot(a, b2, acc2" in prog.source


def test_program_joint_n_gemms_with_epilogues() -> None:
    """Q/K/V of different widths (GQA) from one A are one GEMM over the joint N; each output
    runs its own epilogue on its columns; split-K."""
    x = _rand(2, 11, 40, dtype=torch.float16)
    wq, wk, wv = (_rand(40, n, seed=i, scale=0.2, dtype=torch.float16) for i, n in
                  ((1, 32), (2, 16), (3, 16)))  # fmt: skip

    def fn(x, wq, wk, wv):
        q, k, v = x @ wq, x @ wk, x @ wv
        return q * 0.5, k, v + 1.0

    c, prog = check_program(fn, (x, wq, wk, wv), tile(16, 16, 16, 2))
    (k,) = c.kernels
    assert "matmul_x3" in k.name and len(k.outputs) == 3
    assert "one GEMM over the joint N of 3 GEMMs" in prog.source


def test_program_timestep_embedding_and_silu_prologues() -> None:
    """The diffusion time embedding: sinusoidal features computed on the A tile (cos/sin of
    t times a folded frequency table), then linear + SiLU; the next GEMM reads SiLU'd A."""
    t = torch.tensor([3.0, 500.0])
    w1, b1 = _rand(48, 32, seed=1, scale=0.2), _rand(48, seed=2)
    w2, b2 = _rand(24, 48, seed=3, scale=0.2), _rand(24, seed=4)

    def fn(t, w1, b1, w2, b2):
        freqs = torch.exp(-9.2 * torch.arange(16, dtype=torch.float32) / 16)
        angle = t[:, None] * freqs[None, :]
        emb = torch.cat([torch.cos(angle), torch.sin(angle)], -1)
        h = F.silu(F.linear(emb, w1, b1))
        return F.linear(F.silu(h), w2, b2)

    c, prog = check_program(fn, (t, w1, b1, w2, b2), tile(16, 16, 16))
    assert [k.kind for k in c.kernels] == ["matmul", "matmul"]
    assert "cos_(" in prog.source and "tl.sigmoid(" in prog.source


def test_program_geglu_prologue_and_strided_operand() -> None:
    """unet's feed-forward: GEGLU of the first projection's two halves computed on the A tile
    of the second; the A of an output projection read through permute + reshape."""
    h = _rand(1, 23, 72, dtype=torch.float16)
    w = _rand(20, 36, seed=1, scale=0.2, dtype=torch.float16)
    o = _rand(1, 2, 23, 10, seed=2, dtype=torch.float16)  # attention output [B, H, L, D]
    wo = _rand(20, 20, seed=3, scale=0.2, dtype=torch.float16)

    def fn(h, w, o, wo):
        a, gate = h.chunk(2, dim=-1)
        ff = F.linear(a * F.gelu(gate), w)
        return ff + F.linear(o.transpose(1, 2).reshape(1, 23, 20), wo)

    c, _ = check_program(fn, (h, w, o, wo), tile(16, 16, 16))
    assert any("geglu" in str(k) for k in c.kernels if k.kind == "matmul")


def test_program_adaln_gate_epilogue_and_batched_bmm() -> None:
    """DiT: x + gate * (proj + b) with the gate a slice of the modulation vector; and a
    batched bmm (both operands batched over two dims)."""
    x, a = _rand(2, 9, 24, seed=1), _rand(2, 9, 24, seed=2)
    w, b, mod = _rand(24, 24, seed=3, scale=0.2), _rand(24, seed=4), _rand(2, 72, seed=5)
    q, kt = _rand(2, 3, 9, 16, seed=6), _rand(2, 3, 17, 16, seed=7)

    def fn(x, a, w, b, mod, q, kt):
        gate = mod[:, 48:72]
        return x + gate[:, None, :] * F.linear(a, w, b), q @ kt.transpose(-1, -2)

    check_program(fn, (x, a, w, b, mod, q, kt), tile(16, 16, 16))


def test_a_wrong_heavy_kernel_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_parity bisects through the Triton heavy kernels: a GEMM whose GELU epilogue is
    broken on purpose fails the check, and the report names that kernel, not the norm."""
    from backends.triton.ops import ELEMENTWISE

    monkeypatch.setitem(ELEMENTWISE, "gelu", "{0}")  # the activation dropped

    def fn(x, w, b):
        return F.layer_norm(F.gelu(x @ w + b), (24,))

    args = (_rand(6, 40), _rand(40, 24, seed=1, scale=0.3), _rand(24, seed=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        report = compiler.check_parity(fn, args, backends=("triton",))
    (matmul,) = [k for k in report.compiled.kernels if k.kind == "matmul"]
    assert not report.ok and len(report.compiled.kernels) == 2
    assert f"first kernel that diverged: {matmul.name}" in str(report.divergences["triton"])
