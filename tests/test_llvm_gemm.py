"""GEMMs of a weight written straight into their destination by a native matmul
(`backends/llvm/gemm.py`, `backends/llvm/matmul.py`): a kernel output, or an input read
through a transposed view (a NCHW map as [pixels, channels])."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import compiler


def check(model: nn.Module, *inputs: torch.Tensor) -> str:
    report = compiler.check_parity(model.eval(), inputs, backends=("llvm",))
    assert report.ok, f"\n{report}"
    return report.compiled.source("llvm")


class ProjIn(nn.Module):
    """A spatial transformer's proj_in: NCHW -> [B, H*W, C] (a transposed view) -> Linear."""

    def __init__(self, c: int, out: int, bias: bool) -> None:
        super().__init__()
        self.proj = nn.Linear(c, out, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.proj(x.permute(0, 2, 3, 1).reshape(b, h * w, c)) * 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_transposed_input_is_read_in_place(dtype: torch.dtype, bias: bool) -> None:
    src = check(ProjIn(24, 37, bias).to(dtype), torch.randn(1, 24, 5, 7).to(dtype))
    assert "A strides (0, 1, 35)" in src and "native GEMM into its destination" in src


def test_batched_transposed_input_does_not_merge() -> None:
    src = check(ProjIn(24, 16, True), torch.randn(2, 24, 3, 5))
    assert "native GEMM into its destination" not in src


class Heads(nn.Module):
    """Q, K, V projections: kernel outputs; `transposed`: HF Conv1D's x @ w."""

    def __init__(self, transposed: bool) -> None:
        super().__init__()
        self.transposed = transposed
        self.w = nn.ParameterList([nn.Parameter(torch.randn(40, 40) / 7) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (x @ w if self.transposed else x @ w.t() for w in self.w)
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


@pytest.mark.parametrize("transposed", [True, False])
def test_kernel_output_gemm_writes_its_buffer(transposed: bool) -> None:
    x = torch.randn(2, 19, 40)
    src = check(Heads(transposed), x)
    assert "native GEMM into its destination" in src and ".copy_(torch.ops.mkl" not in src
    assert ("W.transposed(" in src) != transposed  # x @ w reads w [K, N] as it is
    check(Heads(transposed).to(torch.bfloat16), x.bfloat16())


def test_weights_are_prepared_largest_first_before_the_first_call() -> None:
    # Note [Preparing weights up front]: one W call per weight, the largest first
    torch.manual_seed(0)
    layers = [nn.Linear(16, 24), nn.GELU(), nn.Linear(24, 64), nn.GELU(), nn.Linear(64, 8)]
    model = nn.Sequential(*layers, nn.GELU()).eval()  # epilogues: every weight packed
    x = torch.randn(4, 16)
    c = compiler.compile(model, (x,), backend="llvm")
    source = c.source("llvm")
    prepare = source[source.index("def prepare_weights(") :].split("\n\n\n")[0]
    calls = [line.strip() for line in prepare.splitlines() if line.strip().startswith("W.")]
    assert [call.split("(")[1].split(",")[0] for call in calls] == [
        "a_arg_3",  # the second Linear's weight, 64 x 24
        "a_arg_5",  # the third's, 8 x 64
        "a_arg_1",  # the first's, 24 x 16
    ], prepare
    with torch.no_grad():
        want = model(x)
    for _ in range(2):  # the first call prepares, the second finds them prepared
        torch.testing.assert_close(c(x), want, rtol=1e-5, atol=1e-5)


class Conv1D(nn.Module):
    """Hugging Face GPT-2's Conv1D: x @ w + b, the weight stored [in, out]."""

    def __init__(self, nx: int, nf: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.1)
        self.bias = nn.Parameter(torch.randn(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


@pytest.mark.parametrize("layer", ["linear", "conv1d"])
def test_a_bias_goes_into_the_gemm(layer: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Note [A bias into the GEMM]: out = x @ w.T + b as one addmm into a large output
    from backends.llvm import gemm as llvm_gemm

    torch.manual_seed(0)
    model = nn.Linear(40, 24) if layer == "linear" else Conv1D(40, 24)
    x = torch.randn(3, 7, 40)
    small = check(model, x)
    assert "bias into the output" not in small and "packed GEMM" in small, small
    monkeypatch.setattr(llvm_gemm, "BIAS_GEMM_MIN_BYTES", 3 * 7 * 24 * 4)
    source = check(model, x)
    assert "native GEMM and bias into the output" in source, source
    assert "tf_add_" not in source, source


def test_a_bias_with_more_after_it_stays_in_the_epilogue(monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.llvm import gemm as llvm_gemm

    monkeypatch.setattr(llvm_gemm, "BIAS_GEMM_MIN_BYTES", 0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 24), nn.GELU())
    source = check(model, torch.randn(3, 7, 40))
    assert "bias into the output" not in source, source


PACKED = {"mkl": "torch.ops.mkl._mkl_linear(", "onednn": "torch.ops.mkldnn._linear_pointwise("}


@pytest.mark.parametrize("library", ["mkl", "onednn"])
def test_one_row_is_not_packed(library: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Note [No packing for one row]: a timestep MLP's product reads the weight as it is
    monkeypatch.setenv("TILEFUSE_GEMM", library)
    model = nn.Sequential(nn.Linear(48, 64), nn.SiLU(), nn.Linear(64, 32)).eval()
    one = check(model, torch.randn(1, 48))
    assert "_mkl_linear" not in one and "_linear_pointwise" not in one and "W." not in one
    assert one.count("torch.matmul(") == 2
    assert PACKED[library] in check(model, torch.randn(3, 48))  # more rows: packed


@pytest.mark.parametrize("library", ["mkl", "onednn"])
@pytest.mark.parametrize("layer", ["linear", "conv1d"])
def test_packed_gemm_of_either_library(
    library: str, layer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Note [Which GEMM library]: TILEFUSE_GEMM picks the library; both compute the same GEMM,
    # nn.Linear's x @ w.T and HF Conv1D's x @ w, ragged sizes
    monkeypatch.setenv("TILEFUSE_GEMM", library)
    torch.manual_seed(0)
    model = nn.Linear(37, 29) if layer == "linear" else Conv1D(37, 29)
    source = check(nn.Sequential(model, nn.GELU()), torch.randn(2, 5, 37))
    assert PACKED[library] in source and "(weights packed once)" in source, source
    other = PACKED["onednn" if library == "mkl" else "mkl"]
    assert other not in source, source


def test_gemm_library_auto_follows_the_cpu_vendor(monkeypatch: pytest.MonkeyPatch) -> None:
    from backends.llvm import gemm as llvm_gemm

    monkeypatch.setenv("TILEFUSE_GEMM", "auto")
    for vendor, want in [("GenuineIntel", "mkl"), ("AuthenticAMD", "onednn")]:
        monkeypatch.setattr(llvm_gemm, "cpu_fields", lambda v=vendor: {"vendor_id": v})
        assert llvm_gemm.library() == want
    monkeypatch.setattr(llvm_gemm, "cpu_fields", lambda: {"vendor_id": "GenuineIntel"})
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: False)
    assert llvm_gemm.library() == "onednn"  # the other library where torch lacks the one
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert llvm_gemm.library() is None
    monkeypatch.setenv("TILEFUSE_GEMM", "openblas")
    with pytest.raises(ValueError, match="TILEFUSE_GEMM must be one of auto, mkl, onednn"):
        llvm_gemm.library()
