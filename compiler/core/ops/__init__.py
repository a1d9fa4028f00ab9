"""The closed op set. If an op is not in `OPS`, it does not exist.

Each op is declared once, as an `OpDef`: its arity, its attributes, its type rule and its NumPy
reference (a template the NumPy backend renders into readable source), side by side. The op
modules hold the declarations by family; this module gathers them into one table.

A NumPy template is either a format string over the inputs (`{0}`, `{1}`, `{inputs}` for all of
them) and the attributes (`{dim}`), or a function `(input names, attrs) -> expression` where a
string cannot say it (slicing syntax). Attribute values are formatted by the backend, so a
`DType` attribute becomes the NumPy dtype the backend computes in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from compiler.core.errors import OpTypeError
from compiler.core.ops import compute, elementwise, recognized, structural
from compiler.core.ops.opdef import KINDS, REQUIRED, OpDef
from compiler.core.types import TensorType

__all__ = ["KINDS", "OPS", "REQUIRED", "OpDef", "get", "infer_type", "normalize_attrs"]


def _collect() -> dict[str, OpDef]:
    table: dict[str, OpDef] = {}
    for family in (elementwise.OPS, structural.OPS, compute.OPS, recognized.OPS):
        for op in family:
            if op.name in table:
                raise RuntimeError(f"op {op.name} declared twice")
            assert op.kind in KINDS, op
            table[op.name] = op
    return table


OPS: dict[str, OpDef] = _collect()


def get(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise OpTypeError(f"unknown op {name!r}: it is not in compiler.core.ops") from None


def normalize_attrs(op: OpDef, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults, reject unknown or missing attributes; returns them in declared order."""
    declared = dict(op.attrs)
    unknown = set(attrs) - set(declared)
    if unknown:
        raise OpTypeError(f"{op.name}: unknown attribute(s) {sorted(unknown)}")
    out = {}
    for k, default in op.attrs:
        if k in attrs:
            out[k] = attrs[k]
        elif default is REQUIRED:
            raise OpTypeError(f"{op.name}: missing attribute {k!r}")
        else:
            out[k] = default
    return out


def infer_type(name: str, inputs: Sequence[TensorType], attrs: Mapping[str, Any]) -> TensorType:
    """The output type of `name(*inputs, **attrs)`, or OpTypeError saying what is wrong."""
    op = get(name)
    op.check_arity(len(inputs))
    return op.infer(inputs, normalize_attrs(op, attrs))
