"""The guard of a compiled model: it notices when the module it was compiled from changed in a
way the compiled graph does not follow, so a compiled model never runs yesterday's structure.

    c = compiler.compile(unet, (x, t, e))
    unet.set_adapter("b")       # or a submodule replaced, a flag `forward` branches on flipped
    c(x, t, e)                  # ModuleChangedError naming what changed (compiler.jit recompiles)

Note [Guarding the module]
The graph is a trace of one run of `forward`: every Python value `forward` read (an active
adapter's name, a flag, a scaling factor, which submodule sits where) is baked into it. Only
tensors are inputs: a weight changed in place, or a parameter replaced by one of the same
shape, is read again on every call. So a `Guard` keeps a snapshot of everything else the
module tree holds that a trace can read (`_snapshot`): each module's class and children,
the shapes of its parameters and buffers, its hooks, and every attribute holding plain values
(numbers, strings, enums, dtypes, and tuples, lists, sets and dicts of them). Anything else,
an object it does not know, is not snapshotted.

Walking the tree costs milliseconds on a large model, too much for every call. So the walk
runs only when something may have changed: `nn.Module.__setattr__` and `__delattr__` are
wrapped (once per process, `_install`) to count every attribute written, and torch's global
module, parameter and buffer registration hooks count every submodule, parameter and buffer
added another way (`ModuleDict.__setitem__`, `register_buffer`). A call compares the count
with the one its last walk saw (nanoseconds); containers of plain values (a PEFT layer's
`scaling` dict, `merged_adapters` list) change without an attribute being written, so a call
also compares each of those with a copy taken at the walk (`==`, a fraction of a microsecond
each). Seen only at the next walk: a value written into an instance's `__dict__` directly
(bypassing `__setattr__`), a change inside a container in a container, and hooks registered
(they go into the module's hook dicts directly).
"""

from __future__ import annotations

import enum
import functools
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from compiler.core.errors import ModuleChangedError

_GENERATION = [0]  # attributes written and modules, parameters, buffers registered so far
_INSTALL_LOCK = threading.Lock()
_installed = False

# what nn.Module keeps in its __dict__ for itself; the snapshot reads them its own way
_MODULE_STATE = frozenset(
    {"_parameters", "_buffers", "_modules", "_non_persistent_buffers_set", "training"}
)
_PLAIN = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, enum.Enum)
_MAX_ITEMS = 256  # a container longer than this is not snapshotted
_UNTRACKED = object()


def _bump(*_: Any) -> None:
    # not while dynamo traces (a ModuleList slice inside torch.compile'd code registers
    # modules): a traced count would be a side effect replayed, and a guard, on every call
    if not torch.compiler.is_compiling():
        _GENERATION[0] += 1


def _install() -> None:
    """Count every attribute write and registration on any module (Note [Guarding the
    module]); once per process."""
    global _installed
    with _INSTALL_LOCK:
        if _installed:
            return
        setattr_, delattr_ = nn.Module.__setattr__, nn.Module.__delattr__

        @functools.wraps(setattr_)
        def counted_setattr(self: nn.Module, name: str, value: Any) -> None:
            _bump()
            setattr_(self, name, value)

        @functools.wraps(delattr_)
        def counted_delattr(self: nn.Module, name: str) -> None:
            _bump()
            delattr_(self, name)

        nn.Module.__setattr__ = counted_setattr  # type: ignore[method-assign]
        nn.Module.__delattr__ = counted_delattr  # type: ignore[method-assign]
        nn.modules.module.register_module_module_registration_hook(_bump)
        nn.modules.module.register_module_parameter_registration_hook(_bump)
        nn.modules.module.register_module_buffer_registration_hook(_bump)
        _installed = True


def _freeze(value: Any, depth: int = 0) -> Any:
    """`value` as an immutable, comparable summary, or _UNTRACKED for what it does not know."""
    if isinstance(value, _PLAIN):
        return value
    containers = tuple | list | set | frozenset | dict
    if depth > 3 or not isinstance(value, containers) or len(value) > _MAX_ITEMS:
        return _UNTRACKED
    if isinstance(value, dict):
        pairs = [(_freeze(k, depth + 1), _freeze(v, depth + 1)) for k, v in value.items()]
        if any(k is _UNTRACKED or v is _UNTRACKED for k, v in pairs):
            return _UNTRACKED
        return ("dict", tuple(pairs))
    parts = [_freeze(v, depth + 1) for v in value]
    if any(p is _UNTRACKED for p in parts):
        return _UNTRACKED
    if isinstance(value, set | frozenset):
        return ("set", frozenset(parts))
    return (type(value).__name__, tuple(parts))


