"""The public entry point `compile` (`jit`, which compiles per input signature, is in
`compiler.jit_function`; the `Compiled` it gives is in `compiler.compiled`)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

import backends
from compiler import pipeline
from compiler.compiled import Compiled
from compiler.core.gpu import get_profile


def _check_gpu(gpu: str | None) -> str | None:
    """A known profile name (lower case), or a ValueError that lists them."""
    return get_profile(gpu).name if gpu else None


@contextlib.contextmanager
def collect_new_objects_only() -> Iterator[None]:
    """While compiling, the garbage collector looks only at objects made since the start
    (`gc.freeze`). Its full collections otherwise walk the whole heap, torch's and the model's
    objects too, several times a compile (Note [Garbage collection while compiling]). A no-op
    when something already froze objects (a compile within a compile, or the caller's own)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# Note [Garbage collection while compiling]
# Freezing the heap, not turning the collector off: new garbage is still collected, so it
# costs no memory, where a collector turned off lets cyclic garbage wait to the end (peak RSS
# +15 MiB on llama). Freezing took llama's compile + first call about 9 % faster.


@collect_new_objects_only()
def compile(
    model: Callable[..., Any],
    args: tuple[Any, ...] | Any,
    kwargs: Mapping[str, Any] | None = None,
    *,
    gpu: str | None = None,
    backend: str = "auto",
    compute_dtype: torch.dtype | None = None,
) -> Compiled:
    """Capture `model(*args, **kwargs)`, optimize the graph, and prepare `backend` to run it:
    every stage of `compiler.pipeline.STAGES`.

    `compute_dtype`: what the NumPy backend computes floats in (default float32, or float64
    for a float64 model); `torch.float64` makes it a tighter reference for any model.
    """
    args = args if isinstance(args, tuple) else (args,)
    kwargs = dict(kwargs or {})
    build = pipeline.Build(
        backends.resolve(backend), _check_gpu(gpu), compute_dtype, model, args, kwargs
    )
    compiled = pipeline.run(build)
    compiled.example = (args, kwargs)
    return compiled
