"""Edge cases where a compiled program must compute what eager computes: input names, Python
scalars in 16-bit arithmetic, rounding before casts, folded constants, exact constants in
recognition, fusion boundaries, current weights through closures, infinities in parity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compiler


def _same(fn, *args, atol: float = 1e-5, rtol: float = 1e-5, **kwargs) -> compiler.Compiled:
    c = compiler.compile(fn, args, kwargs or None, backend="numpy")
    want, got = fn(*args, **kwargs), c(*args, **kwargs)
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol, equal_nan=True)
    return c


def test_input_names_cannot_collide_with_generated_names() -> None:
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))
            self.v0 = nn.Parameter(torch.randn(4))
            self.np = nn.Parameter(torch.randn(4))

        def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            return x @ self.w + self.v0 * self.np + ref

    with torch.no_grad():
        _same(M(), torch.randn(2, 4), torch.randn(4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_python_scalars_stay_exact_in_16_bit_arithmetic(dtype: torch.dtype) -> None:
    x = torch.tensor([1e-3, 2e-3, -5e-4]).to(dtype)
    _same(lambda x: x * 1e5, x, atol=0.5, rtol=1e-2)  # 1e5 is inf in f16: must not round it


def test_folded_constants_round_like_the_program() -> None:
    _same(lambda x: x + (torch.arange(0, 3, 0.7) * 10).long(), torch.zeros(5, dtype=torch.long))
    _same(lambda x: x.masked_fill(torch.arange(0, 1, 0.1) < 0.3, 0), torch.ones(10))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rms_norm_default_eps_is_float32s(dtype: torch.dtype) -> None:
    x = (torch.randn(3, 4) * 1e-2).to(dtype)
    _same(lambda x: F.rms_norm(x, (4,)), x, atol=2e-2, rtol=2e-2)


def test_zero_dim_tensor_constants() -> None:
    _same(lambda x: x * torch.tensor(0.5), torch.randn(3))


def test_max_and_min_without_dim() -> None:
    _same(lambda x: x / x.abs().max() + torch.min(x), torch.randn(3, 4))


def test_sign_of_zero_survives_add_zero() -> None:
    _same(lambda x: 1 / (x + 0.0), torch.tensor([-0.0, 2.0]))


def test_recognition_needs_the_exact_constants() -> None:
    def almost_adaln(x, s, sh):
        return x * (s + 1.00005) + sh

    c = _same(almost_adaln, torch.full((2, 3), 1000.0), torch.zeros(2, 3), torch.zeros(2, 3))
    assert "adaln_modulate" not in c.graph.op_counts()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_values_round_before_a_cast_to_int(dtype: torch.dtype) -> None:
    x = torch.tensor([2.1, 3.3, 0.7, 1.9]).to(dtype)
    _same(lambda x: (x * 10).long(), x)


def test_dependent_matmuls_are_not_horizontal() -> None:
    a, h = torch.randn(4, 4), torch.randn(4, 4)
    c = _same(lambda a, h: a @ (a @ h), a, h)
    assert len(c.kernels) == 2


def test_reduction_does_not_absorb_a_larger_prologue_read_elsewhere() -> None:
    def pooled(x, a, w):
        h = x + a
        return F.layer_norm(h[:, 0], (8,)), h @ w

    c = _same(pooled, torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(8, 8))
    norm = next(k for k in c.kernels if "layer_norm" in k.name)
    assert all(k.type_of(o).shape == (2, 8) for o in norm.outputs for k in [norm])


def test_bound_methods_and_closures_read_current_weights() -> None:
    m = nn.Linear(4, 4)
    x = torch.randn(2, 4)
    bound = compiler.compile(m.forward, (x,), backend="numpy")
    closure = compiler.compile(lambda x: m(x) * 2, (x,), backend="numpy")
    with torch.no_grad():
        m.weight.add_(1.0)
        torch.testing.assert_close(bound(x), m(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(closure(x), m(x) * 2, atol=1e-5, rtol=1e-5)


def test_parity_accepts_infinities_where_eager_has_them() -> None:
    x = torch.tensor([1.0, -2.0, 3.0])
    assert compiler.check_parity(lambda x: x.masked_fill(x > 0, -math.inf), (x,)).ok
    assert compiler.check_parity(lambda x: torch.log(x.abs() - 1), (x,)).ok


def test_addmm_with_beta_zero_ignores_the_bias() -> None:
    b = torch.full((3,), float("nan"))
    _same(lambda b, x, w: torch.addmm(b, x, w, beta=0), b, torch.randn(2, 4), torch.randn(4, 3))


@pytest.mark.parametrize("backend", ["numpy", "llvm", "triton"])
def test_f16_partial_results_beyond_f16_range_accumulate_as_eager(backend: str) -> None:
    """Eager accumulates f16 sums, products and norm statistics in float32: partial results
    past 65504 (f16's largest) must not overflow to inf in a compiled program either."""
    big = torch.tensor([[60000.0, 60000.0, -60000.0, 100.0]], dtype=torch.float16)
    cases = [
        (lambda x: x.sum(-1), (big,)),
        (lambda x: F.layer_norm(x, (4,)), (big / 100,)),  # x^2 of 600: past f16's range
        (lambda a, b: a @ b, (big, torch.ones(4, 2, dtype=torch.float16))),
    ]
    for fn, args in cases:
        want = fn(*args)
        assert torch.isfinite(want).all()
        got = compiler.compile(fn, args, backend=backend)(*args)
        torch.testing.assert_close(got, want, rtol=2e-3, atol=1e-2)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_inputs_in_any_layout_are_read_as_eager(backend: str) -> None:
    """Non-contiguous, transposed and channels_last inputs, compiled for one layout and
    called with another."""

    def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, w, padding=1).relu() + x.mean()

    x, w = torch.randn(2, 8, 6, 6), torch.randn(4, 8, 3, 3)
    c = compiler.compile(conv, (x.to(memory_format=torch.channels_last), w), backend=backend)
    for layout in (
        x,
        x.to(memory_format=torch.channels_last),
        x.transpose(2, 3).contiguous().transpose(2, 3),
    ):
        torch.testing.assert_close(c(layout, w), conv(x, w), rtol=1e-4, atol=1e-4)
    mm = compiler.compile(
        lambda a, b: a @ b + 1, (torch.randn(4, 8), torch.randn(8, 3)), backend=backend
    )
    a, b = torch.randn(8, 4).t(), torch.randn(3, 16)[:, ::2].t()  # transposed, strided
    torch.testing.assert_close(mm(a, b), a @ b + 1, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_an_input_on_another_device_is_named(backend: str) -> None:
    c = compiler.compile(lambda x: x * 2, (torch.ones(3),), backend=backend)
    with pytest.raises(compiler.InputMismatchError, match=r"input 0: a tensor on meta, and the"):
        c(torch.ones(3, device="meta"))
