"""The public API: `compiler.compile`, the `Compiled` object, `compiler.jit`, backend and gpu
selection, and the errors a caller meets."""

from __future__ import annotations

import ast
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import nn

import compiler


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.nn.functional.gelu(self.fc(x)))


def _inputs(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(dtype)


@pytest.fixture(scope="module")
def model() -> Tiny:
    torch.manual_seed(0)
    return Tiny().eval()


@pytest.fixture(scope="module")
def compiled(model: Tiny) -> compiler.Compiled:
    return compiler.compile(model, (_inputs(2, 8),), backend="numpy")


def _eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


# ----------------------------------------------------------------------------- compile


def test_compile_returns_compiled_matching_eager(model: Tiny, compiled: compiler.Compiled) -> None:
    assert isinstance(compiled, compiler.Compiled)
    assert compiled.backend == "numpy"
    for seed in (0, 1):
        x = _inputs(2, 8, seed=seed)
        torch.testing.assert_close(compiled(x), _eager(model, x), atol=1e-5, rtol=1e-5)


def test_run_with_explicit_backend(model: Tiny, compiled: compiler.Compiled) -> None:
    x = _inputs(2, 8)
    torch.testing.assert_close(
        compiled.run((x,), backend="numpy"), _eager(model, x), atol=1e-5, rtol=1e-5
    )


def test_printed_graph_is_valid_python(compiled: compiler.Compiled) -> None:
    text = str(compiled.graph)
    tree = ast.parse(text)
    assert isinstance(tree.body[0], ast.FunctionDef)
    assert tree.body[0].name == compiled.graph.name == "Tiny"
    assert [a.arg for a in tree.body[0].args.args] == [v.name for v in compiled.graph.inputs]


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda x: x.sum() * 2, id="0-d"),
        pytest.param(lambda x: x + torch.tensor([1.0, 2.0, 3.0]), id="small-constant"),
        pytest.param(lambda x: x.reshape(-1) + torch.arange(48.0), id="large-constant"),
        pytest.param(lambda x: torch.where(x > 0, x, float("-inf")), id="infinity"),
    ],
)
def test_printed_graph_is_valid_python_with_scalars_and_constants(
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    x = _inputs(16, 3)
    c = compiler.compile(fn, (x,), backend="numpy")
    ast.parse(str(c.graph))
    torch.testing.assert_close(c(x), fn(x), atol=1e-5, rtol=1e-5)


def test_numpy_source(compiled: compiler.Compiled) -> None:
    source = compiled.source("numpy")
    assert "import numpy as np" in source
    assert "def Tiny(" in source  # the program: allocates the planned buffers, calls kernels
    for k in compiled.kernels:  # one function per kernel, its IR as the header comment
        assert f"def {k.name}(" in source
        for line in str(k).splitlines():
            assert f"    # {line}" in source, f"kernel IR line missing: {line}"
    assert compiled.source() == source
    ast.parse(source)


def test_triton_source_renders_every_kernel(compiled: compiler.Compiled) -> None:
    source = compiled.source("triton")
    assert any(k.kind == "matmul" for k in compiled.kernels)
    for k in compiled.kernels:  # a @triton.jit kernel and a launch function each
        assert f"def launch_{k.name}(" in source
    assert f"def {compiled.graph.name}(" in source  # the program over the memory plan
    ast.parse(source)


def test_stats(model: Tiny) -> None:
    x = _inputs(2, 8)
    c = compiler.compile(model, (x,), backend="numpy")
    assert c.stats["compiles"] == 1
    assert c.stats["calls"] == 0
    assert c.stats["capture_s"] > 0
    assert c.stats["compile_s"] > 0
    for n in (1, 2, 3):
        c(x)
        assert c.stats["calls"] == n
    assert c.stats["compiles"] == 1


# ----------------------------------------------------------------------------- input mismatches


def test_wrong_number_of_inputs(compiled: compiler.Compiled) -> None:
    x = _inputs(2, 8)
    with pytest.raises(compiler.InputMismatchError) as e:
        compiled(x, x)
    msg = str(e.value)
    assert "compiled for 1 input(s)" in msg
    assert "called with 2 input(s)" in msg
    assert "[2, 8]" in msg
    with pytest.raises(compiler.InputMismatchError, match="called with 0 input"):
        compiled()


def test_wrong_shape(compiled: compiler.Compiled) -> None:
    with pytest.raises(compiler.InputMismatchError) as e:
        compiled(_inputs(3, 8))
    msg = str(e.value)
    assert "expected a float32 tensor of shape [2, 8]" in msg
    assert "got a float32 tensor of shape [3, 8]" in msg


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.int64])
def test_wrong_dtype(compiled: compiler.Compiled, dtype: torch.dtype) -> None:
    with pytest.raises(compiler.InputMismatchError) as e:
        compiled(_inputs(2, 8, dtype=dtype))
    msg = str(e.value)
    name = str(dtype).removeprefix("torch.")
    assert "expected a float32 tensor of shape [2, 8]" in msg
    assert f"got a {name} tensor of shape [2, 8]" in msg


