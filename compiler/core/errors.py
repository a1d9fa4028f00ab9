"""Errors a user can meet. Each names what went wrong, where in the user's code, and what to do."""

from __future__ import annotations


class TilefuseError(Exception):
    """Base class of every error tilefuse raises on purpose."""


class OpTypeError(TilefuseError, TypeError):
    """An op was given inputs or attributes its type rule rejects."""


class VerifyError(TilefuseError):
    """A graph broke an IR invariant (types, def-before-use, attributes)."""


class UnsupportedOpError(TilefuseError, NotImplementedError):
    """The captured program uses an ATen op (or an op form) outside tilefuse's op set."""

    ADD_OP_HINT = (
        "To add it: declare the op in compiler/core/ops/ (type rule + NumPy reference) and lower "
        "the ATen op in compiler/frontend/aten_ops.py or compiler/frontend/aten_nn.py (see "
        "compiler/frontend/lowering.py)."
    )

    def __init__(
        self, op: str, node: str, source: str, reason: str = "", hint: str | None = None
    ) -> None:
        """`reason`: why this use of the op is refused (default: the op is not in the table);
        `hint`: what the user can do (default: how to add the op)."""
        self.op, self.node, self.source = op, node, source
        where = source or "<unknown source line>"
        why = f": {reason}" if reason else " is not supported by tilefuse"
        hint = self.ADD_OP_HINT if hint is None else hint
        super().__init__(
            f"{op}{why}\n  node:   {node}\n  source: {where}" + (f"\n  {hint}" if hint else "")
        )


class IndexOutOfRangeError(TilefuseError, IndexError):
    """An embedding or an index op read an index outside the dimension it indexes: where eager
    raises `IndexError: index out of range in self`, a compiled model raises this (never reads
    outside the tensor)."""

    def __init__(self, op: str, node: str, source: str, index: int, size: int, lowest: int) -> None:
        """`index`: an offending index; `size`: the dimension's; `lowest`: the lowest index
        allowed (0, or -size where negative indices count from the end)."""
        self.op, self.node, self.source = op, node, source
        self.index, self.size = index, size
        where = source or "<unknown source line>"
        super().__init__(
            f"{op}: index {index} is out of range for a dimension of size {size} (allowed: "
            f"{lowest} to {size - 1}), an IndexError in eager too"
            f"\n  node:   {node}\n  source: {where}"
        )


class ConfigError(TilefuseError, ValueError):
    """A TILEFUSE_* environment variable holds a value tilefuse cannot use."""


class ModuleChangedError(TilefuseError):
    """A compiled model's module changed since the compile in a way the compiled graph does
    not follow (an adapter switched, a submodule replaced, a flag `forward` reads)."""


class CaptureError(TilefuseError):
    """torch.export could not capture the model."""


class InputMismatchError(TilefuseError, TypeError):
    """A compiled model was called with inputs unlike the ones it was compiled for."""


class ArtifactError(TilefuseError):
    """A saved artifact cannot be written or read (missing files, another format or version)."""
