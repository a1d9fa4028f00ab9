"""Vectorizable transcendental functions emitted as LLVM IR with llvmlite's IRBuilder.

Each public function takes an IRBuilder positioned where the code should go and a value of
type `float`, `double` or a vector of either, emits the computation there and returns a value
of the same type:

    y = exp(b, x)   # %"exp_n" = call float @"llvm.floor.f32"(...) ... %"exp_result" = select ...

Note [Why not llvm.exp.f32]
    `llvm.exp.f32` lowers to one scalar `expf` call per element; a vectorized loop still makes
    16 libm calls per <16 x float>, so a fused `exp(x) * y` kernel runs ~10x slower than it
    could on AVX-512 (measured: 7.2 vs 0.75 ns/element). For float32 we therefore emit
    straight-line code: fcmp/select, bitcast and integer shifts, fptosi/sitofp, and the
    intrinsics `llvm.fmuladd`, `llvm.fabs`, `llvm.floor` and `llvm.copysign`, which all
    have vector forms. No calls, no branches: the loop vectorizer widens the loop as is.
    Denormal results are produced exactly (exp scales by two powers of two, so exp(-100) is
    the denormal 3.7e-44 that torch returns); denormal inputs of log are rescaled. Denormal
    arithmetic is slow on x86 (microcode assists), so erf clamps |x| at 4 where the answer is
    already 1; exp(x < -87.3) and sigmoid(|x| > 87.3) keep their exact, slower denormals.
    Measured float32 errors vs float64 NumPy (tests/test_llvm_math.py, ~2e6 points each):
    exp 1.01 ulp, log 0.78 ulp, tanh 1.3 ulp / 7.7e-8 abs, erf 0.96 ulp / 5.7e-8 abs,
    sigmoid 8.9e-8 abs.

Note [float64 goes to libm]
    float64 is the precision a user asks for when they want a reference answer, so accuracy
    beats speed: exp/log use `llvm.exp.f64`/`llvm.log.f64` (lowered to libm `exp`/`log`),
    tanh/erf call libm `tanh`/`erf`, declared once per module. A vector of doubles calls
    libm lane by lane.

Note [sin and cos]
    sin/cos call `llvm.sin`/`llvm.cos` for every type, which the backend lowers to scalar
    libm `sinf`/`sin` calls (one per lane for vectors). Correct, but loops using them do not
    vectorize; a polynomial with Payne-Hanek range reduction is future work.

Polynomial coefficients: exp and log from Cephes `expf.c`/`logf.c` (S. L. Moshier), tanh
from Cephes `tanhf.c`, erf from ARM optimized-routines `math/erff.c` + `erff_data.c`
(minimax; erf(x) = x + x*A(x^2) below 0.921875, 1 - exp(-(a + a*B(a))) above).
"""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir


def _floats(text: str) -> tuple[float, ...]:
    """Parse a coefficient table as its source prints it: "1.5e-4 -0x1.8p-1" (C99 hex ok)."""
    return tuple(float.fromhex(w) if "0x" in w else float(w) for w in text.split())


F32 = ir.FloatType()
F64 = ir.DoubleType()
I32 = ir.IntType(32)

# Coefficient tables list the highest degree first, as Cephes prints them.
# Cephes expf.c: e^r = 1 + r + r^2 * P(r) on [-ln2/2, ln2/2]; ln2 split for Cody-Waite.
_EXP_P = _floats(
    "1.9875691500e-4 1.3981999507e-3 8.3334519073e-3 4.1665795894e-2 1.6666665459e-1 "
    "5.0000001201e-1"
)
_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375  # 9 significant bits: n * _LN2_HI is exact for |n| <= 150
_LN2_LO = -2.12194440e-4
_EXP_HI = 88.8  # exp overflows above 88.7228; clamped so the exponent n stays <= 128
_EXP_LO = -104.0  # exp underflows to 0 below -103.972; clamped so n stays >= -150

# Cephes logf.c: log(1+f) = f - f^2/2 + f^3 * P(f) for 1+f in [sqrt(1/2), sqrt(2)).
_LOG_P = _floats(
    "7.0376836292e-2 -1.1514610310e-1 1.1676998740e-1 -1.2420140846e-1 1.4249322787e-1 "
    "-1.6668057665e-1 2.0000714765e-1 -2.4999993993e-1 3.3333331174e-1"
)
_SQRT_HALF_BITS = 0x3F3504F3  # float32 bits of sqrt(1/2)
_FLT_MIN = 1.17549435e-38  # smallest normal float32

