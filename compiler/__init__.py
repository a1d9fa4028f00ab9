"""tilefuse: a domain-specific JIT compiler for diffusion and transformer models.

import compiler
c = compiler.compile(model, (x,), backend="numpy")
y = c(x)
print(compiler.check_parity(model, (x,)))
"""

from compiler.api import Compiled, JitFunction, compile, jit
from compiler.errors import (
    CaptureError,
    InputMismatchError,
    OpTypeError,
    TilefuseError,
    UnsupportedOpError,
    VerifyError,
)
from compiler.parity import ParityReport, check_parity

__version__ = "0.1.0"

__all__ = [
    "CaptureError",
    "Compiled",
    "InputMismatchError",
    "JitFunction",
    "OpTypeError",
    "ParityReport",
    "TilefuseError",
    "UnsupportedOpError",
    "VerifyError",
    "check_parity",
    "compile",
    "jit",
]
