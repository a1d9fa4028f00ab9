"""Elementwise ops (unary, binary, `where`, `cast`) and sources (`full`, `arange`, `constant`)."""

from __future__ import annotations

from compiler.core.errors import OpTypeError
from compiler.core.ops import rules as r
from compiler.core.ops.opdef import REQUIRED, OpDef
from compiler.core.types import DType, TensorType


def _unary(
    name: str, numpy: str, doc: str, infer: r.TypeRule = r.unary_float, aten: str = ""
) -> OpDef:
    return OpDef(name, "elementwise", (1, 1), infer, numpy, doc, aten=(aten or f"aten.{name}",))


def _binary(
    name: str, numpy: str, doc: str, infer: r.TypeRule = r.binary_same, aten: str = ""
) -> OpDef:
    return OpDef(name, "elementwise", (2, 2), infer, numpy, doc, aten=(aten or f"aten.{name}",))


UNARY = [
    _unary("neg", "-{0}", "negation", r.unary_same),
    _unary("abs", "np.abs({0})", "absolute value", r.unary_same),
    _unary("exp", "np.exp({0})", "e**x"),
    _unary("log", "np.log({0})", "natural logarithm"),
    _unary("sqrt", "np.sqrt({0})", "square root"),
    _unary("rsqrt", "np.reciprocal(np.sqrt({0}))", "1/sqrt(x)"),
    _unary("reciprocal", "np.reciprocal({0})", "1/x"),
    _unary("sin", "np.sin({0})", "sine"),
    _unary("cos", "np.cos({0})", "cosine"),
    _unary("tanh", "np.tanh({0})", "hyperbolic tangent"),
    _unary("erf", "ref.erf({0})", "the error function"),
    _unary("sigmoid", "ref.sigmoid({0})", "1/(1+exp(-x))"),
    _unary("relu", "np.maximum({0}, 0)", "max(x, 0)", r.unary_same),
    _unary(
        "logical_not",
        "np.logical_not({0})",
        "not x (bool)",
        r.unary_bool,
        "aten.logical_not, aten.bitwise_not on bool",
    ),
]

BINARY = [
    _binary("add", "{0} + {1}", "x + y (alpha folded by the frontend)"),
    _binary("sub", "{0} - {1}", "x - y", aten="aten.sub, aten.rsub"),
    _binary("mul", "{0} * {1}", "x * y"),
    _binary("div", "{0} / {1}", "true division (float)", r.binary_float),
    _binary("pow", "np.power({0}, {1})", "x ** y (float)", r.binary_float),
    _binary("maximum", "np.maximum({0}, {1})", "elementwise max", aten="aten.maximum, aten.clamp"),
    _binary("minimum", "np.minimum({0}, {1})", "elementwise min", aten="aten.minimum, aten.clamp"),
    _binary("eq", "{0} == {1}", "x == y -> bool", r.compare),
    _binary("ne", "{0} != {1}", "x != y -> bool", r.compare),
    _binary("lt", "{0} < {1}", "x < y -> bool", r.compare),
    _binary("le", "{0} <= {1}", "x <= y -> bool", r.compare),
    _binary("gt", "{0} > {1}", "x > y -> bool", r.compare),
    _binary("ge", "{0} >= {1}", "x >= y -> bool", r.compare),
    _binary(
        "logical_and",
        "np.logical_and({0}, {1})",
        "x and y (bool)",
        r.binary_bool,
        "aten.logical_and, aten.bitwise_and on bool",
    ),
    _binary(
        "logical_or",
        "np.logical_or({0}, {1})",
        "x or y (bool)",
        r.binary_bool,
        "aten.logical_or, aten.bitwise_or on bool",
    ),
]


def _full_type(ts: r.Types, a: r.Attrs) -> TensorType:
    if any(d < 0 for d in a["shape"]):
        raise OpTypeError(f"full: negative size in {a['shape']}")
    return TensorType(tuple(a["shape"]), a["dtype"])


def _arange_type(ts: r.Types, a: r.Attrs) -> TensorType:
    start, end, step = a["start"], a["end"], a["step"]
    if step == 0:
        raise OpTypeError("arange: step must be non-zero")
    n = max(0, -(-(end - start) // step)) if isinstance(step, int) else _ceil_len(start, end, step)
    return TensorType((int(n),), a["dtype"])


def _ceil_len(start: float, end: float, step: float) -> int:
    import math

    return max(0, math.ceil((end - start) / step))


def _constant_type(ts: r.Types, a: r.Attrs) -> TensorType:
    return TensorType(a["value"].shape, a["dtype"])


OTHER = [
    OpDef(
        "where",
        "elementwise",
        (3, 3),
        r.where,
        "np.where({0}, {1}, {2})",
        "cond ? x : y",
        aten=("aten.where", "aten.masked_fill"),
    ),
    OpDef(
        "cast",
        "elementwise",
        (1, 1),
        r.cast,
        'ref.cast({0}, "{dtype_ir}", {dtype}, src="{src_ir}")',
        "convert to dtype (float->int truncates; to a narrower float rounds)",
        attrs=(("dtype", REQUIRED),),
        aten=("aten._to_copy", "aten.to"),
    ),
    OpDef(
        "full",
        "source",
        (0, 0),
        _full_type,
        "np.full({shape}, {value}, dtype={dtype})",
        "a tensor filled with one value (scalars are 0-d fulls)",
        attrs=(("shape", REQUIRED), ("value", REQUIRED), ("dtype", REQUIRED)),
        aten=("aten.full", "aten.zeros", "aten.ones", "aten.scalar_tensor", "Python scalars"),
    ),
    OpDef(
        "arange",
        "source",
        (0, 0),
        _arange_type,
        "np.arange({start}, {end}, {step}).astype({dtype})",
        "start, start+step, ... < end",
        attrs=(("start", 0), ("end", REQUIRED), ("step", 1), ("dtype", DType.i64)),
        aten=("aten.arange",),
    ),
    OpDef(
        "constant",
        "source",
        (0, 0),
        _constant_type,
        "{value}",
        "a tensor constant (folded masks and tables; never weights, which are inputs)",
        attrs=(("value", REQUIRED), ("dtype", REQUIRED)),
        aten=("lifted tensor constants",),
    ),
]

OPS = UNARY + BINARY + OTHER
