"""tilefuse: a domain-specific JIT compiler for diffusion and transformer models.

    import compiler
    c = compiler.compile(model, (x,), backend="numpy")
    y = c(x)
    print(compiler.check_parity(model, (x,)))

The public names load lazily, so `passes` and `backends` can import `compiler.ir` without
pulling in the whole API (which imports them back).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "compile": "compiler.api",
    "jit": "compiler.jit_function",
    "Compiled": "compiler.api",
    "JitFunction": "compiler.jit_function",
    "load": "compiler.artifact",
    "check_parity": "compiler.parity",
    "ParityReport": "compiler.parity",
    "TilefuseError": "compiler.errors",
    "ArtifactError": "compiler.errors",
    "CaptureError": "compiler.errors",
    "InputMismatchError": "compiler.errors",
    "OpTypeError": "compiler.errors",
    "UnsupportedOpError": "compiler.errors",
    "VerifyError": "compiler.errors",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'compiler' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
