"""Backends: each turns the optimized program into something that runs.

Built so far: `numpy` (the readable reference, the oracle). `auto` means the best backend that
exists on this machine; while `numpy` is the only one, that is `numpy`.
"""

from __future__ import annotations

AVAILABLE = ("numpy",)
PLANNED = ("llvm", "triton")  # named in the design; not built yet


def resolve(name: str) -> str:
    """The concrete backend for `name`, or a ValueError that lists the choices."""
    if name == "auto":
        return AVAILABLE[0]
    if name in AVAILABLE:
        return name
    if name in PLANNED:
        raise ValueError(
            f"backend {name!r} is not built yet; available: {', '.join(AVAILABLE)} (or 'auto')"
        )
    raise ValueError(f"unknown backend {name!r}; available: {', '.join(AVAILABLE)} (or 'auto')")
