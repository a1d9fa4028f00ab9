"""Parse IR text (what `print_graph` prints) back into a `Graph`: tests write Before/After IR.

    g = parse_graph('''
    def f(x: f32[2,3]):
        v0: f32[2,3] = exp(x)
        return (v0,)
    ''')

Types written on each line are checked against the type rules (`verify`). Constant tensors
(`constant(value=<...>)`) print as digests and cannot be parsed back.
"""

from __future__ import annotations

import ast
import textwrap
from typing import Any

from compiler.ir import DType, Graph, GraphBuilder, TensorType, Value
from compiler.verify import verify

_DTYPES = {d.value: d for d in DType}


def parse_type(node: ast.expr) -> TensorType:
    """`f32[2,3]` (a subscript expression) -> TensorType; `f32[]` is written `f32[()]`."""
    if not (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)):
        raise ValueError(f"expected a type like f32[2,3], got {ast.unparse(node)}")
    dtype = _DTYPES[node.value.id]
    dims = node.slice
    if isinstance(dims, ast.Tuple):
        shape = tuple(ast.literal_eval(e) for e in dims.elts)
    else:
        shape = (ast.literal_eval(dims),)
    return TensorType(shape, dtype)


def _attr(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id in _DTYPES:
        return _DTYPES[node.id]
    return ast.literal_eval(node)


def parse_graph(text: str) -> Graph:
    source = textwrap.dedent(text).strip() + "\n"
    source = source.replace("[]", "[()]")  # 0-d types print as f32[]
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
        name = b.add(call.func.id, args, attrs, name=stmt.target.id)
        declared = parse_type(stmt.annotation)
        if b.type(name) != declared:
            raise ValueError(f"{name}: written as {declared}, type rule gives {b.type(name)}")
    return verify(b.build(outputs))
