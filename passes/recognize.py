"""recognize_composites: find composites written out by hand and make each one node.

Norms (`layer_norm`, `rms_norm` as mean/var/rsqrt, with their affine weight and bias and the
float32 cast sandwich models put around them), GELU (erf and tanh forms, including Hugging
Face's decomposed `NewGELU`), SiLU, the SwiGLU and GEGLU gates, rotary embedding and adaLN
modulation. Runs after canonicalize, so each form is matched once (`pow(x, 2)` is already
`mul(x, x)`, scalars are 0-d `full`s). Attention has its own pass (`recognize_attention`).

Example (Hugging Face LLaMA's RMSNorm, after canonicalize):
    Before:
        v0: f32[2,8] = mul(x, x)
        v1: f32[2,1] = mean(v0, dims=(1,), keepdim=True)
        v2: f32[()] = full(shape=(), value=1e-06, dtype=f32)
        v3: f32[2,1] = add(v1, v2)
        v4: f32[2,1] = rsqrt(v3)
        v5: f32[2,8] = mul(x, v4)
        v6: f32[2,8] = mul(w, v5)
        return (v6,)
    After (dead nodes left for eliminate_dead_code):
        v5: f32[2,8] = rms_norm(x, normalized_shape=(8,), eps=1e-06)
        v6: f32[2,8] = rms_norm(x, w, normalized_shape=(8,), eps=1e-06)
        return (v6,)
"""

from __future__ import annotations

import math

from compiler.core.errors import OpTypeError
from compiler.core.ir import Graph, Node
from compiler.core.types import DType
from passes.match import Const, Op, Var, match
from passes.rewrite import Rewriter, Rule, apply_rules


def _scalar(rw: Rewriter, name: str) -> float | None:
    p = rw.producer_op(name, "full")
    v = None if p is None else p.attr("value")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


x, m = Var("x"), Var("m")
EPS = Var("eps", where=lambda v, rw: _scalar(rw, v) is not None)  # any scalar constant


def _try_emit(rw: Rewriter, op: str, inputs: list[str], attrs: dict[str, object]) -> str | None:
    """Emit a node, or decline (None) when its type rule rejects the inputs."""
    try:
        return rw.emit(op, inputs, attrs)
    except OpTypeError:
        return None


def _same_type(rw: Rewriter, out: str | None, node: Node) -> str | None:
    return out if out is not None and rw.type(out) == node.out.type else None


def _product(rw: Rewriter, value: str, depth: int = 2) -> list[str]:
    """The factors of a product tree of `mul` nodes (up to `depth` levels), else [value]."""
    p = rw.producer_op(value, "mul")
    if p is None or depth == 0:
        return [value]
    return [f for i in p.inputs for f in _product(rw, i, depth - 1)]


def _split_factors(rw: Rewriter, value: str, want_const: float) -> tuple[list[str], bool]:
    """Factors other than the scalar `want_const`, and whether that scalar was among them."""
    factors = _product(rw, value)
    for i, f in enumerate(factors):
        c = _scalar(rw, f)
        if c is not None and math.isclose(c, want_const, rel_tol=1e-6):
            return factors[:i] + factors[i + 1 :], True
    return factors, False


# ----------------------------------------------------------------------------- activations

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
CUBE = (Op("pow", x, Const(3.0)), Op("mul", Op("mul", x, x), x))


def _gelu_inner_tanh(rw: Rewriter, t: str) -> str | None:
    """The x of sqrt(2/pi) * (x + 0.044715 * x^3), whatever the product order."""
    rest, ok = _split_factors(rw, t, SQRT_2_OVER_PI)
    if not ok or len(rest) != 1:
        return None
    s = rw.producer_op(rest[0], "add")
    if s is None:
        return None
    for xv, cubic in (s.inputs, s.inputs[::-1]):
        rest, ok = _split_factors(rw, cubic, 0.044715)
        if ok and len(rest) == 1 and any(match(c, rest[0], rw) == {"x": xv} for c in CUBE):
            return xv
    return None


def _gelu_inner_erf(rw: Rewriter, e: str) -> str | None:
    """The x of x / sqrt(2) (as a product by 1/sqrt(2) or a division by sqrt(2))."""
    rest, ok = _split_factors(rw, e, 1 / math.sqrt(2))
    if ok and len(rest) == 1:
        return rest[0]
    d = rw.producer_op(e, "div")
    divisor = None if d is None else _scalar(rw, d.inputs[1])
    if d is not None and divisor is not None and math.isclose(divisor, math.sqrt(2), rel_tol=1e-6):
        return d.inputs[0]
    return None


