"""Accuracy, special values and vectorization of backends/llvm/math.py.

Each function is JIT-compiled (llvmlite MCJIT, -O3, for `llvm_jit.host()`) into
`void f(T* in, T* out, i64 n)` and checked against NumPy float64 references.
Repro: .venv/bin/python -m pytest tests/test_llvm_math.py -q
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np
import pytest
from llvmlite import binding as llvm
from llvmlite import ir

from backends.llvm import jit as llvm_jit
from backends.llvm import math as llvm_math

F32, F64, I64 = ir.FloatType(), ir.DoubleType(), ir.IntType(64)
PTR = ir.PointerType()
LANES = 16
FUNCS = ("exp", "log", "tanh", "erf", "sigmoid", "sin", "cos")


def _erf64(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


REFERENCE = {
    "exp": np.exp,
    "log": np.log,
    "tanh": np.tanh,
    "erf": _erf64,
    "sigmoid": _sigmoid64,
    "sin": np.sin,
    "cos": np.cos,
}


def build_module(fname: str, ty: ir.Type, lanes: int = 1) -> ir.Module:
    """`void f(T* in, T* out, i64 n)`: out[i] = fname(in[i]); `lanes` > 1 loads <lanes x T>.

    With lanes > 1, n must be a multiple of lanes.
    """
    mod = ir.Module(name=f"test_{fname}")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]), name="f")
    src, dst, n = fn.args
    entry, body, done = (fn.append_basic_block(s) for s in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    b.cbranch(b.icmp_signed(">", n, ir.Constant(I64, 0)), body, done)
    b.position_at_end(body)
    i = b.phi(I64, name="i")
    vty = ir.VectorType(ty, lanes) if lanes > 1 else ty
    align = 4 if ty == F32 else 8  # without it a vector load assumes 64-byte alignment
    x = b.load(b.gep(src, [i], source_etype=ty), name="x", typ=vty, align=align)
    y = getattr(llvm_math, fname)(b, x)
    b.store(y, b.gep(dst, [i], source_etype=ty), align=align)
    nxt = b.add(i, ir.Constant(I64, lanes), name="i_next")
    i.add_incoming(ir.Constant(I64, 0), entry)
    i.add_incoming(nxt, body)
    b.cbranch(b.icmp_signed("<", nxt, n), body, done)
    b.position_at_end(done)
    b.ret_void()
    return mod


@functools.cache
def _target_machine() -> llvm.TargetMachine:
    # the backend's CPU description (TILEFUSE_CPU applies), in a machine of our own: MCJIT
    # takes ownership of the one it is given
    h = llvm_jit.host()
    return llvm.Target.from_triple(h.triple).create_target_machine(
        cpu=h.cpu, features=h.features, opt=3
    )


@functools.cache
def compile_kernel(fname: str, dtype: str, lanes: int = 1) -> tuple[object, str, object]:
    """JIT `build_module(...)` at O3; returns (ctypes function, assembly, engine)."""
    ty = F32 if dtype == "float32" else F64
    mod = llvm.parse_assembly(str(build_module(fname, ty, lanes)))
    mod.verify()
    tm = _target_machine()
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    asm = tm.emit_assembly(mod)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    ptr = ctypes.POINTER(ctypes.c_float if dtype == "float32" else ctypes.c_double)
    cfn = ctypes.CFUNCTYPE(None, ptr, ptr, ctypes.c_int64)(engine.get_function_address("f"))
    return cfn, asm, engine


def run(fname: str, x: np.ndarray, lanes: int = 1) -> np.ndarray:
    """Apply the JIT-compiled `fname` to the contiguous array `x`."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    cfn, _, _ = compile_kernel(fname, str(x.dtype), lanes)
    ctype = ctypes.POINTER(np.ctypeslib.as_ctypes_type(x.dtype))
    cfn(x.ctypes.data_as(ctype), out.ctypes.data_as(ctype), x.size)
    return out


