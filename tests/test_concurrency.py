"""Threads and processes: the first call of a `jit` function from 8 threads compiles once and
all get correct results; one compiled program called from 8 threads at once gives each its own
answer (its planned memory is per call, or its calls are serialized); two processes compiling
into one empty cache both succeed and leave a cache a third process compiles nothing from."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import compiler

THREADS = 8


def _block(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    h = torch.nn.functional.gelu(x @ w)
    return torch.nn.functional.layer_norm(h + x, (16,)).softmax(-1)


def _inputs(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(32, 16, generator=g), torch.randn(16, 16, generator=g)


def _together(work: Callable[[int], Any]) -> list[Any]:
    """`work(i)` for i in range(THREADS), started at once; the results, or the first error."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=60)
            results[i] = work(i)
        except BaseException as e:  # a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
def test_first_jit_calls_from_eight_threads_compile_once(backend: str) -> None:
    f = compiler.jit(_block, backend=backend)
    inputs = [_inputs(i) for i in range(THREADS)]
    results = _together(lambda i: f(*inputs[i]))
    for args, out in zip(inputs, results, strict=True):
        torch.testing.assert_close(out, _block(*args), rtol=1e-5, atol=1e-5)
    assert f.stats == {"compiles": 1, "calls": THREADS, "cache_hits": THREADS - 1}
    assert len(f.cache) == 1


@pytest.mark.parametrize("backend", ["llvm", "numpy", "triton"])
def test_one_program_called_from_eight_threads_answers_each(backend: str) -> None:
    c = compiler.compile(_block, _inputs(0), backend=backend)
    inputs = [_inputs(i) for i in range(THREADS)]
    for _ in range(3):  # calls overlapping in every phase
        results = _together(lambda i: c(*inputs[i]))
        for args, out in zip(inputs, results, strict=True):
            torch.testing.assert_close(out, _block(*args), rtol=1e-5, atol=1e-5)


COMPILE = """
import sys, torch, compiler
from backends.llvm import jit
from tests.test_concurrency import _block, _inputs
c = compiler.compile(_block, _inputs(0), backend="llvm")
torch.testing.assert_close(c(*_inputs(1)), _block(*_inputs(1)), rtol=1e-5, atol=1e-5)
print(jit.STATS["compiled"])
"""


def test_two_processes_fill_one_empty_cache(tmp_path: Path) -> None:
    env = {"TILEFUSE_CACHE_DIR": str(tmp_path / "cache"), "TILEFUSE_COMPILE_JOBS": "1"}
    repo = Path(__file__).resolve().parents[1]

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", COMPILE], cwd=repo, text=True, env={**os.environ, **env},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    first, second = start(), start()
    for p in (first, second):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    third = start()
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err[-2000:]
    assert out.split() == ["0"]  # every kernel served from the cache the two left
    assert "damaged" not in err
