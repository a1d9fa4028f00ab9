"""Ahead-of-time native code: the llvm backend's kernels linked into one shared library, so a
saved artifact runs without loading LLVM at all.

    why_not = link_shared({symbol: ir_text, ...}, path / "kernels.so")   # None when written
    lib = SharedLibrary(path / "kernels.so")                             # no llvmlite here
    lib.address("tf_add_gelu_c1c778bde7")

Note [Why a shared library]
The JIT path (`llvm_jit`) needs LLVM in the process to link object files: importing
llvmlite.binding alone costs ~40 MB of resident memory and ~0.3 s. A saved artifact knows its
kernels already, so `tilefuse compile` links their -O3 position-independent objects with the
system C compiler (`cc -shared`), and `compiler.load` opens the library with the dynamic
loader. The library is only used on a CPU with the same fingerprint (vendor, model, flags) and
only when every kernel's IR is the one it was built from (`ir_digest`); otherwise loading
falls back to the JIT and its object cache. Undefined symbols (GOMP_parallel, memset) resolve
against torch's libgomp, promoted to global scope first, and libc.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from backends.llvm import native_libs
from compiler.core import config

if TYPE_CHECKING:
    from backends.llvm import jit as llvm_jit


def ir_digest(ir_text: str) -> str:
    return hashlib.sha256(ir_text.encode()).hexdigest()[:16]


@functools.cache
def cpu_fields() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (`vendor_id`, `model name`, `flags`, ...);
    empty where there is no such file."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break  # the first processor is enough
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_fingerprint() -> str:
    """What the kernels' machine code depends on, read without LLVM: for TILEFUSE_CPU=native
    this CPU (architecture, vendor, model and feature flags from /proc/cpuinfo); for an
    x86-64 level the architecture and the level only, so a library built for the level runs
    unchanged on any CPU that has it (`runs_here`; Note [Code for a level])."""
    return _fingerprint(config.load().cpu)


def host_fingerprint() -> str:
    """This CPU itself (architecture, vendor, model, feature flags), whatever level the code
    is for: what a timing on it holds for (`backends.llvm.tuning`)."""
    return _fingerprint("native")


@functools.cache
def _fingerprint(level: str) -> str:
    if level != "native":  # Note [Code for a level]
        parts: tuple[str, ...] = (platform.machine(), f"cpu={level}")
    else:
        fields = cpu_fields()
        flags = " ".join(sorted(fields.get("flags", "").split()))
        model = fields.get("model name", "")
        parts = (platform.machine(), fields.get("vendor_id", ""), model, flags)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


LEVEL_FLAGS: dict[str, frozenset[str]] = {
    "x86-64-v3": frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
}
LEVEL_FLAGS["x86-64-v4"] = LEVEL_FLAGS["x86-64-v3"] | {
    "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl",
}  # fmt: skip
"""The /proc/cpuinfo flags of each x86-64 level (`abm` is how Linux names LZCNT), for telling
whether this CPU runs a library built for the level, without LLVM."""


def runs_here(native: Mapping[str, object]) -> str | None:
    """None when a library whose manifest entry is `native` (`cpu`, and `level` unless built
    for the native CPU) runs on this CPU, else why not.

    Note [Code for a level]
    Code compiled for an x86-64 level (TILEFUSE_CPU=x86-64-v3: AVX2 and FMA) uses only the
    level's instructions, whichever CPU built it, so its fingerprint is the architecture and
    the level, and it runs on any CPU whose flags include the level's: an artifact built for
    x86-64-v3 on a Zen 4 loads its kernels.so as it is on a Zen 3 or a Haswell Xeon. Code for
    the native CPU runs only on a CPU with its exact fingerprint (another CPU compiles the
    kernels again through the JIT)."""
    level = str(native.get("level", "native"))
    if level == "native":
        return None if native.get("cpu") == _fingerprint("native") else "built for another CPU"
    if level not in LEVEL_FLAGS or native.get("cpu") != _fingerprint(level):
        return f"built for {level} on another architecture"
    missing = sorted(LEVEL_FLAGS[level] - set(cpu_fields().get("flags", "").split()))
    if missing:
        return f"built for {level}, which this CPU lacks ({', '.join(missing)})"
    return None


def link_shared(modules: Mapping[str, str], path: Path) -> str | None:
    """Compile each IR text (-O3, position independent) and link them into the shared library
    `path`. Returns None when written, else the reason it could not be (the caller logs it)."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        return "no C compiler (cc) on PATH to link the kernels into a shared library"
    from backends.llvm import jit as llvm_jit

    tm = _pic_target_machine(llvm_jit.host())
    with tempfile.TemporaryDirectory(prefix="tilefuse-aot-") as tmp:
        objects = []
        for i, ir_text in enumerate(modules.values()):
            obj = Path(tmp) / f"k{i}.o"
            obj.write_bytes(tm.emit_object(llvm_jit.optimize(ir_text)))
            objects.append(str(obj))
        out = Path(tmp) / "kernels.so"
        done = subprocess.run(
            [cc, "-shared", "-o", str(out), *objects], capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            return f"{cc} -shared failed: {done.stderr.strip()[:500]}"
        shutil.copyfile(out, path)
    return None


@functools.cache
def _pic_target_machine(h: llvm_jit.Host) -> object:
    import llvmlite.binding as llvm

    target = llvm.Target.from_triple(h.triple)
    return target.create_target_machine(
        cpu=h.cpu, features=h.features, opt=3, reloc="pic", codemodel="default"
    )


class SharedLibrary:
    """Kernels from a shared library written by `link_shared`, opened with the dynamic loader."""

    def __init__(self, path: Path) -> None:
        flags = os.RTLD_NOW | os.RTLD_GLOBAL
        # already loaded by torch: exports its symbols globally
        ctypes.CDLL(native_libs.libgomp(), mode=flags)
        self.path = path
        self._lib = ctypes.CDLL(str(path), mode=os.RTLD_NOW)

    def address(self, name: str) -> int:
        """The address of the kernel `name` (AttributeError if the library has none)."""
        address = ctypes.cast(getattr(self._lib, name), ctypes.c_void_p).value
        assert address is not None
        return address

    def __repr__(self) -> str:
        return f"SharedLibrary({self.path})"