def _inputs(lo: float, hi: float, n: int = 400_000, seed: int = 0) -> np.ndarray:
    """Uniform and log-spaced points in [lo, hi], plus [0.5, 2] (log's cancellation near 1)."""
    rng = np.random.default_rng(seed)
    parts = [rng.uniform(lo, hi, n), np.linspace(lo, hi, n // 4), rng.uniform(0.5, 2.0, n // 4)]
    tiny = lo if lo > 0 else 1e-30
    for sign, bound in ((1.0, hi), (-1.0, -lo)):
        if bound > tiny:
            parts.append(sign * np.exp(rng.uniform(math.log(tiny), math.log(bound), n // 4)))
    x = np.concatenate(parts).astype(np.float32)
    return x[(x >= lo) & (x <= hi)]


def errors(fname: str, x: np.ndarray) -> tuple[float, float]:
    """(max abs error, max error in float32 ulps of the reference) of `fname` on float32 x."""
    got = run(fname, x).astype(np.float64)
    ref = REFERENCE[fname](x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(got - ref))), float(np.max(np.abs(got - ref) / ulp))


ACCURACY = [  # (function, lo, hi, max abs error, max ulps)
    ("exp", -87.0, 88.0, math.inf, 3.0),
    ("exp", -103.9, -87.0, 1e-44, 3.0),  # denormal results, 3 denormal ulps
    ("log", 1.2e-38, 3.4e38, math.inf, 3.0),
    ("log", 1e-45, 1.2e-38, math.inf, 3.0),
    ("tanh", -20.0, 20.0, 2e-7, math.inf),
    ("erf", -6.0, 6.0, 2e-7, math.inf),
    ("sigmoid", -100.0, 100.0, 1e-7, math.inf),
    ("sin", -100.0, 100.0, 1e-6, math.inf),
    ("cos", -100.0, 100.0, 1e-6, math.inf),
]


@pytest.mark.parametrize(("fname", "lo", "hi", "atol", "max_ulp"), ACCURACY)
def test_accuracy_f32(fname, lo, hi, atol, max_ulp):
    x = _inputs(lo, hi)
    abs_err, ulp_err = errors(fname, x)
    assert abs_err <= atol, f"{fname} on [{lo}, {hi}]: abs error {abs_err:.3g}"
    assert ulp_err <= max_ulp, f"{fname} on [{lo}, {hi}]: {ulp_err:.2f} ulp"


def test_tanh_relative_error_away_from_zero():
    x = _inputs(-20.0, 20.0)
    x = x[np.abs(x) > 1e-3]
    _, ulp_err = errors("tanh", x)
    assert ulp_err <= 4.0


INF, NAN = math.inf, math.nan
ERF_SLOPE = 2 / math.sqrt(math.pi)  # erf(x) ~ x * 2/sqrt(pi) near 0
SPECIAL = {  # input -> expected output (nan compares as nan)
    "exp": [(-INF, 0.0), (INF, INF), (NAN, NAN), (88.73, INF), (104.0, INF), (-103.98, 0.0),
            (0.0, 1.0), (-100.0, np.float32(3.7835059e-44))],
    "log": [(0.0, -INF), (-0.0, -INF), (-1.0, NAN), (-INF, NAN), (INF, INF), (NAN, NAN),
            (1.0, 0.0), (1e-45, math.log(1.401298464324817e-45))],
    "tanh": [(INF, 1.0), (-INF, -1.0), (NAN, NAN), (0.0, 0.0), (1e-20, 1e-20), (-1e-30, -1e-30),
             (50.0, 1.0)],
    "erf": [(INF, 1.0), (-INF, -1.0), (NAN, NAN), (0.0, 0.0), (1e-30, 1e-30 * ERF_SLOPE),
            (10.0, 1.0), (-10.0, -1.0)],
    "sigmoid": [(-INF, 0.0), (INF, 1.0), (NAN, NAN), (0.0, 0.5), (-200.0, 0.0), (200.0, 1.0)],
    "sin": [(NAN, NAN), (0.0, 0.0)],
    "cos": [(NAN, NAN), (0.0, 1.0)],
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fname", FUNCS)
def test_special_values(fname, dtype):
    x = np.array([v for v, _ in SPECIAL[fname]], dtype=dtype)
    want = np.array([w for _, w in SPECIAL[fname]], dtype=dtype)
    if dtype == "float64":  # the table's thresholds are float32's; float64 follows NumPy
        with np.errstate(all="ignore"):
            want = REFERENCE[fname](x)
    np.testing.assert_allclose(run(fname, x), want, rtol=1e-6, atol=0)


def test_odd_symmetry():
    x = _inputs(0.0, 10.0, n=100_000)
    for fname in ("tanh", "erf"):
        np.testing.assert_array_equal(run(fname, -x), -run(fname, x))


@pytest.mark.parametrize("fname", FUNCS)
def test_float64_matches_numpy(fname):
    x = np.linspace(-5.0, 5.0, 1001)
    x = np.abs(x) + 1e-3 if fname == "log" else x
    np.testing.assert_allclose(run(fname, x), REFERENCE[fname](x), rtol=1e-15, atol=1e-300)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fname", FUNCS)
def test_vector_type_matches_scalar(fname, dtype):
    rng = np.random.default_rng(1)
    x = rng.uniform(-10, 10, 64 * LANES).astype(dtype)
    x[:5] = [0.0, -INF, INF, NAN, 1e-20]
    x = np.abs(x) if fname == "log" else x
    np.testing.assert_array_equal(run(fname, x, lanes=LANES), run(fname, x))


def test_float32_ir_has_no_calls_or_branches():
    for fname in ("exp", "log", "tanh", "erf", "sigmoid"):
        fn = build_module(fname, F32).get_global("f")
        calls = [ins for blk in fn.blocks for ins in blk.instructions if ins.opname == "call"]
        assert all(c.callee.name.startswith("llvm.") for c in calls), fname
        assert len(fn.blocks) == 3, fname  # only the test loop's own blocks


def test_vector_ir_uses_splat_constants():
    text = str(build_module("exp", F32, lanes=LANES))
    assert "splat (float" in text
    assert "llvm.fmuladd.v16f32" in text


@pytest.mark.skipif(
    llvm_jit.host().vector_bits < 512, reason="the llvm backend compiles for a CPU without AVX-512"
)
def test_exp_loop_vectorizes_to_avx512():
    _, asm, _ = compile_kernel("exp", "float32")
    assert "zmm" in asm
    assert not [line for line in asm.splitlines() if line.strip().startswith("call")], asm
