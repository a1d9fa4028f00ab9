"""`compiler.jit`: a model or function compiled on its first call per input signature, and
again when its module changed in what the graph read as constants (`compiler.guard`)."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils import _pytree as pytree

import backends
from compiler.api import _check_gpu, compile
from compiler.compiled import Compiled
from compiler.core.errors import ModuleChangedError

log = logging.getLogger("tilefuse.pipeline")


class JitFunction:
    """`compiler.jit(fn)`: compiles on the first call per input signature, then reuses."""

    def __init__(self, fn: Callable[..., Any], gpu: str | None, backend: str) -> None:
        self.fn = fn
        self.gpu = _check_gpu(gpu)
        self.backend = backend
        backends.resolve(backend)
        self.cache: dict[Any, Compiled] = {}
        self.stats: dict[str, int] = {"compiles": 0, "calls": 0, "cache_hits": 0}
        self._lock = threading.Lock()
        if not isinstance(fn, torch.nn.Module):
            functools.update_wrapper(self, fn)

    @staticmethod
    def signature(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
        leaves, spec = pytree.tree_flatten((tuple(args), dict(sorted(kwargs.items()))))
        key = tuple(
            ("tensor", tuple(x.shape), x.dtype, x.device.type)
            if isinstance(x, torch.Tensor)
            else ("value", type(x).__name__, repr(x))
            for x in leaves
        )
        return (str(spec), key)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = self.signature(args, kwargs)
        with self._lock:
            self.stats["calls"] += 1
            compiled = self.cache.get(key)
            if compiled is not None:
                try:
                    compiled.guard.check()
                except ModuleChangedError as e:  # every program of the old module is stale
                    log.info("recompiling %s: %s", compiled.graph.name, e)
                    self.cache.clear()
                    compiled = None
            if compiled is None:
                compiled = compile(self.fn, args, kwargs, gpu=self.gpu, backend=self.backend)
                self.cache[key] = compiled
                self.stats["compiles"] += 1
            else:
                self.stats["cache_hits"] += 1
        return compiled(*args, **kwargs)


def jit(
    fn: Callable[..., Any] | None = None, *, gpu: str | None = None, backend: str = "auto"
) -> Any:
    """Decorator or wrapper: `@compiler.jit(backend="numpy")` or `compiler.jit(model)`."""
    if fn is None:
        return lambda f: JitFunction(f, gpu, backend)
    return JitFunction(fn, gpu, backend)
