"""Native-code runtime for the `llvm` CPU backend: LLVM IR text in, callable machine code out.

    obj = compile_object(ir_text)            # parse, verify, -O3, emit; cached on disk
    lib = NativeLibrary([obj])               # link into this process (ORC LLJIT)
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lib.address("k0_fused_gelu"))

The IR generator lives elsewhere; this module only knows about IR *text* and object bytes.
Environment (through `compiler.core.config`): TILEFUSE_NUM_THREADS, TILEFUSE_CACHE_DIR,
TILEFUSE_CPU.

Note [Why 512-bit vectors need a feature flag]
LLVM tunes Skylake-AVX512/Cascade Lake with `prefer-256-bit`, so even with avx512f the loop
vectorizer picks ymm registers. We compile for the CPU we run on and want zmm, so `host()` adds
`-prefer-256-bit` to the feature string when avx512f is present. It is part of `Host.features`
and therefore of the object cache key.

Note [Compiling for an x86-64 level]
TILEFUSE_CPU=x86-64-v3 (or x86-64-v4) compiles for that micro-architecture level instead of
this CPU: LLVM's CPU of that name, with exactly the level's features (v3: AVX2, FMA, BMI, F16C,
MOVBE and what v2 has; v4: v3 and AVX-512 F/BW/CD/DQ/VL), tuned generically. Code for a level
runs on every CPU that has it, so an AVX-512 host runs the code path of an AVX2-only CPU: the
loop vectorizer chooses vector factors and interleave counts by register width, so on 256-bit
vectors reductions reassociate differently, and the register tiles are AVX2's (16 vector
registers of 256 bits). The tests taking the `cpu` fixture (tests/conftest.py) run for the
native CPU and for x86-64-v3 on such a host. A level this CPU lacks is refused: its code would
stop on an illegal instruction. The CPU name and feature string are part of the object cache
key, and a saved artifact's kernels.so records the level with the CPU fingerprint
(`llvm_aot.cpu_fingerprint`), so objects of one level are never served for another. `host()`
reads the setting on every call (the description is cached per value), so a test may change
it with monkeypatch.setenv; compile workers inherit it with the environment. This checks the
code we generate; for a speed figure of an AVX2 CPU, the libraries (oneDNN, MKL, ATen) must be
held to AVX2 as well, or the figure come from such a CPU.

Note [Why ORC LLJIT and not MCJIT]
Both load object files in llvmlite 0.50. MCJIT (`create_mcjit_compiler`) takes ownership of the
TargetMachine passed to it (so it cannot be the cached one) and finalizes objects with unresolved
externals without complaint: the first call segfaults. LLJIT (`create_lljit_compiler` +
`JITLibraryBuilder().add_object_img(..).add_current_process().export_symbol(..).link(jit, name)`)
copies the TargetMachine settings, fails the link with an error on unresolved symbols, and gives
every library its own JITDylib, so two libraries may both define `f`. Its catch: exports must be
named at link time, and a tracker from `LLJIT.lookup` clears the *whole* library when it is
garbage collected. So we read the object's ELF symbol table, export every defined global symbol
at link time, and never call `LLJIT.lookup`.

Note [Large code model]
Objects are emitted with codemodel="jitdefault" (large on x86-64) and the default (static)
relocation model: the RuntimeDyld linker places sections and external libraries (libm, libgomp)
anywhere in the address space, so 32-bit PC-relative references could overflow.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from backends.llvm import native_libs
from compiler.core import config
from compiler.core.version import __version__

STATS: dict[str, int] = {"compiled": 0, "cache_hits": 0}
CACHE_SUFFIX = ".tfo"  # a compile-cache entry: object code, then its seal (`_seal`)
_SEAL = b"\0tilefuse-object-sha256\0"
_IR_CONTEXT_LINES = 20


@dataclass(frozen=True)
class Host:
    """The CPU we compile for."""

    triple: str
    cpu: str
    features: str  # LLVM feature string, e.g. "+avx2,+avx512f,...,-prefer-256-bit"
    vector_bits: int  # 512 with avx512f, 256 with avx2, else 128


def host() -> Host:
    """Describe the CPU we compile for: this one, or the x86-64 level TILEFUSE_CPU names (Note
    [Compiling for an x86-64 level]). Initializes LLVM's native target once."""
    return _host(config.load().cpu)


_V2 = frozenset({"cmov", "cx8", "fxsr", "mmx", "sse", "sse2", "cx16", "popcnt", "sahf", "sse3",
                 "sse4.1", "sse4.2", "ssse3"})  # fmt: skip
