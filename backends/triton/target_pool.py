"""Worker processes for target verification (backends/triton/targets.verify_kernels):
cold kernels compile in spawned interpreters, which inherit no Triton/MLIR state.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

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