# Cephes tanhf.c: tanh(x) = x + x^3 * P(x^2) for |x| < 0.625.
_TANH_P = _floats(
    "-5.70498872745e-3 2.06390887954e-2 -5.37397155531e-2 1.33314422036e-1 -3.33332819422e-1"
)
_TANH_SMALL = 0.625

# ARM optimized-routines erff_data.c, in its hex notation (its order reversed).
_ERF_A = _floats(
    "-0x1.3a1a82p-11 0x1.473f48p-08 -0x1.b68bd2p-06 0x1.ce1a46p-04 -0x1.8126e0p-02 0x1.06eba6p-03"
)
_ERF_B = _floats(
    "0x1.222900p-16 -0x1.91d2ccp-12 0x1.fd1336p-9 -0x1.8d6300p-6 0x1.b55cb0p-4 0x1.450aa0p-1 "
    "0x1.079d0cp-3"
)
_ERF_SMALL = 0.921875  # below: odd polynomial; above: 1 - exp(-poly)
_ERF_ONE = 4.0  # 1 - exp(-t) rounds to exactly 1.0f from |x| = 3.92 on


def _element(ty: ir.Type) -> ir.Type:
    """The scalar type of `ty` (itself for scalars)."""
    return ty.element if isinstance(ty, ir.VectorType) else ty


def _like(ty: ir.Type, element: ir.Type) -> ir.Type:
    """`element`, widened to a vector when `ty` is one (e.g. the i32 twin of <16 x float>)."""
    return ir.VectorType(element, ty.count) if isinstance(ty, ir.VectorType) else element


def _const(ty: ir.Type, value: float | int) -> ir.Constant:
    """A constant of type `ty`; vectors print as `splat (float 1.0)` to keep the IR short."""
    if isinstance(ty, ir.VectorType):
        # FormattedConstant(<vector type>, text) would broadcast the text into every lane.
        splat = ir.FormattedConstant(ty.element, f"splat ({ir.Constant(ty.element, value)})")
        splat.type = ty
        return splat
    return ir.Constant(ty, value)


def _mangle(ty: ir.Type) -> str:
    """LLVM's intrinsic-name suffix: f32, f64, v16f32 (llvmlite's VectorType has none)."""
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{ty.element.intrinsic_name}"
    return ty.intrinsic_name


def _intrinsic(b: ir.IRBuilder, name: str, *args: ir.Value, label: str = "") -> ir.Value:
    """Call `llvm.<name>` overloaded on the first argument's type, declaring it once."""
    ty = args[0].type
    full = f"llvm.{name}.{_mangle(ty)}"
    fn = b.module.globals.get(full)
    if fn is None:
        fn = ir.Function(b.module, ir.FunctionType(ty, [a.type for a in args]), full)
    return b.call(fn, args, name=label)


def _fma(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value, name: str = "") -> ir.Value:
    """x * y + z, fused where the target has FMA (`llvm.fmuladd` never becomes a libcall)."""
    return _intrinsic(b, "fmuladd", x, y, z, label=name)


def _horner(b: ir.IRBuilder, x: ir.Value, coeffs: Sequence[float], name: str) -> ir.Value:
    """Evaluate c0*x^(n-1) + ... + c_(n-1) by Horner's rule; `coeffs` highest degree first."""
    acc = _const(x.type, coeffs[0])
    for c in coeffs[1:]:
        acc = _fma(b, acc, x, _const(x.type, c), name=name)
    return acc


def _is_nan(b: ir.IRBuilder, x: ir.Value, prefix: str) -> ir.Value:
    return b.fcmp_unordered("uno", x, x, name=f"{prefix}_isnan")


def _below(b: ir.IRBuilder, x: ir.Value, limit: float, name: str) -> ir.Value:
    """x < limit ? x : limit. NaN becomes `limit`: callers restore NaN at the end."""
    lim = _const(x.type, limit)
    return b.select(b.fcmp_ordered("<", x, lim, name=f"{name}_lt"), x, lim, name=name)


def _above(b: ir.IRBuilder, x: ir.Value, limit: float, name: str) -> ir.Value:
    """x > limit ? x : limit. NaN becomes `limit`: callers restore NaN at the end."""
    lim = _const(x.type, limit)
    return b.select(b.fcmp_ordered(">", x, lim, name=f"{name}_gt"), x, lim, name=name)


def _pow2(b: ir.IRBuilder, k: ir.Value, ty: ir.Type, name: str) -> ir.Value:
    """2^k as a float built from its exponent bits; k must be in [-126, 127]."""
    biased = b.add(k, _const(k.type, 127), name=f"{name}_biased")
    return b.bitcast(b.shl(biased, _const(k.type, 23), name=f"{name}_bits"), ty, name=name)