def _gelu(node: Node, rw: Rewriter) -> str | None:
    """0.5 * x * (1 + tanh(...)) or 0.5 * x * (1 + erf(x / sqrt(2))), factors in any order."""
    rest, ok = _split_factors(rw, node.out.name, 0.5)
    if not ok or len(rest) != 2:
        return None
    for xv, one_plus in (rest, rest[::-1]):
        env = match(Op("add", Op("tanh", Var("t")), Const(1.0)), one_plus, rw)
        if env is not None and _gelu_inner_tanh(rw, env["t"]) == xv:
            return _same_type(rw, _try_emit(rw, "gelu", [xv], {"approximate": "tanh"}), node)
        env = match(Op("add", Op("erf", Var("e")), Const(1.0)), one_plus, rw)
        if env is not None and _gelu_inner_erf(rw, env["e"]) == xv:
            return _same_type(rw, _try_emit(rw, "gelu", [xv], {"approximate": "none"}), node)
    return None


def _silu(node: Node, rw: Rewriter) -> str | None:
    env = match(Op("mul", x, Op("sigmoid", x)), node.out.name, rw)
    return None if env is None else _same_type(rw, _try_emit(rw, "silu", [env["x"]], {}), node)


def _swiglu(node: Node, rw: Rewriter) -> str | None:
    env = match(Op("mul", Op("silu", Var("gate")), Var("up")), node.out.name, rw)
    if env is None:
        return None
    return _same_type(rw, _try_emit(rw, "swiglu", [env["gate"], env["up"]], {}), node)


def _geglu(node: Node, rw: Rewriter) -> str | None:
    env = match(Op("mul", Var("h"), Op("gelu", Var("gate"), bind="g")), node.out.name, rw)
    if env is None:
        return None
    attrs = {"approximate": env.nodes["g"].attr("approximate")}
    return _same_type(rw, _try_emit(rw, "geglu", [env["h"], env["gate"]], attrs), node)


# ----------------------------------------------------------------------------- norms


def _trailing_dims(node: Node | None, rank: int) -> tuple[int, ...] | None:
    """normalized_shape length when `node` is a keepdim mean over the trailing dims."""
    if node is None or node.op != "mean" or not node.attr("keepdim"):
        return None
    dims = tuple(sorted(d % rank for d in node.attr("dims")))
    return dims if dims == tuple(range(rank - len(dims), rank)) else None


def _inv_std(rw: Rewriter, value: str) -> tuple[str, float] | None:
    """rsqrt(var + eps) -> (var, eps); also the `1 / sqrt` written as a division is handled by
    the caller. Returns None unless eps is a non-negative scalar."""
    env = match(Op("rsqrt", Op("add", Var("var"), EPS)), value, rw)
    if env is None:
        return None
    eps = _scalar(rw, env["eps"])
    return (env["var"], eps) if eps is not None and eps >= 0 else None


def _normalized(rw: Rewriter, node: Node) -> tuple[str, str, float] | None:
    """`num * rsqrt(var + eps)` or `num / sqrt(var + eps)` -> (num, var, eps)."""
    if node.op == "mul":
        for num, inv in (node.inputs, node.inputs[::-1]):
            found = _inv_std(rw, inv)
            if found is not None:
                return num, found[0], found[1]
    if node.op == "div":
        env = match(Op("sqrt", Op("add", Var("var"), EPS)), node.inputs[1], rw)
        eps = None if env is None else _scalar(rw, env["eps"])
        if env is not None and eps is not None and eps >= 0:
            return node.inputs[0], env["var"], eps
    return None


def _norm(node: Node, rw: Rewriter) -> str | None:
    """x * rsqrt(mean(x*x) + eps) => rms_norm; (x - m) * rsqrt(mean(d*d) + eps) => layer_norm,
    with m = mean(x) and d = x - m, means over the same trailing dims."""
    found = _normalized(rw, node)
    if found is None:
        return None
    num, var, eps = found
    rank = rw.type(num).rank
    var_node = rw.producer(var)
    dims = _trailing_dims(var_node, rank)
    if dims is None or var_node is None:
        return None
    square = match(Op("mul", x, x), var_node.inputs[0], rw)
    if square is None or square["x"] != num:
        return None
    ns = rw.type(num).shape[rank - len(dims) :]
    attrs = {"normalized_shape": ns, "eps": eps}
    centered = match(Op("sub", x, m), num, rw)
    if centered is not None:
        mean_of = rw.producer(centered["m"])
        is_mean_of_x = mean_of is not None and mean_of.inputs[0] == centered["x"]
        if is_mean_of_x and _trailing_dims(mean_of, rank) == dims:
            return _same_type(rw, _try_emit(rw, "layer_norm", [centered["x"]], attrs), node)
    # Otherwise it is the root-mean-square norm of whatever `num` is.
    return _same_type(rw, _try_emit(rw, "rms_norm", [num], attrs), node)


def _affine_weight(node: Node, rw: Rewriter) -> str | None:
    """mul(norm(x), w) => norm(x, w) when w is exactly a normalized_shape tensor."""
    for n_val, w_val in (node.inputs, node.inputs[::-1]):
        p = rw.producer(n_val)
        if p is None or p.op not in ("layer_norm", "rms_norm") or len(p.inputs) != 1:
            continue
        wt = rw.type(w_val)
        if wt.shape == tuple(p.attr("normalized_shape")) and wt.dtype == rw.type(n_val).dtype:
            out = _try_emit(rw, p.op, [p.inputs[0], w_val], p.attr_dict)
            return _same_type(rw, out, node)
    return None


