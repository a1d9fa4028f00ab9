"""Backends: each turns the optimized program into something that runs.

A backend is a module with `NAME`, `supports(spec) -> bool` and
`render_schedule(schedule, float_dtype=...) -> program`, where the program has `.source` (the
generated code, readable) and `.load()` (the callable) and `.load_namespace()` (its kernel
functions by kernel name). Built: `numpy` (the readable reference, the oracle), `llvm`
(native CPU code; matmul, conv2d and attention are extern calls into the library torch ships)
and `triton` (pointwise and reduction kernels so far; under the Triton interpreter without a
GPU). `auto` means the fastest backend on this machine: `llvm` (`triton` once it renders every
kernel kind and a GPU is present). `check_parity` checks the `PARITY_DEFAULT` backends unless
told otherwise: `triton` joins them once it renders every kernel kind.
"""

from __future__ import annotations

import importlib
from types import ModuleType

AVAILABLE = ("numpy", "llvm", "triton")
PLANNED: tuple[str, ...] = ()  # named in the design; not built yet
PARITY_DEFAULT = ("numpy", "llvm")
_MODULES = {
    "numpy": "backends.numpy_kernels",
    "llvm": "backends.llvm_cpu",
    "triton": "backends.triton_backend",
}


def resolve(name: str) -> str:
    """The concrete backend for `name`, or a ValueError that lists the choices."""
    if name == "auto":
        return "llvm"
    if name in AVAILABLE:
        return name
    if name in PLANNED:
        raise ValueError(
            f"backend {name!r} is not built yet; available: {', '.join(AVAILABLE)} (or 'auto')"
        )
    raise ValueError(f"unknown backend {name!r}; available: {', '.join(AVAILABLE)} (or 'auto')")


def get(name: str) -> ModuleType:
    """The module implementing backend `name` (see the module docstring for its interface)."""
    return importlib.import_module(_MODULES[resolve(name)])