def test_non_tensor_where_tensor_expected(compiled: compiler.Compiled) -> None:
    with pytest.raises(compiler.InputMismatchError, match="got int 3"):
        compiled(3)


def test_input_mismatch_is_a_type_error(compiled: compiler.Compiled) -> None:
    with pytest.raises(TypeError):
        compiled(_inputs(4, 8))


def test_non_tensor_argument_is_specialized() -> None:
    x = _inputs(2, 3)

    def scale(x: torch.Tensor, n: int) -> torch.Tensor:
        return x * n

    c = compiler.compile(scale, (x, 3), backend="numpy")
    torch.testing.assert_close(c(x, 3), x * 3)
    with pytest.raises(compiler.InputMismatchError) as e:
        c(x, 4)
    assert "expected the value 3" in str(e.value)
    assert "got int 4" in str(e.value)


# ----------------------------------------------------------------------------- jit


def test_jit_as_decorator() -> None:
    @compiler.jit(backend="numpy")
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x) * 3 - 1

    assert isinstance(f, compiler.JitFunction)
    assert f.__name__ == "f"
    x = _inputs(2, 3)
    torch.testing.assert_close(f(x), torch.tanh(x) * 3 - 1)
    assert f.stats == {"compiles": 1, "calls": 1, "cache_hits": 0}


def test_jit_as_wrapper(model: Tiny) -> None:
    f = compiler.jit(model, backend="numpy")
    assert isinstance(f, compiler.JitFunction)
    x = _inputs(2, 8)
    torch.testing.assert_close(f(x), _eager(model, x), atol=1e-5, rtol=1e-5)
    assert f.stats["compiles"] == 1


def test_jit_without_arguments_uses_auto() -> None:
    @compiler.jit
    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    x = _inputs(3)
    torch.testing.assert_close(f(x), x * 2)
    assert [c.backend for c in f.cache.values()] == ["llvm"]


def test_jit_compiles_once_per_signature() -> None:
    @compiler.jit(backend="numpy")
    def f(x: torch.Tensor) -> torch.Tensor:
        return x.exp() + 1

    a = _inputs(2, 3)
    torch.testing.assert_close(f(a), a.exp() + 1)
    torch.testing.assert_close(f(_inputs(2, 3, seed=1)), _inputs(2, 3, seed=1).exp() + 1)
    assert f.stats == {"compiles": 1, "calls": 2, "cache_hits": 1}

    b = _inputs(4, 3)  # new shape
    torch.testing.assert_close(f(b), b.exp() + 1)
    assert f.stats["compiles"] == 2

    d = a.double()  # new dtype
    out = f(d)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, d.exp() + 1)
    assert f.stats["compiles"] == 3

    f(a)
    f(b)
    f(d)
    assert f.stats == {"compiles": 3, "calls": 7, "cache_hits": 4}


def test_jit_recompiles_for_a_new_non_tensor_value() -> None:
    @compiler.jit(backend="numpy")
    def f(x: torch.Tensor, n: int) -> torch.Tensor:
        return x * n

    x = _inputs(2, 3)
    torch.testing.assert_close(f(x, 2), x * 2)
    torch.testing.assert_close(f(x, 5), x * 5)
    torch.testing.assert_close(f(x, 2), x * 2)
    assert f.stats == {"compiles": 2, "calls": 3, "cache_hits": 1}


