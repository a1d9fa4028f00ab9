"""check_parity: the rule, the report, and that it catches a wrong kernel."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

import compiler
from compiler.core.ops import OPS
from compiler.parity_rule import RTOL_FLOOR, compare, reference_f64


def mlp(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.gelu(x @ w, approximate="tanh").softmax(-1)


def inputs(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 8, generator=g).to(dtype), torch.randn(8, 16, generator=g).to(dtype)


def test_passes_and_prints_a_table() -> None:
    report = compiler.check_parity(mlp, inputs())
    assert report.ok
    text = str(report)
    assert "max abs err" in text and "budget" in text and text.rstrip().endswith("PASS")
    assert report.to_dict()["rows"][0]["backend"] == "numpy"


@pytest.mark.parametrize(
    ("op", "wrong"),
    [
        ("gelu", "ref.gelu({0}, approximate='none')"),  # the erf form instead of tanh
        ("softmax", "ref.softmax({0}, dim=0)"),  # the wrong axis
        ("matmul", "np.matmul({0}, {1}) * 1.001"),  # a small scaling error
    ],
)
def test_a_wrong_op_implementation_fails(
    monkeypatch: pytest.MonkeyPatch, op: str, wrong: str
) -> None:
    monkeypatch.setitem(OPS, op, dataclasses.replace(OPS[op], numpy=wrong))
    report = compiler.check_parity(mlp, inputs())
    assert not report.ok
    assert "FAIL" in str(report)


def test_budget_follows_the_rule() -> None:
    ref = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    eager = torch.tensor([1.0, -2.0, 4.001], dtype=torch.bfloat16)
    out = torch.tensor([1.0, -2.0, 4.0], dtype=torch.bfloat16)
    row = compare("y", "numpy", out, eager, ref)
    eager_err = float((eager.double() - ref).abs().max())
    assert row.budget == pytest.approx(2 * eager_err + RTOL_FLOOR[torch.bfloat16] * 4.0)
    assert row.ok


def test_integer_outputs_must_match_exactly() -> None:
    row = compare(
        "ids", "numpy", torch.tensor([1, 2, 4]), torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3])
    )
    assert not row.ok and "1 elements differ" in row.note


def test_nan_fails() -> None:
    ref = torch.tensor([1.0, 2.0], dtype=torch.float64)
    row = compare("y", "numpy", torch.tensor([1.0, float("nan")]), ref.float(), ref)
    assert not row.ok and "NaN" in row.note


def test_shape_mismatch_fails() -> None:
    ref = torch.zeros(2, 3, dtype=torch.float64)
    row = compare("y", "numpy", torch.zeros(3, 2), ref.float(), ref)
    assert not row.ok and "[3, 2]" in row.note


def test_reference_widens_the_float32_a_model_pins() -> None:
    """Timestep embeddings pin float32; the reference must still be float64 there, or eager's
    own error reads as zero and the budget is blind to it."""

    def embed(t: torch.Tensor) -> torch.Tensor:
        freqs = torch.exp(-9.2 * torch.arange(16, dtype=torch.float32) / 16)
        return torch.cos(t[:, None].float() * freqs)

    t = torch.tensor([999])
    ref = reference_f64(embed, (t,), {})
    assert ref.dtype == torch.float64
    exact = torch.cos(t[:, None].double() * torch.exp(-9.2 * torch.arange(16).double() / 16))
    torch.testing.assert_close(ref, exact, rtol=1e-12, atol=1e-12)
    assert torch.get_default_dtype() == torch.float32  # restored


def test_a_wrong_kernel_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break one fused kernel (not the op semantics): parity fails and bisection names it."""
    from backends.numpy import kernels as numpy_kernels

    real = numpy_kernels.render_kernel

    def broken(k, float_dtype):  # the gelu kernel writes a 1% larger result
        lines = real(k, float_dtype)
        if "gelu" in k.name:
            lines = [ln + " * 1.01" if ln.lstrip().startswith("out_") else ln for ln in lines]
        return lines

    monkeypatch.setattr(numpy_kernels, "render_kernel", broken)
    report = compiler.check_parity(mlp, inputs())
    assert not report.ok
    d = report.divergences["numpy"]
    assert "gelu" in d.kernel and d.kernel.startswith("k")
    text = str(report)
    assert f"first kernel that diverged: {d.kernel}" in text
    assert "gelu(" in text  # the kernel's IR is printed with it


def test_no_divergence_reported_when_parity_holds() -> None:
    report = compiler.check_parity(mlp, inputs())
    assert report.ok and report.divergences == {}


@pytest.mark.usefixtures("quiet_interpreter")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bisection_reads_every_kernel_output_whatever_the_reference_layout(
    dtype: torch.dtype,
) -> None:
    """A reference value can be a transposed view (a convolution's output is): each kernel
    still writes into the array bisection compares, so a correct program has no divergence.
    In bf16 too: a per-kernel program keeps floats unrounded as the reference does."""
    from compiler.bisect import bisect_kernels

    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 8, 1, 1, generator=g).to(dtype) * 0.35
    b = torch.randn(3, generator=g).to(dtype) * 0.1

    def conv_of_gelu(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.gelu(x, approximate="tanh"), w, b)

    x = torch.randn(2, 8, 1, 4, generator=g).to(dtype)
    for backend in ("numpy", "llvm", "triton"):
        c = compiler.compile(conv_of_gelu, (x,), backend=backend)
        assert not c.reference_values((x,), {})[c.graph.outputs[0]].flags.c_contiguous
        assert bisect_kernels(c, (x,), {}, backend) is None, backend
    # two kernels, a 16-bit value between them: per kernel, the reference's float32 values
    c = compiler.compile(lambda x: torch.softmax(x * 3, -1) @ x.T, (x[0, :, 0],), backend="numpy")
    assert bisect_kernels(c, (x[0, :, 0],), {}, "triton") is None


@pytest.mark.usefixtures("quiet_interpreter")
@pytest.mark.parametrize("backend", ["numpy", "llvm", "triton"])
def test_bisection_runs_kernels_that_check_indices(backend: str) -> None:
    """A kernel that gathers checks its indices; run alone, it is given its status words."""
    from compiler.bisect import bisect_kernels

    idx = torch.tensor([2, 0, 1])

    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.gelu(x[:, idx]) @ w

    args = (torch.randn(2, 3, 4), torch.randn(4, 5))
    c = compiler.compile(fn, args, backend="numpy")
    assert bisect_kernels(c, args, {}, backend) is None
