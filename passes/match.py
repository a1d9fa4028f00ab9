"""Tree patterns over the graph, for recognition rules.

    x = Var("x")
    GELU_TANH = Op("mul", Op("mul", x, Const(0.5)), Op("add", Op("tanh", ...), Const(1.0)))
    env = match(GELU_TANH, node.out.name, rw)   # {"x": "v30", ...} or None

`Var` binds a value (the same name must bind the same value everywhere in a pattern), `Const`
matches a uniform `full` with a value close to the given one, `Op` matches a node's op, inputs
and attribute constraints; commutative ops try both input orders. `Op(..., bind="name")` binds
the matched node's value too, so a rule can read its attributes (`env.nodes["name"]`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from compiler.core.ir import Node
from passes.rewrite import Rewriter

COMMUTATIVE = {"add", "mul", "maximum", "minimum", "eq", "ne", "logical_and", "logical_or"}


class Pattern:
    """Base of the pattern tree."""


@dataclass(frozen=True)
class Var(Pattern):
    name: str
    where: Callable[[str, Rewriter], bool] | None = None  # extra condition on the value


@dataclass(frozen=True)
class Const(Pattern):
    value: float
    rel_tol: float = 1e-6  # Python floats: only a real constant matches, not a nearby one
    bind: str | None = None


@dataclass(frozen=True)
class Op(Pattern):
    op: str
    args: tuple[Pattern, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)  # value or predicate per attribute
    bind: str | None = None

    def __init__(self, op: str, *args: Pattern, bind: str | None = None, **attrs: Any) -> None:
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "args", tuple(args))
        object.__setattr__(self, "attrs", attrs)
        object.__setattr__(self, "bind", bind)


class Env(dict[str, str]):
    """Bound value names; `nodes` holds the nodes bound with `bind=`."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, Node] = {}

    def copy(self) -> Env:  # type: ignore[override]
        new = Env()
        new.update(self)
        new.nodes.update(self.nodes)
        return new


def match(pattern: Pattern, value: str, rw: Rewriter) -> Env | None:
    """Match `pattern` rooted at `value`; the bindings, or None."""
    return _match(pattern, value, rw, Env())


def _bind(env: Env, name: str, value: str) -> Env | None:
    if name in env and env[name] != value:
        return None
    env = env.copy()
    env[name] = value
    return env


def _match(p: Pattern, value: str, rw: Rewriter, env: Env) -> Env | None:
    if isinstance(p, Var):
        if p.where is not None and not p.where(value, rw):
            return None
        return _bind(env, p.name, value)
    node = rw.producer(value)
    if isinstance(p, Const):
        if node is None or node.op != "full":
            return None
        v = node.attr("value")
        if isinstance(v, bool) or not math.isclose(v, p.value, rel_tol=p.rel_tol, abs_tol=1e-12):
            return None
        return _bind(env, p.bind, value) if p.bind else env
    assert isinstance(p, Op)
    if node is None or node.op != p.op or len(node.inputs) != len(p.args):
        return None
    for k, want in p.attrs.items():
        got = node.attr(k)
        if not (want(got) if callable(want) else got == want):
            return None
    if p.bind:
        bound = _bind(env, p.bind, value)
        if bound is None:
            return None
        bound.nodes[p.bind] = node
        env = bound
    orders = [node.inputs]
    if p.op in COMMUTATIVE and len(node.inputs) == 2:
        orders.append(node.inputs[::-1])
    for inputs in orders:
        result: Env | None = env
        for sub, inp in zip(p.args, inputs, strict=True):
            result = _match(sub, inp, rw, result) if result is not None else None
        if result is not None:
            return result
    return None