def test_jit_keyword_order_is_the_same_signature() -> None:
    @compiler.jit(backend="numpy")
    def f(x: torch.Tensor, *, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return x * a - b

    x, a, b = _inputs(2, 3), _inputs(2, 3, seed=1), _inputs(2, 3, seed=2)
    torch.testing.assert_close(f(x, a=a, b=b), x * a - b)
    torch.testing.assert_close(f(x, b=b, a=a), x * a - b)
    assert f.stats == {"compiles": 1, "calls": 2, "cache_hits": 1}


def test_jit_sees_weight_changes_without_recompiling() -> None:
    torch.manual_seed(0)
    m = nn.Linear(4, 4).eval()
    f = compiler.jit(m, backend="numpy")
    x = _inputs(2, 4)
    f(x)
    with torch.no_grad():
        m.weight.mul_(-2.0)
    torch.testing.assert_close(f(x), _eager(m, x), atol=1e-5, rtol=1e-5)
    assert f.stats["compiles"] == 1


# ----------------------------------------------------------------------------- backend and gpu


def test_auto_backend_is_triton_where_a_gpu_is(monkeypatch: pytest.MonkeyPatch) -> None:
    import backends

    assert backends.resolve("auto") == "llvm"  # here: no CUDA/ROCm device
    assert backends.parity_default() == ("numpy", "llvm")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backends.resolve("auto") == "triton"
    assert backends.parity_default() == ("numpy", "llvm", "triton")


def test_auto_backend_resolves_to_llvm_on_a_cpu(model: Tiny) -> None:
    x = _inputs(2, 8)
    c = compiler.compile(model, (x,), backend="auto")
    assert c.backend == "llvm"
    assert 'define void @"tf_' in c.source()
    torch.testing.assert_close(c(x), _eager(model, x), atol=1e-5, rtol=1e-5)


def test_unknown_backend_lists_available(model: Tiny) -> None:
    with pytest.raises(ValueError, match="unknown backend 'cuda'") as e:
        compiler.compile(model, (_inputs(2, 8),), backend="cuda")
    assert "available: numpy" in str(e.value)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        compiler.jit(model, backend="cuda")


def test_triton_backend_runs_under_the_interpreter(model: Tiny) -> None:
    x = _inputs(2, 8)
    with warnings.catch_warnings():  # the one-time interpreter notice (test_triton_backend)
        warnings.simplefilter("ignore", RuntimeWarning)
        c = compiler.compile(model, (x,), backend="triton")
        y = c(x)
    torch.testing.assert_close(y, _eager(model, x), atol=1e-5, rtol=1e-5)


def test_unknown_gpu(model: Tiny) -> None:
    with pytest.raises(ValueError, match="unknown GPU profile 'tpu9'") as e:
        compiler.compile(model, (_inputs(2, 8),), gpu="tpu9", backend="numpy")
    assert "a100" in str(e.value)
    assert "h100" in str(e.value)
    with pytest.raises(ValueError, match="unknown GPU profile"):
        compiler.jit(model, gpu="tpu9", backend="numpy")


def test_known_gpu_is_accepted_case_insensitively(model: Tiny) -> None:
    x = _inputs(2, 8)
    c = compiler.compile(model, (x,), gpu="H100", backend="numpy")
    assert c.gpu == "h100"
    torch.testing.assert_close(c(x), _eager(model, x), atol=1e-5, rtol=1e-5)


def test_compute_dtype_float64_is_a_tighter_reference() -> None:
    torch.manual_seed(0)
    x, w = torch.randn(8, 64), torch.randn(64, 64)

    def f(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x @ w, dim=-1)

    exact = f(x.double(), w.double())
    c32 = compiler.compile(f, (x, w), backend="numpy")
    c64 = compiler.compile(f, (x, w), backend="numpy", compute_dtype=torch.float64)
    assert "float64 compute" in c64.source() and "float32 compute" in c32.source()
    err32 = (c32(x, w).double() - exact).abs().max()
    err64 = (c64(x, w).double() - exact).abs().max()
    assert c64(x, w).dtype == torch.float32  # outputs keep the model's dtype
    assert err64 <= err32
    with pytest.raises(ValueError, match="compute_dtype"):
        compiler.compile(f, (x, w), backend="numpy", compute_dtype=torch.float16)


def test_bf16_model_called_under_inference_mode() -> None:
    # bf16 weights are converted once and cached; under inference_mode the copy must still be a
    # normal tensor (the llvm backend's packed-weight cache reads its version counter)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU()).eval().to(torch.bfloat16)
    x = torch.randn(4, 16).to(torch.bfloat16)
    c = compiler.compile(model, (x,), backend="llvm")
    with torch.inference_mode():
        first = c(x)
        second = c(x)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, model(x), rtol=2e-2, atol=2e-2)


def test_a_reassigned_parameter_or_submodule_is_read_on_the_next_call() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4)).eval()
    x = torch.randn(3, 8)
    c = compiler.compile(model, (x,), backend="llvm")
    with torch.no_grad():
        model[0].weight = nn.Parameter(torch.randn(8, 8))  # a new tensor, same name
        torch.testing.assert_close(c(x), model(x))
        # a new submodule: its parameters are found by name (in eval mode, as the rest: one
        # in training mode is a change the module guard names, tests/test_guard.py)
        model[2] = nn.Linear(8, 4).eval()
        torch.testing.assert_close(c(x), model(x))
        model[0].bias.mul_(3)  # in place
        torch.testing.assert_close(c(x), model(x))


def test_compiling_freezes_the_old_heap_and_unfreezes_it_even_on_error(monkeypatch) -> None:
    import gc

    from compiler.frontend import capture as frontend

    seen: list[int] = []
    real_export = frontend.export

    def export(*a: object, **k: object) -> object:
        seen.append(gc.get_freeze_count())
        return real_export(*a, **k)

    monkeypatch.setattr(frontend, "export", export)
    assert gc.get_freeze_count() == 0
    c = compiler.compile(Tiny(), (_inputs(2, 8),), backend="numpy")
    assert seen[0] > 0 and gc.get_freeze_count() == 0
    with pytest.raises(compiler.TilefuseError):
        compiler.compile(lambda x: x.nonzero(), (_inputs(2, 8),), backend="numpy")
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the caller's own: left alone
    try:
        model = Tiny()
        c = compiler.compile(model, (_inputs(2, 8),), backend="numpy")
        assert gc.get_freeze_count() > 0  # not unfrozen by the compile
    finally:
        gc.unfreeze()
    torch.testing.assert_close(c(_inputs(2, 8)), model(_inputs(2, 8)))
