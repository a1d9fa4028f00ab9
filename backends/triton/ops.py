"""The op -> Triton expression table for elementwise ops, and the dtype rules of Triton kernels.

One row per op, like the NumPy templates in `compiler.core.ops`: `{0}`, `{1}` are the names of the
input values (always variables, so a template may repeat them) and `{approximate}`-style fields
are the node's attributes. Floats compute in fp32 whatever they are stored as (f16/bf16 are
loaded and upcast; stores round to the stored type; a `cast` in the IR rounds where it says),
so every template is fp32 math. f64 models compute in fp64 (`compute="tl.float64"`).

Composites without a `tl` primitive are small @triton.jit helpers in the module prelude
(`HELPERS`): tanh, sin/cos, pow, NaN-propagating max/min, and bf16 rounding. Every other op
a pointwise or reduction kernel may hold is in `ELEMENTWISE`, is a view/source/gather the index
emitter handles, or is a reduction anchor; anything else is `unsupported(op)`, which
`supports(spec)` reports with its reason.

    ELEMENTWISE["exp"] = "tl.exp({0})"
    ELEMENTWISE["silu"] = "{0} * tl.sigmoid({0})"

Note [bf16 rounding under the interpreter]
Measured with Triton 3.9: under TRITON_INTERPRET=1, `x.to(tl.bfloat16)` from fp32 truncates
(1.01171875 -> 1.0078125, where round-to-nearest-even gives 1.015625), so every bf16 store
would be biased by up to one ulp. Kernels that round to bf16 take a `BF16_BITS` constexpr: the
launcher passes True only to an InterpretedFunction, and `to_bf16_` then rounds on the bits
(exact, ties to even); compiled kernels get False and the hardware conversion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from compiler.core.errors import TilefuseError
from compiler.core.schedule import REDUCTION_LIKE
from compiler.core.types import DType


class TritonUnsupportedError(TilefuseError, NotImplementedError):
    """A kernel (or a node in it) this backend cannot render; the message names it."""


# IR dtype -> the Triton type of its values in registers (floats compute wider) and in memory
TL_STORAGE = {
    DType.f64: "tl.float64",
    DType.f32: "tl.float32",
    DType.f16: "tl.float16",
    DType.bf16: "tl.bfloat16",
    DType.i64: "tl.int64",
    DType.i32: "tl.int32",
    DType.bool: "tl.int1",
}
# IR dtype -> the pointer type Triton's signature strings use (ASTSource)
SIGNATURE_TYPES = {
    DType.f64: "*fp64",
    DType.f32: "*fp32",
    DType.f16: "*fp16",
    DType.bf16: "*bf16",
    DType.i64: "*i64",
    DType.i32: "*i32",
    DType.bool: "*i1",
}
TORCH_DTYPES = {
    DType.f64: "torch.float64",
    DType.f32: "torch.float32",
    DType.f16: "torch.float16",
    DType.bf16: "torch.bfloat16",
    DType.i64: "torch.int64",
    DType.i32: "torch.int32",
    DType.bool: "torch.bool",
}

SQRT_HALF = 1 / math.sqrt(2)
SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
GELU_TANH_INNER = f"{SQRT_2_OVER_PI!r} * ({{x}} + 0.044715 * {{x}} * {{x}} * {{x}})"
GELU = {
    "none": f"0.5 * {{x}} * (1.0 + tl.erf({{x}} * {SQRT_HALF!r}))",
    "tanh": f"0.5 * {{x}} * (1.0 + tanh_({GELU_TANH_INNER}))",
}

ELEMENTWISE: dict[str, str] = {
    # unary
    "neg": "-{0}",
    "abs": "tl.abs({0})",
    "exp": "tl.exp({0})",
    "log": "tl.log({0})",
    "sqrt": "tl.sqrt({0})",
    "rsqrt": "1.0 / tl.sqrt({0})",
    "reciprocal": "1.0 / {0}",
    "sin": "sin_({0})",
    "cos": "cos_({0})",
    "tanh": "tanh_({0})",
    "erf": "tl.erf({0})",
    "sigmoid": "tl.sigmoid({0})",
    "relu": "tl.maximum({0}, 0, propagate_nan=tl.PropagateNan.ALL)",
    "logical_not": "({0} == 0)",
    # binary
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / {1}",
    "pow": "pow_({0}, {1})",
    "maximum": "tl.maximum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "minimum": "tl.minimum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "eq": "{0} == {1}",
    "ne": "{0} != {1}",
    "lt": "{0} < {1}",
    "le": "{0} <= {1}",
    "gt": "{0} > {1}",
    "ge": "{0} >= {1}",
    "logical_and": "({0} != 0) & ({1} != 0)",
    "logical_or": "({0} != 0) | ({1} != 0)",
    "where": "tl.where({0}, {1}, {2})",
    # composites kept whole until here
    "gelu": "{gelu0}",
    "silu": "{0} * tl.sigmoid({0})",
    "swiglu": "{0} * tl.sigmoid({0}) * {1}",
    "geglu": "{0} * {gelu1}",
    "adaln_modulate": "{0} * (1.0 + {1}) + {2}",
}
# ops the value emitter renders itself (index maps, sources, gathers, rope's rotation, cast)
STRUCTURAL = frozenset(
    {
        "reshape",
        "permute",
        "expand",
        "slice",
        "pad",
        "cat",
        "index",
        "embedding",
        "upsample_nearest2d",
        "full",
        "arange",
        "constant",
        "cast",
        "rope",
    }
)
# reduction anchors the reduction renderer lowers (one per kernel): the schedule's own set
REDUCTIONS = REDUCTION_LIKE

HELPERS = """\
@triton.jit
def to_bf16_(x, BF16_BITS: tl.constexpr):
    # fp32 -> bf16, to nearest even. BF16_BITS (only under the Triton interpreter, whose
    # conversion truncates): round on the bits; compiled kernels use the hardware conversion
    if BF16_BITS:
        b = x.to(tl.uint32, bitcast=True)
        b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        return b.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    else:
        return x.to(tl.bfloat16)


