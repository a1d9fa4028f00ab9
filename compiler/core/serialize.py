"""Graphs and schedules as JSON-ready data, for saved artifacts (`compiler.artifact`).

    constants = {}
    data = encode_schedule(schedule, constants)        # json.dumps(data) works
    same = decode_schedule(data, constants)            # == schedule, graph verified

Every attribute kind of the IR round-trips exactly: floats as `float.hex` (inf, nan and -0.0
survive), tuples, dtypes, and tensor constants by content digest (the arrays go into
`constants`, saved beside the JSON). Tile configs are frozen dataclasses of plain values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from compiler.core.errors import ArtifactError
from compiler.core.ir import ConstArray, Graph, Node, Value
from compiler.core.schedule import KernelSpec, Schedule
from compiler.core.tile_config import TileConfig
from compiler.core.types import DType, TensorType
from compiler.core.verify import verify

_DTYPES = {d.value: d for d in DType}


def encode_value(v: Value) -> dict[str, Any]:
    return {"name": v.name, "shape": list(v.type.shape), "dtype": v.type.dtype.value}


def decode_value(d: dict[str, Any]) -> Value:
    return Value(d["name"], TensorType(tuple(d["shape"]), _DTYPES[d["dtype"]]))


def encode_attr(a: Any, constants: dict[str, np.ndarray]) -> Any:
    if a is None or isinstance(a, bool | int | str):
        return a
    if isinstance(a, float):
        return {"float": a.hex()}  # exact, and inf/nan/-0.0 survive
    if isinstance(a, tuple):
        return {"tuple": [encode_attr(x, constants) for x in a]}
    if isinstance(a, DType):
        return {"dtype": a.value}
    if isinstance(a, ConstArray):
        constants[a.digest] = a.array()
        return {"const": a.digest}
    raise ArtifactError(f"cannot save attribute value {a!r} of type {type(a).__name__}")


def decode_attr(a: Any, constants: Any) -> Any:
    if not isinstance(a, dict):
        return a
    ((kind, x),) = a.items()
    if kind == "float":
        return float.fromhex(x)
    if kind == "tuple":
        return tuple(decode_attr(e, constants) for e in x)
    if kind == "dtype":
        return _DTYPES[x]
    return ConstArray.of(constants[x])


def encode_node(n: Node, constants: dict[str, np.ndarray]) -> dict[str, Any]:
    attrs = [[k, encode_attr(v, constants)] for k, v in n.attrs]
    out = encode_value(n.out)
    return {"op": n.op, "inputs": list(n.inputs), "attrs": attrs, "out": out, "source": n.source}


def decode_node(d: dict[str, Any], constants: Any) -> Node:
    attrs = tuple((k, decode_attr(v, constants)) for k, v in d["attrs"])
    return Node(d["op"], tuple(d["inputs"]), attrs, decode_value(d["out"]), d["source"])


def encode_graph(g: Graph, constants: dict[str, np.ndarray]) -> dict[str, Any]:
    """`g` as JSON-ready data; tensor constants go into `constants` under their digest."""
    return {
        "name": g.name,
        "inputs": [encode_value(v) for v in g.inputs],
        "nodes": [encode_node(n, constants) for n in g.nodes],
        "outputs": list(g.outputs),
    }


def decode_graph(data: dict[str, Any], constants: Any) -> Graph:
    """The inverse of `encode_graph`, verified against the op table."""
    nodes = tuple(decode_node(n, constants) for n in data["nodes"])
    inputs = tuple(decode_value(v) for v in data["inputs"])
    return verify(Graph(data["name"], inputs, nodes, tuple(data["outputs"])))


def _encode_tile(tile: Any, constants: dict[str, np.ndarray]) -> Any:
    if tile is None:
        return None
    fields = {f.name: getattr(tile, f.name) for f in dataclasses.fields(tile)}
    runner_up = fields.pop("runner_up")
    out = {k: encode_attr(v, constants) for k, v in fields.items()}
    out["runner_up"] = _encode_tile(runner_up, constants)
    return out


def _decode_tile(data: Any, constants: Any) -> Any:
    if data is None:
        return None
    fields = {k: decode_attr(v, constants) for k, v in data.items() if k != "runner_up"}
    return TileConfig(**fields, runner_up=_decode_tile(data["runner_up"], constants))


def encode_schedule(s: Schedule, constants: dict[str, np.ndarray]) -> dict[str, Any]:
    """`s` (graph, kernels with their tiles, refusals) as JSON-ready data."""
    kernels = [
        {
            "name": k.name,
            "kind": k.kind,
            "inputs": [encode_value(v) for v in k.inputs],
            "body": [encode_node(n, constants) for n in k.body],
            "outputs": list(k.outputs),
            "domain": list(k.domain),
            "reduction_axes": list(k.reduction_axes),
            "anchors": list(k.anchors),
            "tile": _encode_tile(k.tile, constants),
        }
        for k in s.kernels
    ]
    graph = encode_graph(s.graph, constants)
    return {"graph": graph, "kernels": kernels, "refusals": list(s.refusals)}


def decode_schedule(data: dict[str, Any], constants: Any) -> Schedule:
    """The inverse of `encode_schedule`."""
    kernels = tuple(
        KernelSpec(
            name=k["name"],
            kind=k["kind"],
            inputs=tuple(decode_value(v) for v in k["inputs"]),
            body=tuple(decode_node(n, constants) for n in k["body"]),
            outputs=tuple(k["outputs"]),
            domain=tuple(k["domain"]),
            reduction_axes=tuple(k["reduction_axes"]),
            anchors=tuple(k["anchors"]),
            tile=_decode_tile(k["tile"], constants),
        )
        for k in data["kernels"]
    )
    graph = decode_graph(data["graph"], constants)
    return Schedule(graph, kernels, tuple(data["refusals"]))