def _tensor(t: torch.Tensor | None) -> Any:
    return None if t is None else ("tensor", tuple(t.shape), t.dtype, t.device.type)


def _walk(root: nn.Module) -> Iterator[tuple[str, Any, Any]]:
    """(key, frozen value, the container itself when it is a mutable one) for everything the
    snapshot holds (Note [Guarding the module])."""
    for path, m in root.named_modules(remove_duplicate=False):
        where = path or "<root>"
        yield f"{where} (its class)", type(m), None
        yield f"{where}.training", m.training, None
        # which children, not which objects: one replaced by a module of the same class and
        # shapes is read as the old one was (its weights are inputs, its attributes compared)
        children = tuple(n for n, c in m._modules.items() if c is not None)
        yield f"{where} (its children)", children, None
        for name, p in m._parameters.items():
            yield f"{where}.{name} (parameter)", _tensor(p), None
        for name, b in m._buffers.items():
            yield f"{where}.{name} (buffer)", _tensor(b), None
        for name, value in vars(m).items():
            if name in _MODULE_STATE:
                continue
            if "_hooks" in name and isinstance(value, dict):  # seen at a walk only
                yield f"{where}.{name}", tuple(map(id, value.values())), None
                continue
            frozen = _freeze(value)
            if frozen is _UNTRACKED:
                continue
            mutable = value if isinstance(value, list | dict | set) else None
            yield f"{where}.{name}", frozen, mutable


class Guard:
    """Whether `root`, the module a model was compiled from, still holds what the compile
    read (Note [Guarding the module]). `check()` raises `ModuleChangedError` naming what
    changed."""

    def __init__(self, root: nn.Module, what: str) -> None:
        _install()
        self.root, self.what = root, what
        walked = list(_walk(root))
        self.snapshot = {key: frozen for key, frozen, _ in walked}  # what the compile saw
        self._watch(walked)

    def _watch(self, walked: list[tuple[str, Any, Any]]) -> None:
        """Start the per-call check from the tree as `walked` now: the count of writes, and
        the mutable containers the snapshot holds, with copies of them (`==` of the two
        tuples is one comparison in C, container by container)."""
        self.generation = _GENERATION[0]
        live, saved = [], []
        for key, _, container in walked:
            if container is None or key not in self.snapshot:
                continue
            try:
                copy = container.copy()
            except Exception:  # a subclass that cannot be copied: seen at a walk only
                continue
            live.append(container)
            saved.append(copy)
        self.containers, self.copies = tuple(live), tuple(saved)

    def check(self) -> None:
        """Nothing when the module holds what it did at compile; else `ModuleChangedError`."""
        if _GENERATION[0] == self.generation and self.containers == self.copies:
            return
        # what the compile saw, compared: an attribute added since (torch.compile's
        # `_is_torch_compile`, a cache) was not read by the graph; a module added is a change
        # of its parent's children
        walked = list(_walk(self.root))
        now = {key: frozen for key, frozen, _ in walked}
        was = self.snapshot
        changed = [
            f"{key} {_show(old)} -> {_show(now.get(key, _UNTRACKED))}"
            for key, old in was.items()
            if now.get(key, _UNTRACKED) != old
        ]
        if not changed:  # attributes written, nothing the compile saw changed
            self._watch(walked)
            return
        shown = "; ".join(changed[:3]) + (
            f"; and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        raise ModuleChangedError(
            f"{self.what}: the module changed since it was compiled, in what the compiled graph "
            f"read as constants: {shown}. Compile it again (compiler.jit recompiles by itself)"
        )


def _show(frozen: Any) -> str:
    """A snapshot value as the user wrote it: `{'a': 1.0}`, `[2, 3]`, a tensor's shape."""
    if frozen is _UNTRACKED:
        return "(absent)"
    if isinstance(frozen, type):
        return frozen.__name__
    if isinstance(frozen, tuple) and frozen and frozen[0] == "tensor":
        return f"a {str(frozen[2]).removeprefix('torch.')} tensor {list(frozen[1])}"
    if isinstance(frozen, tuple) and len(frozen) == 2 and frozen[0] == "dict":
        return "{" + ", ".join(f"{_show(k)}: {_show(v)}" for k, v in frozen[1]) + "}"
    if isinstance(frozen, tuple) and len(frozen) == 2 and frozen[0] in ("list", "tuple", "set"):
        inner = ", ".join(_show(v) for v in frozen[1])
        return {"list": f"[{inner}]", "tuple": f"({inner})", "set": f"{{{inner}}}"}[frozen[0]]
    return repr(frozen)