@triton.jit
def max_nan_(a, b):
    # torch's max: NaN wins (tl.maximum's default lets the other operand win)
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def min_nan_(a, b):
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def amax_(x, axis: tl.constexpr, keep_dims: tl.constexpr):
    return tl.reduce(x, axis, max_nan_, keep_dims=keep_dims)


@triton.jit
def amin_(x, axis: tl.constexpr, keep_dims: tl.constexpr):
    return tl.reduce(x, axis, min_nan_, keep_dims=keep_dims)


@triton.jit
def tanh_(x):
    # tanh from exp of a non-positive number only: no overflow for large |x|. Near 0, where
    # 1 - t cancels, a polynomial: in float32 Cephes tanhf's x + x^3 P(x^2) below |x| = 0.625
    # (as the llvm backend's tanh, backends/llvm/math.py), in float64 the Taylor series to x^7
    # below 0.01
    t = tl.exp(-2.0 * tl.abs(x))
    y = (1.0 - t) / (1.0 + t)
    y = tl.where(x < 0, -y, y)
    z = x * x
    if x.dtype == tl.float32:
        p = -5.70498872745e-3 * z + 2.06390887954e-2
        p = (p * z - 5.37397155531e-2) * z + 1.33314422036e-1
        p = p * z - 3.33332819422e-1
        y = tl.where(tl.abs(x) < 0.625, x + x * z * p, y)
    else:
        p = ((-17.0 / 315.0) * z + 2.0 / 15.0) * z - 1.0 / 3.0
        y = tl.where(tl.abs(x) < 0.01, x + x * z * p, y)
    return y


@triton.jit
def quadrant_(x):
    # x = k pi/2 + r, |r| <= pi/4, in fp32 (Cody-Waite: k C1 exact for |x| < ~1e5): (r, k mod 4).
    # Not libdevice's sin/cos, whose huge-argument path keeps a stack array (a 32 B local
    # frame on NVIDIA targets in every kernel that uses them)
    k = tl.floor(x * 0.6366197723675814 + 0.5)
    r = x - k * 1.5703125
    r = r - k * 4.837512969970703125e-4
    r = r - k * 7.549789954891882e-8
    return r, k.to(tl.int32) & 3


@triton.jit
def sincos_poly_(r):
    # Cephes sinf/cosf polynomials on [-pi/4, pi/4]
    z = r * r
    s = r + r * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4))
    c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3
                                                            + z * 2.443315711809948e-5))
    return s, c


