"""`verify(graph)`: the IR invariants every pass must keep.

Checked: every value is defined once and before use; every node's op exists, its arity and
attributes are what the op declares, and its recorded output type is what the type rule infers;
outputs name defined values.
"""

from __future__ import annotations

from compiler.core.errors import OpTypeError, VerifyError
from compiler.core.ir import Graph
from compiler.core.ops import get, infer_type, normalize_attrs


def verify(g: Graph) -> Graph:
    """Raise VerifyError naming the first broken invariant; return the graph when it holds."""
    defined: dict[str, object] = {}
    for v in g.inputs:
        if v.name in defined:
            raise VerifyError(f"{g.name}: input {v.name} defined twice")
        defined[v.name] = v.type
    for n in g.nodes:
        where = f"{g.name}: node {n.out.name} = {n.op}(...)"
        for i in n.inputs:
            if i not in defined:
                raise VerifyError(f"{where}: input {i} used before it is defined")
        if n.out.name in defined:
            raise VerifyError(f"{where}: value {n.out.name} defined twice")
        try:
            op = get(n.op)
            attrs = n.attr_dict
            if list(attrs) != list(normalize_attrs(op, attrs)):
                raise VerifyError(f"{where}: attributes {list(attrs)} not in declared order/form")
            want = infer_type(n.op, [defined[i] for i in n.inputs], attrs)  # type: ignore[misc]
        except OpTypeError as e:
            raise VerifyError(f"{where}: {e}") from e
        if want != n.out.type:
            raise VerifyError(f"{where}: recorded type {n.out.type}, type rule gives {want}")
        defined[n.out.name] = n.out.type
    for o in g.outputs:
        if o not in defined:
            raise VerifyError(f"{g.name}: output {o} is not defined")
    return g
