"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest

from backends import llvm_jit

# Note [Compiling for AVX2 on an AVX-512 CPU] in backends/llvm_jit.py: None compiles for what
# the environment selects; an AVX-512 host also runs the AVX2 code path.
ISAS = [None, "avx2"] if llvm_jit.host().vector_bits == 512 else [None]


@pytest.fixture(params=ISAS, ids=lambda isa: isa or "default")
def isa(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Run a test for the instruction set the environment selects and, on an AVX-512 host,
    again with TILEFUSE_ISA=avx2: LLVM vectorizes for 256-bit vectors with other vector factors
    and interleave counts, so reductions reassociate differently there."""
    if request.param:
        monkeypatch.setenv("TILEFUSE_ISA", request.param)
    return request.param