def _affine_bias(node: Node, rw: Rewriter) -> str | None:
    """add(layer_norm(x, w), b) => layer_norm(x, w, b) when b is a normalized_shape tensor."""
    for n_val, b_val in (node.inputs, node.inputs[::-1]):
        p = rw.producer_op(n_val, "layer_norm")
        if p is None or len(p.inputs) != 2:
            continue
        bt = rw.type(b_val)
        if bt.shape == tuple(p.attr("normalized_shape")) and bt.dtype == rw.type(n_val).dtype:
            out = _try_emit(rw, "layer_norm", [*p.inputs, b_val], p.attr_dict)
            return _same_type(rw, out, node)
    return None


_WIDER = {DType.bf16: DType.f32, DType.f16: DType.f32}


def _cast_sandwich(node: Node, rw: Rewriter) -> str | None:
    """cast(norm_or_softmax(cast(x, f32)), x.dtype) => norm_or_softmax(x): the composite
    accumulates in float32 itself (only the rounding of its float32 output is saved)."""
    inner = rw.producer(node.inputs[0])
    if inner is None or inner.op not in ("rms_norm", "layer_norm", "softmax", "log_softmax"):
        return None
    if len(inner.inputs) != 1:
        return None
    up = rw.producer_op(inner.inputs[0], "cast")
    if up is None:
        return None
    src = rw.type(up.inputs[0]).dtype
    if _WIDER.get(src) != up.attr("dtype") or node.attr("dtype") != src:
        return None
    return _same_type(rw, _try_emit(rw, inner.op, [up.inputs[0]], inner.attr_dict), node)


# ----------------------------------------------------------------------------- rope, adaLN


def _rope(node: Node, rw: Rewriter) -> str | None:
    """x * cos + cat(-x[..., d/2:], x[..., :d/2]) * sin => rope(x, cos, sin)."""
    half_a = Op("slice", x, bind="lo")
    half_b = Op("slice", x, bind="hi")
    rotated = Op("cat", Op("neg", half_b), half_a, bind="cat")
    pattern = Op("add", Op("mul", x, Var("cos")), Op("mul", rotated, Var("sin")))
    env = match(pattern, node.out.name, rw)
    if env is None:
        return None
    t = rw.type(env["x"])
    last, d = t.rank - 1, t.shape[-1]
    lo, hi, cat = env.nodes["lo"], env.nodes["hi"], env.nodes["cat"]
    want_lo = {"dim": last, "start": 0, "end": d // 2, "step": 1}
    want_hi = {"dim": last, "start": d // 2, "end": d, "step": 1}
    if d % 2 or lo.attr_dict != want_lo or hi.attr_dict != want_hi or cat.attr("dim") != last:
        return None
    out = _try_emit(rw, "rope", [env["x"], env["cos"], env["sin"]], {})
    return _same_type(rw, out, node)


def _adaln(node: Node, rw: Rewriter) -> str | None:
    """x * (1 + scale) + shift => adaln_modulate(x, scale, shift)."""
    pattern = Op("add", Op("mul", x, Op("add", Var("scale"), Const(1.0))), Var("shift"))
    env = match(pattern, node.out.name, rw)
    if env is None:
        return None
    out = _try_emit(rw, "adaln_modulate", [env["x"], env["scale"], env["shift"]], {})
    return _same_type(rw, out, node)


RECOGNIZE_RULES = [
    Rule("0.5 * x * (1 + tanh|erf(...)) => gelu(x)", "mul", _gelu),
    Rule("mul(x, sigmoid(x)) => silu(x)", "mul", _silu),
    Rule(
        "x * rsqrt(mean(x*x) + eps) => rms_norm(x); (x-m) * rsqrt(var + eps) => layer_norm(x)",
        "mul",
        _norm,
    ),
    Rule(
        "x / sqrt(mean(x*x) + eps) => rms_norm(x); (x-m) / sqrt(var + eps) => layer_norm(x)",
        "div",
        _norm,
    ),
    Rule("cast(norm(cast(x, f32)), x.dtype) => norm(x)", "cast", _cast_sandwich),
    Rule("mul(norm(x), w) => norm(x, w)", "mul", _affine_weight),
    Rule("add(layer_norm(x, w), b) => layer_norm(x, w, b)", "add", _affine_bias),
    Rule("mul(silu(gate), up) => swiglu(gate, up)", "mul", _swiglu),
    Rule("mul(h, gelu(gate)) => geglu(h, gate)", "mul", _geglu),
    Rule("x * cos + rotate_half(x) * sin => rope(x, cos, sin)", "add", _rope),
    Rule("x * (1 + scale) + shift => adaln_modulate(x, scale, shift)", "add", _adaln),
]


def recognize_composites(g: Graph, rules: list[Rule] = RECOGNIZE_RULES) -> Graph:
    """Rewrite hand-written composites to single nodes (see the module docstring)."""
    return apply_rules(g, rules)