def _libm(b: ir.IRBuilder, fname: str, x: ir.Value) -> ir.Value:
    """Call libm `double fname(double)`, lane by lane for a vector (Note [float64 goes to libm])."""
    fn = b.module.globals.get(fname)
    if fn is None:
        fn = ir.Function(b.module, ir.FunctionType(F64, [F64]), fname)
    if not isinstance(x.type, ir.VectorType):
        return b.call(fn, [x], name=fname)
    out = _const(x.type, 0.0)
    for lane in range(x.type.count):
        idx = ir.Constant(I32, lane)
        y = b.call(fn, [b.extract_element(x, idx, name=f"{fname}_x{lane}")], name=fname)
        out = b.insert_element(out, y, idx, name=f"{fname}_v")
    return out


def _is_f32(x: ir.Value) -> bool:
    """True for float32 (scalar or vector), False for float64; raise on anything else."""
    el = _element(x.type)
    if el == F32:
        return True
    if el == F64:
        return False
    raise TypeError(f"llvm_math expects float, double or a vector of them, got {x.type}")


def exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """e^x. float32: ~1 ulp; inf above 88.72, correctly scaled denormals down to -103.97.

    x = n*ln2 + r with n = floor(x*log2(e) + 1/2), |r| <= ln2/2; e^r from a Cephes polynomial;
    2^n applied as 2^(n>>1) * 2^(n - n>>1), so both factors are normal floats for n in
    [-150, 128] and a denormal result is rounded once.
    """
    if not _is_f32(x):
        return _intrinsic(b, "exp", x, label="exp")
    ty, ity = x.type, _like(x.type, I32)
    xc = _above(b, _below(b, x, _EXP_HI, "exp_x"), _EXP_LO, "exp_x")
    t = _fma(b, xc, _const(ty, _LOG2E), _const(ty, 0.5), name="exp_t")
    n = _intrinsic(b, "floor", t, label="exp_n")
    r = _fma(b, n, _const(ty, -_LN2_HI), xc, name="exp_r")
    r = _fma(b, n, _const(ty, -_LN2_LO), r, name="exp_r")
    r2 = b.fmul(r, r, name="exp_r2")
    p = _horner(b, r, _EXP_P, name="exp_p")
    er = b.fadd(_fma(b, p, r2, r, name="exp_p"), _const(ty, 1.0), name="exp_er")
    ni = b.fptosi(n, ity, name="exp_ni")
    n1 = b.ashr(ni, _const(ity, 1), name="exp_n1")
    n2 = b.sub(ni, n1, name="exp_n2")
    y = b.fmul(er, _pow2(b, n1, ty, "exp_s1"), name="exp_y")
    y = b.fmul(y, _pow2(b, n2, ty, "exp_s2"), name="exp_y")
    return b.select(_is_nan(b, x, "exp"), x, y, name="exp_result")


