"""Worker processes for target verification (backends/triton_targets.verify_kernels):
cold kernels compile in spawned interpreters, which inherit no Triton/MLIR state.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

from backends.triton_target_report import Progress, TargetResult
from compiler.core.gpu import GpuProfile
from compiler.core.schedule import KernelSpec

_POOL: list[Any] = []  # [ProcessPoolExecutor, its size], made on first use


def worker_pool(n: int) -> Any:
    """Worker processes (spawned: a fresh interpreter has no Triton/MLIR state to inherit)."""
    import atexit
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if _POOL and _POOL[1] != n:
        _POOL.pop(0).shutdown()
        _POOL.clear()
    if not _POOL:
        ctx = multiprocessing.get_context("spawn")
        _POOL[:] = [ProcessPoolExecutor(max_workers=n, mp_context=ctx), n]
        atexit.register(_POOL[0].shutdown)
    return _POOL[0]


@contextlib.contextmanager
def main_hidden() -> Iterator[None]:
    """multiprocessing's spawn makes each worker import the parent's `__main__` again, so a
    user's script calling verify_targets without an `if __name__ == "__main__":` guard would
    run again in every worker and break the pool. The workers need nothing from it: while
    they start, `__main__` names no file and no module."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved = {k: getattr(main, k) for k in ("__spec__", "__file__") if hasattr(main, k)}
    main.__spec__ = None
    main.__file__ = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for k in ("__spec__", "__file__"):
            if k in saved:
                setattr(main, k, saved[k])
            else:
                delattr(main, k)


def verify_in_worker(
    spec: KernelSpec, p: GpuProfile, strided: frozenset[str], float_dtype: str, cache: str
) -> tuple[list[TargetResult], int, int, list[str]]:
    """verify_spec in a worker process: (results, compiles, cache reads, retile log lines)."""
    from backends.triton_targets import tiling_log, verify_spec

    os.environ["TILEFUSE_CACHE_DIR"] = cache  # the caller's, whatever it was at spawn time
    counter = Progress(0, "", echo=False)
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    level = tiling_log.level
    tiling_log.addHandler(handler)
    tiling_log.setLevel(logging.INFO)
    try:
        results = verify_spec(spec, p, strided=strided, float_dtype=float_dtype,
                              progress=counter)  # fmt: skip
    finally:
        tiling_log.removeHandler(handler)
        tiling_log.setLevel(level)
    return results, counter.compiled, counter.cached, messages
