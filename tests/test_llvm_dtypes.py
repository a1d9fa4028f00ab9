"""bf16/f16 on the llvm backend: 16-bit storage where only native kernels touch a value
(Note [16-bit storage] in backends/llvm/storage.py), float32 compute and float32 GEMM operands.
The tests taking the `cpu` fixture (tests/conftest.py) also run compiled for AVX2 on an
AVX-512 host.

Repro one case: pytest tests/test_llvm_dtypes.py -k "softmax and bfloat16"
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import compiler
from backends.llvm import jit as llvm_jit
from backends.llvm.kernel import render_kernel
from compiler.bisect import bisect_kernels
from compiler.core.ir_text import parse_graph
from compiler.core.ops import ref
from compiler.core.schedule import KernelSpec
from examples import gpt2, llama
from passes.fusion import fuse_kernels
from tests.helpers import llvm_program

HALVES = [torch.bfloat16, torch.float16]
AVX512 = pytest.mark.skipif(
    llvm_jit.host().vector_bits < 512, reason="the llvm backend compiles for a CPU without AVX-512"
)


def ids(d: torch.dtype) -> str:
    return str(d).removeprefix("torch.")


def kernel(src: str) -> KernelSpec:
    (k,) = fuse_kernels(parse_graph(textwrap.dedent(src))).kernels
    return k


def check(fn: Callable[..., Any], *inputs: torch.Tensor) -> compiler.Compiled:
    report = compiler.check_parity(fn, inputs, backends=("llvm",))
    assert report.ok, f"\n{report}"
    return report.compiled


def narrow_values(c: compiler.Compiled) -> frozenset[str]:
    storage = c._program("llvm").storage
    assert storage is not None
    return storage.narrow


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int16)


# ---------------------------------------------------------------- generated code


POINTWISE = """
def f(x: {d}[64,1000], y: {d}[1000]):
    t0: {d}[64,1000] = mul(x, y)
    t1: {d}[64,1000] = gelu(t0, approximate='tanh')
    return (t1,)
