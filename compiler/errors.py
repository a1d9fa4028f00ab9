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

    def __init__(self, op: str, node: str, source: str, reason: str = "") -> None:
        self.op, self.node, self.source = op, node, source
        where = source or "<unknown source line>"
        why = f": {reason}" if reason else " is not supported by tilefuse"
        super().__init__(
            f"{op}{why}\n"
            f"  node:   {node}\n"
            f"  source: {where}\n"
            f"  To add it: declare the op in compiler/ops/ (type rule + NumPy reference) and lower "
            f"the ATen op in compiler/lowering.py; or run the model under "
            f'torch.compile(model, backend="tilefuse") so Dynamo runs this region eagerly.'
        )


class CaptureError(TilefuseError):
    """torch.export could not capture the model."""


class InputMismatchError(TilefuseError, TypeError):
    """A compiled model was called with inputs unlike the ones it was compiled for."""
