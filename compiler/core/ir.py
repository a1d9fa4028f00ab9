"""The tilefuse IR: a small typed SSA graph over the closed op set of `compiler.core.ops`.

A `Graph` is frozen data: inputs, nodes in topological order, outputs. Every node has exactly one
output value, named by a string. Passes never mutate a graph; they build a new one (`Graph.replace`
or `GraphBuilder`). `str(graph)` prints valid Python, with values renumbered so dumps diff cleanly:

    def gpt2_block(x: f32[1,128,512], w_ln: f32[512], b_ln: f32[512]):
        v0: f32[1,128,512] = layer_norm(x, w_ln, b_ln, normalized_shape=(512,), eps=1e-05)
        return (v0,)

Note [Scalars are 0-d constants]
Binary ops take two tensors of one dtype. A Python scalar in the user's program becomes a 0-d
`full` node of the result dtype (the frontend inserts the casts that torch's type promotion
implies), so type rules stay simple: a binary op's inputs broadcast and share one dtype.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compiler.core.ops import get, infer_type, normalize_attrs
from compiler.core.types import DType, TensorType


@dataclass(frozen=True)
class Value:
    """A named SSA value: a graph input or the output of one node."""

    name: str
    type: TensorType

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, eq=False)
class ConstArray:
    """A tensor constant held inside an attribute (folded masks, tables). Hashes by content."""

    data: bytes
    shape: tuple[int, ...]
    np_dtype: str

    @staticmethod
    def of(array: np.ndarray) -> ConstArray:
        a = np.ascontiguousarray(array).reshape(np.shape(array))  # keeps 0-d arrays 0-d
        return ConstArray(a.tobytes(), tuple(a.shape), a.dtype.str)

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=np.dtype(self.np_dtype)).reshape(self.shape)

    @property
    def digest(self) -> str:
        return hashlib.sha1(self.data + repr((self.shape, self.np_dtype)).encode()).hexdigest()[:10]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ConstArray)
            and (self.shape, self.np_dtype) == (other.shape, other.np_dtype)
            and self.data == other.data
        )

    def __hash__(self) -> int:
        return hash((self.data, self.shape, self.np_dtype))

    def __repr__(self) -> str:
        return f"ConstArray({np.dtype(self.np_dtype).name}{list(self.shape)}, sha={self.digest})"


Attrs = tuple[tuple[str, Any], ...]


def make_attrs(attrs: Mapping[str, Any] | None = None) -> Attrs:
    """Attributes as a hashable tuple of (name, value) pairs in the op's declared order."""
    return tuple((k, _freeze(v)) for k, v in (attrs or {}).items())


def make_attrs_dict(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: _freeze(v) for k, v in (attrs or {}).items()}