"""


@AVX512
def test_bf16_kernel_loads_and_stores_i16_in_512_bit_vectors() -> None:
    m = render_kernel(kernel(POINTWISE.format(d="bf16")), narrow=frozenset({"x", "y", "t1"}))
    body = m.ir.split("define internal", 1)[1]
    assert "load i16" in body and "store i16" in body
    assert "load float" not in body and "store float" not in body
    assert "16-bit storage (bf16 as i16, f16 as half): x (bf16), y (bf16), t1 (bf16)" in m.ir
    asm = llvm_jit.assembly(m.ir)
    # widening (zero-extend, shift into the high half) and the rounding shift, on zmm
    assert "vpmovzxwd" in asm and "vpslld\t$16" in asm and "vpsrld\t$16" in asm
    assert "zmm" in asm and "expf" not in asm


@AVX512
def test_f16_kernel_converts_with_f16c_in_512_bit_vectors() -> None:
    m = render_kernel(kernel(POINTWISE.format(d="f16")), narrow=frozenset({"x", "y", "t1"}))
    body = m.ir.split("define internal", 1)[1]
    assert "load half" in body and "store half" in body and "load float" not in body
    asm = llvm_jit.assembly(m.ir)
    assert any("vcvtph2ps" in line and "zmm" in line for line in asm.splitlines())
    assert any("vcvtps2ph" in line and "zmm" in line for line in asm.splitlines())


def test_storage_is_part_of_the_module_identity() -> None:
    k = kernel(POINTWISE.format(d="bf16"))
    wide, narrow = render_kernel(k), render_kernel(k, narrow=frozenset({"t1"}))
    assert wide.symbol != narrow.symbol
    assert "store float" in wide.ir and "store i16" in narrow.ir


def test_only_a_16_bit_input_or_output_can_be_narrow() -> None:
    k = kernel("""
    def f(x: f32[4,8]):
        t0: f32[4,8] = exp(x)
        return (t0,)
    """)
    with pytest.raises(ValueError, match=r"k0_exp: only a bf16/f16 input or output.*not x"):
        render_kernel(k, narrow=frozenset({"x"}))


# ---------------------------------------------------------------- rounding on store


@pytest.mark.usefixtures("cpu")
@pytest.mark.parametrize("dtype", HALVES, ids=ids)
def test_stores_round_ties_to_even_keep_nan_and_overflow_to_inf(dtype: torch.dtype) -> None:
    """add/sub/mul of 16-bit inputs are exact in float32: each output must be the bits eager
    gets by rounding the same float32 value, ties, NaN, infinities and subnormals included."""
    info = torch.finfo(dtype)
    ulp = info.eps  # the gap above 1.0
    a = [1.0, 1.0 + ulp, 1.0, -1.0 - ulp, info.max, -info.max, float("nan"), float("inf")]
    b = [ulp / 2, ulp / 2, ulp / 4, -ulp / 2, info.max, -info.max, 1.0, float("-inf")]
    a += [float("-inf"), 0.0, info.tiny, info.smallest_normal * 0.5, 3.0, -0.0]
    b += [2.0, -0.0, -info.tiny, info.smallest_normal * 0.25, float("nan"), 0.0]
    x = torch.tensor(a * 8, dtype=dtype)[:97]  # ragged: a vector body and a remainder
    y = torch.tensor(b * 8, dtype=dtype)[:97]
    c = compiler.compile(lambda x, y: (x + y, x * y, x - y), (x, y), backend="llvm")
    assert {"args_0", "args_1"} <= narrow_values(c)
    for got, want in zip(c(x, y), (x + y, x * y, x - y), strict=True):
        assert got.dtype is dtype
        nan = torch.isnan(want)
        assert torch.equal(torch.isnan(got), nan)
        assert torch.equal(bits(got)[~nan], bits(want)[~nan]), (got, want)


@pytest.mark.usefixtures("cpu")
def test_bf16_rounding_matches_the_reference_rounding_bit_for_bit() -> None:
    """Random float32 values (every exponent, signs, low mantissa bits set), cast to bf16 in a
    native kernel, equal `compiler.core.ops.ref.round_to_bf16` of them."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32)
    values = raw.view(np.float32)
    values = values[np.isfinite(values)]
    x = torch.from_numpy(values.copy())
    c = compiler.compile(lambda x: x.to(torch.bfloat16) * 1.0, (x,), backend="llvm")
    got = c(x).float().numpy()
    np.testing.assert_array_equal(got.view(np.uint32), ref.round_to_bf16(values).view(np.uint32))


# ---------------------------------------------------------------- op parity


OPS: dict[str, tuple[Callable[..., Any], Callable[[tuple[int, ...]], list[torch.Tensor]]]] = {
    "gelu-mul": (
        lambda x, y: F.gelu(x * y, approximate="tanh"),
        lambda s: [torch.randn(s), torch.randn(s[-1])],
    ),
    "softmax": (lambda x: torch.softmax(x * 0.5, dim=-1), lambda s: [torch.randn(s)]),
    "layer_norm": (
        lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b),
        lambda s: [torch.randn(s) * 3 + 1, torch.randn(s[-1]), torch.randn(s[-1])],
    ),
    "rms_norm-cast": (
        lambda x, w: (
            (x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
            * w
        ),
        lambda s: [torch.randn(s), torch.randn(s[-1])],
    ),
    "sum-amax": (lambda x: (x.sum(-1), x.amax(0)), lambda s: [torch.randn(s)]),
    "silu-residual": (lambda x, r: F.silu(x) + r, lambda s: [torch.randn(s), torch.randn(s)]),
    "cat-pad": (
        lambda x, y: F.pad(torch.cat([x, y], -1), (1, 2)),
        lambda s: [torch.randn(s), torch.randn(s)],
    ),
}