LEVELS: dict[str, frozenset[str]] = {
    "x86-64-v3": _V2 | {"avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"},
}
LEVELS["x86-64-v4"] = LEVELS["x86-64-v3"] | {"avx512f", "avx512bw", "avx512cd", "avx512dq",
                                              "avx512vl"}  # fmt: skip
"""The LLVM features of each x86-64 micro-architecture level (the x86-64 psABI's levels)."""


@functools.cache
def _host(level: str) -> Host:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    cpu = llvm.get_host_cpu_name()
    feats = dict(llvm.get_host_cpu_features())
    if level != "native":
        missing = sorted(f for f in LEVELS[level] if not feats.get(f))
        if missing:
            raise ValueError(
                f"TILEFUSE_CPU={level}, but this CPU ({cpu}) lacks {', '.join(missing)}: "
                "code for that level would not run here"
            )
        cpu, feats = level, dict.fromkeys(LEVELS[level], True)
    names = sorted(feats)  # sorted: the string is part of the cache key
    flags = [("+" if feats[n] else "-") + n for n in names]
    if feats.get("avx512f"):
        vector_bits = 512
        flags.append("-prefer-256-bit")  # Note [Why 512-bit vectors need a feature flag]
    elif feats.get("avx2"):
        vector_bits = 256
    else:
        vector_bits = 128
    return Host(llvm.get_process_triple(), cpu, ",".join(flags), vector_bits)


def target_machine() -> llvm.TargetMachine:
    """The -O3 TargetMachine for `host()`, emitting objects that JIT linking can load."""
    return _target_machine(host())


@functools.cache
def _target_machine(h: Host) -> llvm.TargetMachine:
    target = llvm.Target.from_triple(h.triple)
    return target.create_target_machine(
        cpu=h.cpu, features=h.features, opt=3, reloc="default", codemodel="jitdefault"
    )


def _ir_excerpt(ir_text: str) -> str:
    lines = ir_text.splitlines()[:_IR_CONTEXT_LINES]
    return "\n".join(f"{i:4d} | {line}" for i, line in enumerate(lines, 1))


def optimize(ir_text: str) -> llvm.ModuleRef:
    """Parse and verify `ir_text`, run the -O3 pipeline for the host, return the module.

    Raises ValueError (with LLVM's message and the first lines of the IR) if the text does not
    parse or the module does not verify.
    """
    try:
        mod = llvm.parse_assembly(ir_text)
    except RuntimeError as e:
        raise ValueError(f"LLVM IR does not parse: {e}\n{_ir_excerpt(ir_text)}") from None
    try:
        mod.verify()
    except RuntimeError as e:
        raise ValueError(f"LLVM IR fails verification: {e}\n{_ir_excerpt(ir_text)}") from None
    tm = target_machine()
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pto.loop_interleaving = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def optimized_ir(ir_text: str) -> str:
    """The LLVM IR after -O3."""
    return str(optimize(ir_text))


def assembly(ir_text: str) -> str:
    """Host assembly after -O3."""
    return target_machine().emit_assembly(optimize(ir_text))


def _cache_key(ir_text: str) -> str:
    h = host()
    parts = (ir_text, h.triple, h.cpu, h.features, llvmlite.__version__, __version__)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def object_cache_path(ir_text: str) -> Path:
    """Where `compile_object` caches the object code of `ir_text` for this host."""
    return config.load().cache_dir / "llvm" / f"{_cache_key(ir_text)}{CACHE_SUFFIX}"


def _seal(obj: bytes) -> bytes:
    """A cache entry: `obj`, a marker and the SHA-256 of `obj` (Note [A cache entry is
    checked])."""
    return obj + _SEAL + hashlib.sha256(obj).digest()


def _unseal(entry: bytes) -> bytes | None:
    """The object code of a cache entry, or None when the entry is damaged."""
    end = len(entry) - len(_SEAL) - 32
    if end < 0 or entry[end : end + len(_SEAL)] != _SEAL:
        return None
    obj = entry[:end]
    return obj if hashlib.sha256(obj).digest() == entry[-32:] else None


def cached_object(ir_text: str) -> bytes | None:
    """The disk cache's object code for `ir_text` on this host (counted as a hit), or None.

    Note [A cache entry is checked]
    An entry is written whole (a temporary file renamed into place), but a disk that fills,
    a copy cut short or a stray write can still leave one truncated or changed, and object
    code that is wrong would be loaded: a truncated one fails deep in the ELF reader
    (`struct.error`), a changed one could run. So each entry ends with a marker and
    the SHA-256 of its object code, checked on every read: a damaged entry is discarded with
    a warning and the kernel compiled again."""
    path = object_cache_path(ir_text)
    try:
        entry = path.read_bytes()
    except FileNotFoundError:
        return None
    obj = _unseal(entry)
    if obj is None:
        warnings.warn(
            f"tilefuse: discarding a damaged compile-cache entry {path} ({len(entry)} bytes, "
            "its checksum does not match); compiling the kernel again",
            stacklevel=2,
        )
        path.unlink(missing_ok=True)
        return None
    STATS["cache_hits"] += 1
    return obj


