"""Fixtures the test modules share."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.llvm import jit as llvm_jit

# Note [Measured choices] in backends/llvm/tuning.py: the analytic defaults, so what a test
# sees generated does not depend on this host's timings (the tuning tests turn it on).
os.environ.setdefault("TILEFUSE_TUNE", "0")

# Note [Compiling for an x86-64 level] in backends/llvm/jit.py: None compiles for what the
# environment selects; an AVX-512 host also runs the AVX2 code path.
CPUS = [None, "x86-64-v3"] if llvm_jit.host().vector_bits == 512 else [None]


@pytest.fixture(params=CPUS, ids=lambda cpu: cpu or "default")
def cpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """Run a test for the CPU the environment selects and, on an AVX-512 host, again with
    TILEFUSE_CPU=x86-64-v3 (AVX2): LLVM vectorizes for 256-bit vectors with other vector
    factors and interleave counts, so reductions reassociate differently there."""
    if request.param:
        monkeypatch.setenv("TILEFUSE_CPU", request.param)
    return request.param


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty TILEFUSE_CACHE_DIR of this test's own: object code and Triton binaries that
    no other test wrote, and none it leaves behind for them."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(cache))
    return cache


@pytest.fixture
def quiet_interpreter() -> Iterator[None]:
    """Without the Triton interpreter's one-time notice (a RuntimeWarning: it runs for parity,
    not speed), which the first test to run Triton kernels would otherwise see."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
