"""Loading a generated Triton module once per mode: interpreted (to run on a CPU) or compiled
(to compile for a GPU target, or run on a GPU).

Note [One definition per mode]
Triton reads TRITON_INTERPRET when a @triton.jit function is *defined*, and an interpreted
definition cannot be compiled (`'InterpretedFunction' object has no attribute
'cache_key'`). So a generated module is loaded once per mode (`load_module(src,
interpret=...)`, the variable set only while its functions are defined), never by toggling
the variable globally. triton.language itself is imported here in compiled mode (its own
@triton.jit helpers such as tl.cdiv and tl.sigmoid are JITFunctions); an interpreted kernel
runs with those helpers routed to interpreted twins for the duration of its launch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import triton.experimental.gluon  # (Note [One definition per mode])
import triton.language  # noqa: F401

from compiler.core import config

_LOCK = threading.Lock()
_MODULES: dict[tuple[str, bool], ModuleType] = {}


@contextmanager
def _interpret_env(interpret: bool) -> Iterator[None]:
    """TRITON_INTERPRET set (or cleared) only while a module's @triton.jit functions are
    defined: Triton reads it then, and a compiled-mode definition must not see it."""
    old = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1" if interpret else "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = old


def load_module(source: str, *, interpret: bool) -> ModuleType:
    """The generated Triton module `source`, defined once per mode (Note [One definition per
    mode]). Written to the cache dir first: @triton.jit reads its function's source file."""
    key = (source, interpret)
    with _LOCK:
        if key in _MODULES:
            return _MODULES[key]
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        mode = "interp" if interpret else "compiled"
        directory = Path(config.load().cache_dir) / "triton_src"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"k_{digest}.py"
        if not path.exists() or path.read_text() != source:
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(source)
            tmp.replace(path)
        name = f"tilefuse_triton_{digest}_{mode}"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        with _interpret_env(interpret):
            spec.loader.exec_module(module)
        if interpret:
            _route_library_calls(module)
        _MODULES[key] = module
        return module


_INTERPRETED: dict[int, object] = {}  # id(JITFunction) -> its interpreted twin (both live)


def _route_library_calls(module: ModuleType) -> None:
    """Make each interpreted kernel of `module` run with triton.language's own @triton.jit
    helpers (tl.cdiv, tl.sigmoid, tl.zeros, ...) interpreted too (Note [One definition per
    mode]): those were defined in compiled mode when triton was imported, and a JITFunction
    refuses to be called outside a compiled kernel."""
    from triton.runtime.interpreter import InterpretedFunction

    for value in vars(module).values():
        if isinstance(value, InterpretedFunction) and "run" not in vars(value):
            value.run = _with_interpreted_library(value.run)


def _with_interpreted_library(run):  # noqa: ANN001, ANN202
    from triton.runtime.interpreter import InterpretedFunction, _patch_lang
    from triton.runtime.jit import JITFunction

    def call(self: JITFunction, *args: object, **kwargs: object) -> object:
        fn = _INTERPRETED.get(id(self))
        if fn is None:
            fn = _INTERPRETED[id(self)] = InterpretedFunction(self.fn)
        # InterpretedFunction.__call__ (a device call) patches triton.language for the
        # helper's module and never restores it, which breaks later compiles in this
        # process; patch here with a scope we restore (Triton 3.9 private helper)
        scope = _patch_lang(self.fn)
        try:
            return fn.rewrite()(*args, **kwargs)
        finally:
            scope.restore()

    def wrapped(*args: object, **kwargs: object) -> object:
        with _LOCK:
            original = JITFunction.__call__
            JITFunction.__call__ = call
            try:
                return run(*args, **kwargs)
            finally:
                JITFunction.__call__ = original

    return wrapped
