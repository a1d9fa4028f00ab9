"""Backends: each turns the optimized program into something that runs.

Each backend is a package (`backends/numpy`, `backends/llvm`, `backends/triton`) whose
`backend.py` defines `BACKEND`, an object with the interface of `backends.protocol.Backend`;
`get(name)` returns it. Built: `numpy` (the readable reference, the oracle), `llvm` (native
CPU code, attention and most products included; GEMMs with a weight and convolutions may call
the MKL or oneDNN that torch ships) and `triton` (every kernel kind; natively on a CUDA/ROCm
device, else under the Triton interpreter). What they share is beside them: `index` (symbolic
index arithmetic), `index_maps` (what each view reads) and `decompose` (composites as
primitive ops). `auto` means the fastest backend on this machine: `triton` when a CUDA/ROCm
device is present, else `llvm`. `check_parity` checks `parity_default()` unless told
otherwise: numpy and llvm, and triton too where it runs natively (under the interpreter it is
opt-in: `backends=("numpy", "llvm", "triton")`, slow at real sizes).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backends.protocol import Backend

AVAILABLE = ("numpy", "llvm", "triton")
PLANNED: tuple[str, ...] = ()  # named in the design; not built yet
PARITY_DEFAULT = ("numpy", "llvm")  # on a machine without a GPU; see parity_default()


def resolve(name: str) -> str:
    """The concrete backend for `name`, or a ValueError that lists the choices."""
    if name == "auto":
        return "triton" if _has_gpu() else "llvm"
    if name in AVAILABLE:
        return name
    if name in PLANNED:
        raise ValueError(
            f"backend {name!r} is not built yet; available: {', '.join(AVAILABLE)} (or 'auto')"
        )
    raise ValueError(f"unknown backend {name!r}; available: {', '.join(AVAILABLE)} (or 'auto')")


def get(name: str) -> Backend:
    """Backend `name` (or `auto`'s choice): its package's `backend.BACKEND`."""
    return importlib.import_module(f"backends.{resolve(name)}.backend").BACKEND


def parity_default() -> tuple[str, ...]:
    """The backends `check_parity` checks by default: PARITY_DEFAULT, plus triton where a
    CUDA/ROCm device runs it natively."""
    return PARITY_DEFAULT + (("triton",) if _has_gpu() else ())


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
