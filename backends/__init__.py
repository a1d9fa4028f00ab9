"""Backends: each turns the optimized program into something that runs.

A backend is a module with `NAME`, `supports(spec) -> bool` and
`render_schedule(schedule, float_dtype=...) -> program`, where the program has `.source` (the
generated code, readable) and `.load()` (the callable) and `.load_namespace()` (its kernel
functions by kernel name). Built: `numpy` (the readable reference, the oracle) and `llvm`
(native CPU code; matmul, conv2d and attention are extern calls into the library torch ships).
`auto` means the fastest backend on this machine: `llvm` (`triton` once it exists and a GPU is
present).
"""

from __future__ import annotations

import importlib
from types import ModuleType

AVAILABLE = ("numpy", "llvm")
PLANNED = ("triton",)  # named in the design; not built yet
_MODULES = {"numpy": "backends.numpy_kernels", "llvm": "backends.llvm_cpu"}


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
