"""`OpDef`: how one op of the IR is declared (arity, attributes, type rule, NumPy reference).

The op families (`elementwise`, `structural`, `compute`, `recognized`) declare their ops with
it; `compiler.core.ops` gathers them into the one table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from compiler.core.errors import OpTypeError
from compiler.core.types import TensorType

TypeRule = Callable[[Sequence[TensorType], Mapping[str, Any]], TensorType]
NumpyTemplate = str | Callable[[Sequence[str], Mapping[str, str]], str]

KINDS = ("elementwise", "reduction", "movement", "source", "compute", "composite")


@dataclass(frozen=True)
class OpDef:
    """One op of the IR. `attrs` lists attribute names in print order with their defaults
    (`REQUIRED` for none). `arity` is (min, max) inputs, max None for variadic."""

    name: str
    kind: str
    arity: tuple[int, int | None]
    infer: TypeRule
    numpy: NumpyTemplate
    doc: str
    attrs: tuple[tuple[str, Any], ...] = field(default=())
    aten: tuple[str, ...] = ()  # the ATen ops that lower to it, for docs/ops.md

    def check_arity(self, n: int) -> None:
        lo, hi = self.arity
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{hi if hi is not None else 'n'}"
            raise OpTypeError(f"{self.name} takes {want} inputs, got {n}")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
