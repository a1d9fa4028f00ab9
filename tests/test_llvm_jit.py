"""The LLVM native-code runtime: IR text -> -O3 object code -> callable machine code.

Repro: .venv/bin/python -m pytest tests/test_llvm_jit.py -q
"""

import ctypes
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.llvm import aot as llvm_aot
from backends.llvm import jit as llvm_jit
from compiler.core import config

AXPY = """
define void @axpy(ptr noalias %x, ptr noalias %y, i64 %n) {
entry:
  %empty = icmp sle i64 %n, 0
  br i1 %empty, label %exit, label %loop
loop:
  %i = phi i64 [ 0, %entry ], [ %i1, %loop ]
  %px = getelementptr float, ptr %x, i64 %i
  %py = getelementptr float, ptr %y, i64 %i
  %a = load float, ptr %px
  %b = load float, ptr %py
  %ax = fmul float %a, 2.0
  %s = fadd float %ax, %b
  store float %s, ptr %py
  %i1 = add i64 %i, 1
  %more = icmp slt i64 %i1, %n
  br i1 %more, label %loop, label %exit
exit:
  ret void
}

declare float @expf(float)
declare float @erff(float)

define float @exp_plus_erf(float %x) {
  %e = call float @expf(float %x)
  %r = call float @erff(float %x)
  %s = fadd float %e, %r
  ret float %s
}
"""

RETURNS = "define i32 @f() {{\n  ret i32 {}\n}}\n"

# Each OpenMP thread writes its thread number into out[thread]; `count` gets the team size.
PARALLEL = """
declare void @GOMP_parallel(ptr, ptr, i32, i32)
declare i32 @omp_get_thread_num()
declare i32 @omp_get_num_threads()
declare void @GOMP_barrier()

define internal void @body(ptr %out) {
  %t = call i32 @omp_get_thread_num()
  %n = call i32 @omp_get_num_threads()
  %slot = getelementptr i32, ptr %out, i32 %t
  store i32 %t, ptr %slot
  call void @GOMP_barrier()
  %is0 = icmp eq i32 %t, 0
  br i1 %is0, label %first, label %done
first:
  %count = getelementptr i32, ptr %out, i32 64
  store i32 %n, ptr %count
  br label %done
done:
  ret void
}

define void @run(ptr %out, i32 %nthreads) {
  call void @GOMP_parallel(ptr @body, ptr %out, i32 %nthreads, i32 0)
  ret void
}
"""

NOT_DOMINATING = """
define i32 @g(i1 %c) {
entry:
  br i1 %c, label %then, label %join
then:
  %x = add i32 1, 2
  br label %join
join:
  ret i32 %x
}
"""

UNRESOLVED = """
declare i32 @no_such_fn()
define i32 @h() {
  %r = call i32 @no_such_fn()
  ret i32 %r
}
"""


pytestmark = pytest.mark.usefixtures("private_cache")


def load(ir_text: str) -> llvm_jit.NativeLibrary:
    return llvm_jit.NativeLibrary([llvm_jit.compile_object(ir_text)])


def test_host_describes_this_cpu():
    h = llvm_jit.host()
    assert h is llvm_jit.host()
    assert h.triple.startswith(("x86_64", "aarch64"))
    assert h.vector_bits in (128, 256, 512)
    assert ("+avx512f" in h.features) == (h.vector_bits == 512)


@pytest.mark.usefixtures("cpu")
def test_axpy_runs_on_numpy_arrays():
    lib = load(AXPY)
    axpy = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(
        lib.address("axpy")
    )
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1003).astype(np.float32)
    y = rng.standard_normal(1003).astype(np.float32)
    expected = 2 * x + y
    axpy(x.ctypes.data, y.ctypes.data, len(x))
    np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_libm_symbols_resolve():
    lib = load(AXPY)
    f = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_float)(lib.address("exp_plus_erf"))
    assert f(0.5) == pytest.approx(np.exp(0.5) + 0.5204998778, rel=1e-6)


def test_axpy_uses_512_bit_vectors():
    if llvm_jit.host().vector_bits < 512:
        pytest.skip(f"compiling for {llvm_jit.host().vector_bits}-bit vectors, not AVX-512")
    assert "zmm" in llvm_jit.assembly(AXPY)
    assert "<16 x float>" in llvm_jit.optimized_ir(AXPY)


def test_x86_64_v3_compiles_for_avx2_on_any_cpu_that_has_it(monkeypatch):
    native = llvm_jit.host()
    if "+avx2" not in native.features:
        pytest.skip("the host has no AVX2")
    native_key = llvm_jit.object_cache_path(AXPY)
    native_cpu = llvm_aot.cpu_fingerprint()
    monkeypatch.setenv("TILEFUSE_CPU", "x86-64-v3")
    h = llvm_jit.host()
    assert h.vector_bits == 256 and h.cpu == "x86-64-v3" and "+fma" in h.features
    assert not re.search(r"avx512|avx10|amx", h.features), h.features
    asm = llvm_jit.assembly(AXPY)
    assert "ymm" in asm and "zmm" not in asm
    # objects and kernels.so of one target are never served for another
    assert llvm_jit.object_cache_path(AXPY) != native_key
    assert llvm_aot.cpu_fingerprint() != native_cpu


def test_x86_64_v4_is_avx512_and_refused_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setenv("TILEFUSE_CPU", "x86-64-v4")
    if llvm_jit._host("native").vector_bits < 512:
        with pytest.raises(
            ValueError, match=r"TILEFUSE_CPU=x86-64-v4, but this CPU .* lacks avx512"
        ):
            llvm_jit.host()
        return
    h = llvm_jit.host()
    assert h.vector_bits == 512 and "+avx512vl" in h.features and "-prefer-256-bit" in h.features
    assert "zmm" in llvm_jit.assembly(AXPY)


