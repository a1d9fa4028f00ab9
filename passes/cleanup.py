"""Cleanup passes: fold constants, eliminate common subexpressions, eliminate dead code."""

from __future__ import annotations

import logging

import numpy as np

from compiler.core.ir import ConstArray, Graph, Node, make_attrs
from compiler.core.ops import ref
from compiler.core.reference import evaluate_node
from compiler.core.types import DType

log = logging.getLogger("tilefuse.fold")

SOURCE_OPS = ("full", "arange", "constant")
FOLD_LIMIT = 1 << 16  # elements; a larger non-uniform result stays computed (not embedded)


def fold_constants(g: Graph) -> Graph:
    """Evaluate nodes whose inputs are all constants, with the NumPy reference.

    Weights are graph inputs, so they never fold. A uniform result becomes a `full`; another
    result of at most FOLD_LIMIT elements becomes a `constant`; larger ones stay as computed.

    Example:
        Before:
            v0: i64[4] = arange(start=0, end=4, step=1, dtype=i64)
            v1: i64[()] = full(shape=(), value=2, dtype=i64)
            v2: bool[4] = lt(v0, v1)
            v3: f32[4] = where(v2, x, y)
        After:
            v0: bool[4] = constant(value=const([True, True, False, False]), dtype=bool)
            v1: f32[4] = where(v0, x, y)
    """
    types = {name: v.type for name, v in g.values().items()}

    def evaluate(n: Node, inputs: list[np.ndarray]) -> np.ndarray:
        # In the precision the program would compute it in, rounded to the node's dtype.
        wide = any(types[i].dtype is DType.f64 for i in (*n.inputs, n.out.name))
        in_types = [types[i] for i in n.inputs]
        result = evaluate_node(n, inputs, in_types, "float64" if wide else "float32")
        if n.out.type.dtype in (DType.bf16, DType.f16) and n.op not in SOURCE_OPS:
            result = ref.cast(result, n.out.type.dtype.value, np.float32)
        return result

    values: dict[str, np.ndarray] = {}
    nodes: list[Node] = []
    changed = False
    for n in g.nodes:
        if n.op in SOURCE_OPS:
            nodes.append(n)
            values[n.out.name] = evaluate(n, [])
            continue
        if not n.inputs or not all(i in values for i in n.inputs):
            nodes.append(n)
            continue
        result = evaluate(n, [values[i] for i in n.inputs])
        folded = _as_source(n, result)
        if folded is None:
            nodes.append(n)
            continue
        log.debug("folded %s = %s(...)", n.out.name, n.op)
        values[n.out.name] = result
        nodes.append(folded)
        changed = True
    return g.replace(nodes=nodes) if changed else g


def _as_source(n: Node, result: np.ndarray) -> Node | None:
    t = n.out.type
    if result.shape != t.shape:
        raise AssertionError(f"fold: {n.op} gave shape {result.shape}, type says {t}")
    flat = result.reshape(-1)
    if flat.size and (flat == flat[0]).all() and not (t.dtype.is_float and np.isnan(flat[0])):
        value = flat[0].item()
        value = float(value) if t.dtype.is_float else value
        attrs = make_attrs({"shape": t.shape, "value": value, "dtype": t.dtype})
        return Node("full", (), attrs, n.out, n.source)
    if result.size > FOLD_LIMIT:
        return None
    attrs = make_attrs({"value": ConstArray.of(result), "dtype": t.dtype})
    return Node("constant", (), attrs, n.out, n.source)


def eliminate_common_subexpressions(g: Graph) -> Graph:
    """Nodes with the same op, inputs and attributes compute the same value: keep the first.

    Example:
        Before:
            v0: f32[()] = full(shape=(), value=1.0, dtype=f32)
            v1: f32[()] = full(shape=(), value=1.0, dtype=f32)
            v2: f32[4] = add(x, v0)
            v3: f32[4] = add(x, v1)
            return (v2, v3)
        After:
            v0: f32[()] = full(shape=(), value=1.0, dtype=f32)
            v1: f32[4] = add(x, v0)
            return (v1, v1)
    """
    seen: dict[tuple[object, ...], str] = {}
    subst: dict[str, str] = {}
    nodes: list[Node] = []
    for n in g.nodes:
        ins = tuple(subst.get(i, i) for i in n.inputs)
        key = (n.op, ins, repr(n.attrs), n.out.type)  # repr: -0.0 is not 0.0, nan is nan
        if key in seen:
            subst[n.out.name] = seen[key]
            continue
        seen[key] = n.out.name
        nodes.append(n if ins == n.inputs else Node(n.op, ins, n.attrs, n.out, n.source))
    if not subst:
        return g
    return g.replace(nodes=nodes, outputs=[subst.get(o, o) for o in g.outputs])


def eliminate_dead_code(g: Graph) -> Graph:
    """Drop nodes no output depends on. Graph inputs stay (they are the call signature).

    Example:
        Before:
            v0: f32[4] = exp(x)
            v1: f32[4] = neg(x)
            return (v1,)
        After:
            v0: f32[4] = neg(x)
            return (v0,)
    """
    live = set(g.outputs)
    keep: list[Node] = []
    for n in reversed(g.nodes):
        if n.out.name in live:
            keep.append(n)
            live.update(n.inputs)
    if len(keep) == len(g.nodes):
        return g
    return g.replace(nodes=reversed(keep))