def _freeze(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass(frozen=True)
class Node:
    """One operation: `out = op(*inputs, **attrs)`. `source` is the user's code it came from."""

    op: str
    inputs: tuple[str, ...]
    attrs: Attrs
    out: Value
    source: str = field(default="", compare=False)

    def attr(self, name: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    @property
    def attr_dict(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def name(self) -> str:
        return self.out.name

    @property
    def type(self) -> TensorType:
        return self.out.type


@dataclass(frozen=True)
class Graph:
    """Inputs, nodes in topological order, outputs (value names). Frozen: passes build new ones."""

    name: str
    inputs: tuple[Value, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[str, ...]

    def values(self) -> dict[str, Value]:
        vals = {v.name: v for v in self.inputs}
        vals.update((n.out.name, n.out) for n in self.nodes)
        return vals

    def producers(self) -> dict[str, Node]:
        return {n.out.name: n for n in self.nodes}

    def users(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {v.name: [] for v in self.inputs}
        for n in self.nodes:
            users[n.out.name] = []
        for n in self.nodes:
            for i in dict.fromkeys(n.inputs):
                users[i].append(n)
        return users

    def type_of(self, name: str) -> TensorType:
        return self.values()[name].type

    def replace(self, **changes: Any) -> Graph:
        return Graph(
            name=changes.get("name", self.name),
            inputs=tuple(changes.get("inputs", self.inputs)),
            nodes=tuple(changes.get("nodes", self.nodes)),
            outputs=tuple(changes.get("outputs", self.outputs)),
        )

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        return print_graph(self)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.op] = counts.get(n.op, 0) + 1
        return dict(sorted(counts.items()))


# ----------------------------------------------------------------------------- printing


CONST_PRINT_LIMIT = 16  # constants with at most this many elements print their values


def format_attr(v: Any) -> str:
    if isinstance(v, DType):
        return v.value
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else f"float({repr(v)!r})"  # valid Python
    if isinstance(v, tuple):
        inner = ", ".join(format_attr(x) for x in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, ConstArray):
        # Valid Python either way: small constants show their values, large ones a digest.
        if int(np.prod(v.shape)) <= CONST_PRINT_LIMIT:
            return f"const({v.array().tolist()!r})"
        return f"const(sha={v.digest!r}, shape={format_attr(v.shape)})"
    return repr(v)


def print_graph(g: Graph, *, renumber: bool = True, sources: bool = True) -> str:
    """Print the graph as Python. Intermediate values are renumbered v0, v1, ... in order."""
    names: dict[str, str] = {v.name: v.name for v in g.inputs}
    for i, n in enumerate(g.nodes):
        names[n.out.name] = f"v{i}" if renumber else n.out.name
    params = ", ".join(f"{names[v.name]}: {v.type}" for v in g.inputs)
    lines = [f"def {g.name}({params}):"]
    for n in g.nodes:
        args = [names[i] for i in n.inputs] + [f"{k}={format_attr(v)}" for k, v in n.attrs]
        line = f"    {names[n.out.name]}: {n.out.type} = {n.op}({', '.join(args)})"
        if sources and n.source:
            line += f"  # {n.source}"
        lines.append(line)
    outs = ", ".join(names[o] for o in g.outputs)
    lines.append(f"    return ({outs},)" if len(g.outputs) == 1 else f"    return ({outs})")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- building


class GraphBuilder:
    """Builds a graph node by node, inferring each output type from the op table.

    Used by the frontend and by passes that rewrite: `b.add("exp", [x])` appends a node and
    returns its output name. Names are fresh `t<n>` strings; printing renumbers them anyway.
    """

    def __init__(self, name: str, inputs: Iterable[Value] = (), *, prefix: str = "t") -> None:
        self.name = name
        self.inputs: list[Value] = list(inputs)
        self.nodes: list[Node] = []
        self.types: dict[str, TensorType] = {v.name: v.type for v in self.inputs}
        self._prefix = prefix
        self._count = 0

    def fresh(self) -> str:
        while True:
            self._count += 1
            name = f"{self._prefix}{self._count}"
            if name not in self.types:
                return name

    def add_input(self, value: Value) -> str:
        self.inputs.append(value)
        self.types[value.name] = value.type
        return value.name

    def add(
        self,
        op: str,
        inputs: Iterable[str],
        attrs: Mapping[str, Any] | None = None,
        *,
        source: str = "",
        name: str | None = None,
    ) -> str:
        ins = tuple(inputs)
        frozen = make_attrs(normalize_attrs(get(op), make_attrs_dict(attrs)))
        out_type = infer_type(op, [self.types[i] for i in ins], dict(frozen))
        out = Value(name or self.fresh(), out_type)
        self.append(Node(op, ins, frozen, out, source))
        return out.name

    def append(self, node: Node) -> str:
        self.nodes.append(node)
        self.types[node.out.name] = node.out.type
        return node.out.name

    def type(self, name: str) -> TensorType:
        return self.types[name]

    def build(self, outputs: Iterable[str]) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), tuple(outputs))
