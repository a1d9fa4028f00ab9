"""The native libraries our machine code calls into, found without importing torch or LLVM.

Native kernels call the OpenMP runtime torch ships (`GOMP_parallel`, `GOMP_barrier`, ...).
Using torch's own copy keeps one OpenMP thread pool in the process. The JIT (`llvm_jit`) makes
it visible to LLVM's linker; a saved shared library (`llvm_aot`) gets it through the dynamic
loader.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
from pathlib import Path


@functools.cache
def torch_lib_dir() -> Path:
    """torch's lib/ directory, located without importing torch (that costs seconds)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("torch is not installed; its libgomp and MKL are our runtime")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


@functools.cache
def libgomp() -> str:
    """The path of torch's OpenMP runtime (libgomp.so.1 or libgomp-<hash>.so.1)."""
    found = sorted(glob.glob(str(torch_lib_dir() / "libgomp*.so*")))
    if not found:
        raise RuntimeError(f"no libgomp*.so* in {torch_lib_dir()}")
    return found[0]
