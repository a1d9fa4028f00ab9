"""Parse IR text (what `print_graph` prints) back into a `Graph`: tests write Before/After IR.

    g = parse_graph('''
    def f(x: f32[2,3]):
        v0: f32[2,3] = exp(x)
        return (v0,)
    ''')

Types written on each line are checked against the type rules (`verify`). Small constant
tensors (`constant(value=const([...]), dtype=...)`) parse back; larger ones print as a digest
(`const(sha=..., shape=...)`) and cannot.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Any

import numpy as np

from compiler.core.ir import ConstArray, Graph, GraphBuilder, Value
from compiler.core.types import DType, TensorType
from compiler.core.verify import verify

_DTYPES = {d.value: d for d in DType}


def parse_type(node: ast.expr) -> TensorType:
    """`f32[2,3]` (a subscript expression) -> TensorType; 0-d is `f32[()]`."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
        raise ValueError(f"expected a type like f32[2,3], got {ast.unparse(node)}")
    dtype = _DTYPES[node.value.id]
    dims = node.slice
    if isinstance(dims, ast.Tuple):  # f32[2,3], and f32[()] for 0-d
        shape = tuple(ast.literal_eval(e) for e in dims.elts)
    else:
        shape = (ast.literal_eval(dims),)
    return TensorType(shape, dtype)


def _attr(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id in _DTYPES:
        return _DTYPES[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float":
        return float(ast.literal_eval(node.args[0]))  # float('-inf'), float('nan')
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "const":
        if node.keywords or len(node.args) != 1:
            raise ValueError(
                f"{ast.unparse(node)}: a constant printed as a digest cannot be parsed"
            )
        return _Values(ast.literal_eval(node.args[0]))
    return ast.literal_eval(node)


class _Values(list):  # type: ignore[type-arg]
    """A constant's values, waiting for the node's dtype attribute."""


def _const(values: _Values, dtype: DType) -> ConstArray:
    np_dtype = {DType.f64: np.float64, DType.i64: np.int64, DType.i32: np.int32}.get(dtype)
    if np_dtype is None:
        np_dtype = np.bool_ if dtype is DType.bool else np.float32
    return ConstArray.of(np.array(values, dtype=np_dtype))


def parse_graph(text: str) -> Graph:
    source = textwrap.dedent(text).strip() + "\n"
    module = ast.parse(source)
    fn = module.body[0]
    if not isinstance(fn, ast.FunctionDef):
        raise ValueError("IR text must be one `def name(...):`")
    inputs = []
    for a in fn.args.args:
        assert a.annotation is not None, f"input {a.arg} needs a type"
        inputs.append(Value(a.arg, parse_type(a.annotation)))
    b = GraphBuilder(fn.name, inputs)
    outputs: list[str] = []
    for stmt in fn.body:
        if isinstance(stmt, ast.Return):
            value = stmt.value
            elts = value.elts if isinstance(value, ast.Tuple) else [value]
            outputs = [e.id for e in elts if isinstance(e, ast.Name)]
            continue
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.value, ast.Call)):
            raise ValueError(f"cannot parse IR line: {ast.unparse(stmt)}")
        call = stmt.value
        assert isinstance(stmt.target, ast.Name) and isinstance(call.func, ast.Name)
        args = [a.id for a in call.args if isinstance(a, ast.Name)]
        attrs = {k.arg: _attr(k.value) for k in call.keywords if k.arg}
        attrs = {
            k: _const(v, attrs["dtype"]) if isinstance(v, _Values) else v for k, v in attrs.items()
        }
        name = b.add(call.func.id, args, attrs, name=stmt.target.id)
        declared = parse_type(stmt.annotation)
        if b.type(name) != declared:
            raise ValueError(f"{name}: written as {declared}, type rule gives {b.type(name)}")
    return verify(b.build(outputs))