@triton.jit
def sin_(x):
    r, q = quadrant_(x)
    s, c = sincos_poly_(r)
    y = tl.where((q & 1) == 1, c, s)
    y = tl.where(q >= 2, -y, y)
    return tl.where(x == 0.0, x, y)  # sin(-0.0) = -0.0


@triton.jit
def cos_(x):
    r, q = quadrant_(x)
    s, c = sincos_poly_(r)
    y = tl.where((q & 1) == 1, s, c)
    return tl.where((q == 1) | (q == 2), -y, y)


@triton.jit
def pow_(x, y):
    # x ** y as torch: exp2(y * log2|x|), negative bases only with integral exponents
    r = tl.exp2(y * tl.log2(tl.abs(x)))
    odd = tl.abs(y - 2.0 * tl.floor(0.5 * y)) == 1.0
    integral = y == tl.floor(y)
    r = tl.where((x < 0) & odd, -r, r)
    r = tl.where((x < 0) & (integral == 0), float("nan"), r)
    return tl.where(y == 0, 1.0, r)
"""


def unsupported(op: str) -> str | None:
    """Why a pointwise/reduction kernel cannot hold `op` in Triton, or None when it can."""
    if op in ELEMENTWISE or op in STRUCTURAL or op in REDUCTIONS:
        return None
    return f"no Triton expression for op {op!r} (backends/triton/ops.py)"


def elementwise_expr(op: str, args: Sequence[str], attrs: Mapping[str, Any]) -> str:
    """The Triton expression of elementwise `op` over the named fp32 (or int/bool) values."""
    fields: dict[str, str] = {}
    if op in ("gelu", "geglu"):
        x = args[0] if op == "gelu" else args[1]
        fields[f"gelu{0 if op == 'gelu' else 1}"] = GELU[attrs.get("approximate", "none")].format(
            x=x
        )
    return "(" + ELEMENTWISE[op].format(*args, **fields) + ")"


def literal(value: Any, dtype: DType) -> str:
    """A Python literal Triton reads as a constant of `dtype`'s compute type."""
    if dtype is DType.bool:
        return "True" if value else "False"
    if not dtype.is_float:
        return str(int(value))
    v = float(value)
    if math.isnan(v):
        return 'float("nan")'
    if math.isinf(v):
        return 'float("inf")' if v > 0 else '-float("inf")'
    return repr(v)


def compute_type(dtype: DType, compute: str) -> str:
    """The Triton type values of `dtype` have in registers (`compute` for every float)."""
    return compute if dtype.is_float else TL_STORAGE[dtype]


def narrow(x: str, to: DType) -> str:
    """fp32 `x` rounded to the narrow float `to` (Note [bf16 rounding under the interpreter])."""
    if to is DType.bf16:
        return f"to_bf16_({x}, BF16_BITS)"
    return f"{x}.to({TL_STORAGE[to]})"


def cast_expr(x: str, src: DType, to: DType, compute: str) -> str:
    """`cast` as the NumPy reference does it (compiler.core.ops.ref.cast): values of a narrow
    float type are rounded to it first (they live unrounded in fp32 between ops), then
    converted; a float result is rounded to `to` and held in the compute type again."""
    if src in (DType.f16, DType.bf16) and to != src:
        x = f"{narrow(x, src)}.to({compute})"
    if to is DType.bool:
        return f"({x} != 0)"
    if to.is_float:
        if not src.is_float:  # a bool or an integer: to the compute type, then rounded
            x = f"{x}.to({compute})"
        if to in (DType.f16, DType.bf16) or (to is DType.f32 and compute != "tl.float32"):
            return f"{narrow(x, to)}.to({compute})"
        return f"{x}.to({compute})"
    return f"{x}.to({TL_STORAGE[to]})"


def identity(op: str, dtype: DType, compute: str) -> str:
    """The fill value masked-off lanes take in a reduction of `op`."""
    if op in ("amax", "amin"):
        if dtype.is_float:
            return '-float("inf")' if op == "amax" else 'float("inf")'
        if dtype is DType.bool:
            return "False" if op == "amax" else "True"
        bits = 63 if dtype is DType.i64 else 31
        return str(-(2**bits)) if op == "amax" else str(2**bits - 1)
    return "0.0" if dtype.is_float else "0"