def compile_object(ir_text: str) -> bytes:
    """-O3 object code for `ir_text`, from the disk cache when another run already built it.

    Cached as <cache_dir>/llvm/<sha256>.o, keyed on the IR, the host and the tool versions,
    written atomically (temporary file + os.replace) so concurrent processes never see a torn file,
    and checked when read (Note [A cache entry is checked]).
    """
    obj = cached_object(ir_text)
    if obj is not None:
        return obj
    path = object_cache_path(ir_text)
    obj = target_machine().emit_object(optimize(ir_text))
    STATS["compiled"] += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_seal(obj))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return obj


def _elf_symbols(obj: bytes) -> tuple[list[str], list[str]]:
    """(defined, undefined) global symbol names of an ELF64 little-endian relocatable object."""
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise NotImplementedError("NativeLibrary loads ELF64 little-endian objects only")
    (shoff,) = struct.unpack_from("<Q", obj, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", obj, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", obj, shoff + i * shentsize) for i in range(shnum)]
    defined: list[str] = []
    undefined: list[str] = []
    for _, sh_type, _, _, offset, size, link, _, _, entsize in sections:
        if sh_type != 2:  # SHT_SYMTAB
            continue
        str_off = sections[link][4]
        for pos in range(offset + entsize, offset + size, entsize):  # entry 0 is null
            st_name, st_info, _, st_shndx = struct.unpack_from("<IBBH", obj, pos)
            if st_info >> 4 not in (1, 2):  # STB_GLOBAL, STB_WEAK
                continue
            name = obj[str_off + st_name : obj.index(b"\0", str_off + st_name)].decode()
            (undefined if st_shndx == 0 else defined).append(name)
    return defined, undefined


class NativeLibrary:
    """Machine code loaded into this process from object files; keeps the engine alive.

    Each library is its own JITDylib in one process-wide LLJIT: symbols resolve first within the
    library, then against the process (libc, libm, and whatever `openmp()` loaded). Libraries do
    not see each other, so the same function name may live in several. The code is freed when
    the library is garbage collected; addresses taken from it must not outlive it.
    """

    _ids = itertools.count()

    def __init__(self, objects: list[bytes]) -> None:
        defined: list[str] = []
        undefined: list[str] = []
        builder = llvm.JITLibraryBuilder().add_current_process()
        for obj in objects:
            d, u = _elf_symbols(obj)
            defined += d
            undefined += u
            builder.add_object_img(obj)
        for name in defined:
            builder.export_symbol(name)
        self.name = f"tilefuse{next(NativeLibrary._ids)}"
        try:
            self._tracker = builder.link(_lljit(), self.name)
        except RuntimeError as e:
            missing = sorted(
                {n for n in undefined if n not in defined and llvm.address_of_symbol(n) is None}
            )
            hint = (
                " (call openmp() first)"
                if any(n.startswith(("GOMP_", "omp_")) for n in missing)
                else ""
            )
            raise RuntimeError(
                f"cannot load native code: {e}; unresolved symbols: {missing or '?'}{hint}"
            ) from None
        self.symbols: tuple[str, ...] = tuple(sorted(defined))

    def address(self, name: str) -> int:
        """The address of the global symbol `name` defined in this library's objects."""
        if name not in self.symbols:
            raise KeyError(f"symbol {name!r} is not defined in {self.name}; it has {self.symbols}")
        return self._tracker[name]

    def __repr__(self) -> str:
        return f"NativeLibrary({self.name}, symbols={list(self.symbols)})"


@functools.cache
def _lljit() -> llvm.LLJIT:
    # suppress_errors: link failures come back as RuntimeError instead of stderr noise. One for
    # the process whatever TILEFUSE_CPU says later: LLJIT only links objects compiled already.
    return llvm.create_lljit_compiler(target_machine(), suppress_errors=True)


@functools.cache
def openmp() -> str:
    """Make torch's OpenMP runtime (libgomp) visible to JIT code; return its path. Idempotent.

    JIT code may then call GOMP_parallel, GOMP_barrier, omp_get_thread_num, ... Loading the same
    file torch loads keeps one OpenMP runtime (one thread pool) in the process.
    """
    path = native_libs.libgomp()
    llvm.load_library_permanently(path)
    return path