@pytest.mark.parametrize("shape", [(3, 1), (5, 37), (2, 1029)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", HALVES, ids=ids)
@pytest.mark.parametrize("name", list(OPS))
def test_op_parity_with_16_bit_storage(
    name: str, dtype: torch.dtype, shape: tuple[int, int]
) -> None:
    fn, make = OPS[name]
    torch.manual_seed(0)
    inputs = [t.to(dtype) for t in make(shape)]
    c = check(fn, *inputs)
    assert {"args_0"} <= narrow_values(c), sorted(narrow_values(c))
    outs = c(*inputs)
    for o in outs if isinstance(outs, tuple) else (outs,):
        assert o.dtype is dtype


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
def test_non_contiguous_16_bit_inputs(dtype: torch.dtype) -> None:
    x = torch.randn(40, 24).to(dtype).t()  # a transposed view
    y = torch.randn(24, 80).to(dtype)[:, ::2]  # a strided slice
    table = torch.randn(9, 40).to(dtype)
    ids_ = torch.tensor([[3, 1, 8], [0, 2, 2]])
    check(lambda x, y, t, i: (torch.exp(x) * y, F.embedding(i, t) * 2), x, y, table, ids_)


def test_16_bit_inputs_pass_without_a_copy_and_gemm_operands_are_float32() -> None:
    lin = torch.nn.Linear(32, 48).to(torch.bfloat16).eval()
    norm = torch.nn.LayerNorm(48).to(torch.bfloat16).eval()
    model = torch.nn.Sequential(lin, norm)
    x = torch.randn(5, 32, dtype=torch.bfloat16)
    c = check(model, x)
    program = c._program("llvm")
    keys = [b.key for b in c.captured.bindings]  # parameter names; 0 for the user's x
    dtypes = dict(zip(keys, program.input_dtypes, strict=True))
    assert dtypes[0] is torch.float32  # a GEMM reads x
    assert dtypes["0.weight"] is torch.float32  # the GEMM's weight: converted once, cached
    assert dtypes["0.bias"] is torch.bfloat16 and dtypes["1.weight"] is torch.bfloat16
    inputs = c.torch_inputs((x,), {})
    bias = inputs[keys.index("0.bias")]
    assert bias.data_ptr() == lin.bias.data_ptr()  # read where it lies
    out = c._runner("llvm")(*inputs)[0]
    assert out.dtype is torch.bfloat16  # written in bf16 by the kernel: no conversion after


def test_float64_programs_store_nothing_in_16_bits() -> None:
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    c = compiler.compile(
        lambda x: torch.tanh(x) + 1, (x,), backend="llvm", compute_dtype=torch.float64
    )
    assert narrow_values(c) == frozenset()
    assert "torch.bfloat16)" not in c._program("llvm").driver
    got, want = c(x), torch.tanh(x.double()).add(1)
    assert got.dtype is torch.bfloat16
    torch.testing.assert_close(got.double(), want, rtol=8e-3, atol=0.0)


# ---------------------------------------------------------------- 16 bits = rounded float32


REASSOCIATION = 1e-6
"""How far apart a reduction kernel's outputs may be in the two programs: this much of each
value plus this much of the output's largest magnitude. A float32 sum added in another order
differs by a few ulps of its terms, and that error reaches the outputs at the scale of the
terms, not of each output: a LayerNorm output `(x - mean) * rstd * w + b` near 0, where the
bias cancels the rest, carries its variance's rounding at the scale of the row (gpt2's first
LayerNorm, compiled for 256-bit vectors, differs by a few times 1e-6 of such outputs)."""


def _same_kernels_both_storages(model: torch.nn.Module, inputs: tuple[Any, ...]) -> int:
    """Run every kernel of `model` twice on the same random inputs: in the program with 16-bit
    storage and in the one storing every float in float32. Each 16-bit output must be the
    float32 output rounded, each float32 output equal: bit for bit, except in reduction kernels,
    whose `reassoc` sums LLVM vectorizes in a different order for i16 than for float loads
    (other vector factors, interleave counts, or a loop it unrolls in one program and not in
    the other); there outputs must be within REASSOCIATION, and a 16-bit value a rounding of a
    value that close. Returns the number of 16-bit outputs checked."""
    c = compiler.compile(model, inputs, backend="llvm")
    weights = c.captured.weight_names()  # kernel by kernel: whole kernels, no row blocks
    narrow = llvm_program(c.schedule, weights=weights, row_blocks=False)
    wide = c._program("llvm", per_kernel=True)
    assert narrow.storage is not None
    storage = narrow.storage
    fns = narrow.load_namespace(), wide.load_namespace()
    gen = torch.Generator().manual_seed(0)
    seen = 0
    for k in c.schedule.kernels:
        args: list[list[torch.Tensor]] = [[], []]
        for v in k.inputs:
            t = v.type
            if t.dtype.is_float:
                x = torch.randn(t.shape, generator=gen).to(torch.bfloat16).float()
            else:
                x = torch.randint(0, 8, t.shape, generator=gen)
            args[0].append(x.to(storage.dtype(v.name, t)))
            args[1].append(x)
        ends = [(o, k.type_of(o)) for o in k.outputs]
        outs = [
            [torch.empty(t.shape, dtype=storage.dtype(o, t)) for o, t in ends],
            [torch.empty(t.shape, dtype=torch.float32) for _, t in ends],
        ]
        for ns, a, o in zip(fns, args, outs, strict=True):
            ns[k.name](*a, *o)
        tol = REASSOCIATION if k.kind == "reduction" else 0.0
        for name, got, want in zip(k.outputs, *outs, strict=True):
            label = f"{k.name} output {name}"
            finite = want[torch.isfinite(want)]
            scale = float(finite.abs().max()) if finite.numel() else 0.0
            if got.dtype is torch.float32:
                torch.testing.assert_close(
                    got, want, rtol=tol, atol=tol * scale, equal_nan=True, msg=label
                )
                continue
            seen += 1
            if not tol:
                assert torch.equal(bits(got), bits(want.to(got.dtype))), label
                continue
            near = (want.abs() + scale) * tol
            lo = (want - near).to(got.dtype)  # rounding is monotonic: got lies between
            hi = (want + near).to(got.dtype)  # the roundings of the ends
            nan = torch.isnan(want)
            assert torch.equal(torch.isnan(got), nan), label
            assert bool(((lo <= got) & (got <= hi))[~nan].all()), label
    return seen


@pytest.mark.usefixtures("cpu")
@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_16_bit_kernel_outputs_are_the_float32_outputs_rounded(name: str) -> None:
    build = {"gpt2": gpt2.build, "llama": llama.build}[name]
    extra = {"llama": {"kv_heads": 2, "intermediate": 96}}.get(name, {})
    model, inputs = build(seq=9, hidden=32, heads=2, layers=1, dtype=torch.bfloat16, **extra)
    assert _same_kernels_both_storages(model, inputs) >= 3


# ---------------------------------------------------------------- models and artifacts


MODELS = {
    "gpt2": lambda d: gpt2.build(seq=16, hidden=64, heads=4, layers=2, dtype=d),
    "llama": lambda d: llama.build(
        seq=19, hidden=64, heads=4, kv_heads=2, layers=2, intermediate=128, dtype=d
    ),
}


@pytest.mark.parametrize("dtype", HALVES, ids=ids)
@pytest.mark.parametrize("name", list(MODELS))
def test_model_parity_keeps_the_residual_stream_in_16_bits(name: str, dtype: torch.dtype) -> None:
    model, inputs = MODELS[name](dtype)
    c = check(model, *inputs)
    program = c._program("llvm")
    assert f"torch.{ids(dtype)})" in program.driver  # planned buffers viewed as 16-bit
    assert "tf_attention_" in program.driver  # the native attention reads float32 operands
    kernels = {k.name: k for k in c.schedule.kernels}
    storage = program.storage
    assert storage is not None
    # a residual add after a GEMM writes 16 bits; the norm reading it writes float32 for GEMMs
    residual = [
        o
        for k in kernels.values()
        if k.name.endswith("fused_matmul_add")
        for o in k.outputs
        if o in storage.narrow
    ]
    assert residual, program.driver
    assert c(*inputs).dtype is dtype
    assert bisect_kernels(c, inputs, {}, "llvm") is None  # kernel by kernel: reference values


def test_bf16_artifact_round_trips(tmp_path: Path) -> None:
    model, inputs = MODELS["gpt2"](torch.bfloat16)
    c = compiler.compile(model, inputs, backend="llvm")
    c.save(tmp_path / "gpt2")
    loaded = compiler.load(tmp_path / "gpt2")
    assert loaded._program("llvm").input_dtypes == c._program("llvm").input_dtypes
    got, want = loaded(*inputs), c(*inputs)
    assert got.dtype is torch.bfloat16 and torch.equal(got, want)
