"""tilefuse: a domain-specific JIT compiler for diffusion and transformer models.

    import compiler
    c = compiler.compile(model, (x,), backend="numpy")
    y = c(x)
    print(compiler.check_parity(model, (x,)))

The public names load lazily: `import compiler` stays cheap, and `compiler.load` does not
pull in the passes or the renderers it does not need.
"""

from __future__ import annotations

import importlib
from typing import Any

from compiler.core.version import __version__ as __version__

_PUBLIC = {
    "compile": "compiler.api",
    "jit": "compiler.jit_function",
    "Compiled": "compiler.compiled",
    "JitFunction": "compiler.jit_function",
    "load": "compiler.artifact_load",
    "check_parity": "compiler.parity",
    "ParityReport": "compiler.parity_rule",
    "TilefuseError": "compiler.core.errors",
    "ArtifactError": "compiler.core.errors",
    "CaptureError": "compiler.core.errors",
    "ConfigError": "compiler.core.errors",
    "IndexOutOfRangeError": "compiler.core.errors",
    "InputMismatchError": "compiler.core.errors",
    "ModuleChangedError": "compiler.core.errors",
    "OpTypeError": "compiler.core.errors",
    "UnsupportedOpError": "compiler.core.errors",
    "VerifyError": "compiler.core.errors",
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