def log(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """Natural log. float32: x = 2^k * m with m in [sqrt(1/2), sqrt(2)), Cephes polynomial.

    log(0) = -inf, log(x < 0) = nan, log(inf) = inf; denormals are first scaled by 2^23.
    """
    if not _is_f32(x):
        return _intrinsic(b, "log", x, label="log")
    ty, ity = x.type, _like(x.type, I32)
    zero = _const(ty, 0.0)
    tiny = b.fcmp_ordered("<", x, _const(ty, _FLT_MIN), name="log_tiny")
    scaled = b.fmul(x, _const(ty, 2.0**23), name="log_scaled")
    bits = b.bitcast(b.select(tiny, scaled, x, name="log_xs"), ity, name="log_bits")
    off = b.sub(bits, _const(ity, _SQRT_HALF_BITS), name="log_off")
    k = b.ashr(off, _const(ity, 23), name="log_k")
    m_bits = b.sub(bits, b.shl(k, _const(ity, 23), name="log_k_bits"), name="log_m_bits")
    f = b.fsub(b.bitcast(m_bits, ty, name="log_m"), _const(ty, 1.0), name="log_f")
    e = b.sitofp(k, ty, name="log_e")
    e = b.fadd(e, b.select(tiny, _const(ty, -23.0), zero, name="log_e_adj"), name="log_e")
    f2 = b.fmul(f, f, name="log_f2")
    p = _horner(b, f, _LOG_P, name="log_p")
    y = b.fmul(b.fmul(p, f, name="log_y"), f2, name="log_y")
    y = _fma(b, e, _const(ty, _LN2_LO), y, name="log_y")
    y = _fma(b, f2, _const(ty, -0.5), y, name="log_y")
    y = b.fadd(f, y, name="log_y")
    y = _fma(b, e, _const(ty, _LN2_HI), y, name="log_y")
    inf = _const(ty, float("inf"))
    y = b.select(b.fcmp_ordered("==", x, inf, name="log_isinf"), inf, y, name="log_y")
    is_zero = b.fcmp_ordered("==", x, zero, name="log_iszero")
    y = b.select(is_zero, _const(ty, float("-inf")), y, name="log_y")
    is_neg = b.fcmp_ordered("<", x, zero, name="log_isneg")
    y = b.select(is_neg, _const(ty, float("nan")), y, name="log_y")
    return b.select(_is_nan(b, x, "log"), x, y, name="log_result")


def tanh(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """tanh. float32: x + x^3*P(x^2) below |x| = 0.625, else sign(x) * (1 - 2/(e^(2|x|)+1))."""
    if not _is_f32(x):
        return _libm(b, "tanh", x)
    ty = x.type
    a = _intrinsic(b, "fabs", x, label="tanh_a")
    z = b.fmul(x, x, name="tanh_z")
    p = _horner(b, z, _TANH_P, name="tanh_p")
    small = _fma(b, b.fmul(p, z, name="tanh_pz"), x, x, name="tanh_small")
    e = exp(b, b.fadd(a, a, name="tanh_2a"))  # inf for large |x|: 2/(inf+1) = 0
    q = b.fdiv(_const(ty, 2.0), b.fadd(e, _const(ty, 1.0), name="tanh_e1"), name="tanh_q")
    large = b.fsub(_const(ty, 1.0), q, name="tanh_large")
    large = _intrinsic(b, "copysign", large, x, label="tanh_large")
    is_small = b.fcmp_ordered("<", a, _const(ty, _TANH_SMALL), name="tanh_is_small")
    return b.select(is_small, small, large, name="tanh_result")


def erf(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """erf. float32: ARM optimized-routines erff (~1 ulp), erf(+-inf) = +-1, erf(-x) = -erf(x)."""
    if not _is_f32(x):
        return _libm(b, "erf", x)
    ty = x.type
    a = _intrinsic(b, "fabs", x, label="erf_a")
    x2 = b.fmul(x, x, name="erf_x2")
    pa = _horner(b, x2, _ERF_A, name="erf_pa")
    small = _fma(b, pa, x, x, name="erf_small")
    # Clamping at 4 (where erf rounds to 1) keeps exp(-t) out of slow denormals; NaN -> 4 too.
    ac = _below(b, a, _ERF_ONE, "erf_ac")
    pb = _horner(b, ac, _ERF_B, name="erf_pb")
    t = _fma(b, pb, ac, ac, name="erf_t")
    e = exp(b, b.fsub(_const(ty, -0.0), t, name="erf_negt"))
    large = b.fsub(_const(ty, 1.0), e, name="erf_large")
    large = _intrinsic(b, "copysign", large, x, label="erf_large")
    is_small = b.fcmp_ordered("<", a, _const(ty, _ERF_SMALL), name="erf_is_small")
    y = b.select(is_small, small, large, name="erf_y")
    return b.select(_is_nan(b, x, "erf"), x, y, name="erf_result")


def sigmoid(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """1/(1+e^-x) as the NumPy reference computes it: e = exp(-|x|), x>=0 ? 1/(1+e) : e/(1+e).

    float64 uses libm exp (via `exp` above); float32 the polynomial exp.
    """
    ty = x.type
    a = _intrinsic(b, "fabs", x, label="sigmoid_a")
    e = exp(b, b.fsub(_const(ty, -0.0), a, name="sigmoid_negabs"))
    den = b.fadd(_const(ty, 1.0), e, name="sigmoid_den")
    pos = b.fcmp_ordered(">=", x, _const(ty, 0.0), name="sigmoid_pos")
    num = b.select(pos, _const(ty, 1.0), e, name="sigmoid_num")
    return b.fdiv(num, den, name="sigmoid_result")


def sin(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """sin via `llvm.sin` (scalar libm per lane, does not vectorize; Note [sin and cos])."""
    _is_f32(x)
    return _intrinsic(b, "sin", x, label="sin")


def cos(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """cos via `llvm.cos` (scalar libm per lane, does not vectorize; Note [sin and cos])."""
    _is_f32(x)
    return _intrinsic(b, "cos", x, label="cos")