def test_disk_cache_hits_in_process_and_in_a_fresh_process(private_cache):
    before = dict(llvm_jit.STATS)
    first = llvm_jit.compile_object(AXPY)
    second = llvm_jit.compile_object(AXPY)
    assert first == second
    assert llvm_jit.STATS["compiled"] == before["compiled"] + 1
    assert llvm_jit.STATS["cache_hits"] == before["cache_hits"] + 1
    assert [p.suffix for p in (private_cache / "llvm").iterdir()] == [".tfo"]  # no temporary

    script = (
        "import sys; from backends.llvm import jit as j; "
        "j.compile_object(sys.stdin.read()); print(j.STATS['compiled'], j.STATS['cache_hits'])"
    )
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", script], input=AXPY, capture_output=True, text=True, cwd=repo
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


def test_verifier_failure_names_the_problem():
    with pytest.raises(ValueError, match="does not dominate all uses") as info:
        llvm_jit.optimize(NOT_DOMINATING)
    assert "fails verification" in str(info.value)
    assert "@g(i1 %c)" in str(info.value)  # the IR excerpt
    with pytest.raises(ValueError, match="does not parse"):
        llvm_jit.compile_object("define i32 @g( {")


def test_same_symbol_in_two_libraries_does_not_collide():
    one, two = load(RETURNS.format(1)), load(RETURNS.format(2))
    f1 = ctypes.CFUNCTYPE(ctypes.c_int32)(one.address("f"))
    f2 = ctypes.CFUNCTYPE(ctypes.c_int32)(two.address("f"))
    assert (f1(), f2()) == (1, 2)
    del two  # freeing one library leaves the other intact
    assert f1() == 1


def test_missing_symbol_is_a_clear_error():
    lib = load(RETURNS.format(3))
    with pytest.raises(KeyError, match="'nope' is not defined"):
        lib.address("nope")
    with pytest.raises(RuntimeError, match="no_such_fn"):
        load(UNRESOLVED)


def test_gomp_parallel_runs_on_every_thread():
    path = llvm_jit.openmp()
    assert llvm_jit.openmp() == path and "libgomp" in Path(path).name
    n = config.num_threads()
    lib = load(PARALLEL)
    run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32)(lib.address("run"))
    out = np.full(65, -1, dtype=np.int32)
    run(out.ctypes.data, n)
    assert out[64] == n
    assert out[:n].tolist() == list(range(n))
    assert (out[n:64] == -1).all()


def test_num_threads_env_override(monkeypatch):
    monkeypatch.setenv("TILEFUSE_NUM_THREADS", "3")
    assert config.num_threads() == 3
    monkeypatch.delenv("TILEFUSE_NUM_THREADS")
    assert config.num_threads() >= 1


def _prefix_sum_module(rolled: bool) -> str:
    """x[i + 1] += x[i] for i < 8: a constant trip count -O3 unrolls in full unless told not to."""
    from llvmlite import ir

    from backends.llvm.emit import I64, PTR, counted_loop

    f32 = ir.FloatType()
    m = ir.Module(name="loops")
    for name in ("first", "second"):
        f = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR]), name)
        b = ir.IRBuilder(f.append_basic_block("entry"))
        with counted_loop(b, I64(0), I64(8), "i", rolled=rolled) as i:
            a = b.load(b.gep(f.args[0], [i], source_etype=f32), typ=f32)
            at = b.gep(f.args[0], [b.add(i, I64(1))], source_etype=f32)
            b.store(b.fadd(a, b.load(at, typ=f32)), at)
        b.ret_void()
    return str(m)


def test_rolled_loops_stay_rolled_and_compute_the_same():
    unrolled, rolled = _prefix_sum_module(False), _prefix_sum_module(True)
    assert llvm_jit.optimized_ir(unrolled).count("store float") == 16  # 8 per function
    assert llvm_jit.optimized_ir(rolled).count("store float") == 2
    assert rolled.count("!llvm.loop") == 2 and "!{ !1, !0 }" in rolled and "!{ !2, !0 }" in rolled
    for text in (unrolled, rolled):
        lib = llvm_jit.NativeLibrary([llvm_jit.compile_object(text)])
        x = np.arange(1, 10, dtype=np.float32)
        ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lib.address("first"))(x.ctypes.data)
        np.testing.assert_array_equal(x, np.cumsum(np.arange(1, 10, dtype=np.float32)))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b[:100] + bytes([b[100] ^ 0xFF]) + b[101:],  # one byte flipped
        lambda b: b[:-5],  # the seal cut
        lambda b: b"",  # empty
    ],
    ids=["truncated", "flipped", "seal cut", "empty"],
)
def test_a_damaged_cache_entry_is_discarded_and_rebuilt(private_cache, damage):
    obj = llvm_jit.compile_object(AXPY)
    path = llvm_jit.object_cache_path(AXPY)
    path.write_bytes(damage(path.read_bytes()))
    before = llvm_jit.STATS["compiled"]
    with pytest.warns(UserWarning, match="discarding a damaged compile-cache entry .*tfo"):
        again = llvm_jit.compile_object(AXPY)
    assert again == obj and llvm_jit.STATS["compiled"] == before + 1
    assert llvm_jit.cached_object(AXPY) == obj  # rebuilt whole
    lib = llvm_jit.NativeLibrary([again])
    assert lib.address("axpy")
