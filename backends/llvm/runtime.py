"""The llvm backend's runtime: the program object, its native kernels and prepared weights,
and nothing that renders code. A saved artifact loads through this module alone (with the
kernels in its kernels.so): neither llvmlite nor the kernel renderers are imported, which is
resident memory a deployed model does not pay (Note [A saved program] in compiler/artifact).
`backends.llvm.render` renders programs; this runs them.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import marshal
import math
import os
import threading
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from compiler.core.config import num_threads
from compiler.core.errors import IndexOutOfRangeError

if TYPE_CHECKING:
    from backends.llvm.kernel import KernelModule
    from backends.llvm.storage import Storage
    from backends.llvm.tuning import Choice
    from compiler.core.schedule import Step

PREPARE = "prepare_weights"  # the driver function that prepares the weights
DRIVER_GLOBALS = frozenset(
    {"torch", "F", "view", "W", "NTHREADS", "_library", "arena", "checks", "checked"}
    | {"index_error", PREPARE}
)
"""Names the driver's module defines besides its functions (`load_namespace`, the arena)."""


@dataclass(frozen=True)
class SavedModule:
    """What running a kernel module needs, read back from an artifact: its symbol in the
    library, its parameters, its scratch bytes and its IR's digest (`KernelModule` has the IR
    itself)."""

    symbol: str
    params: tuple[str, ...]  # the parameter names, in order
    scratch_bytes: int
    digest: str  # of the IR it was built from (`llvm_aot.ir_digest`)


@dataclass
class LlvmProgram:
    """The driver module, the LLVM modules it calls, and how to load them."""

    name: str
    driver: str
    modules: Mapping[str, KernelModule | SavedModule]
    constants: dict[str, np.ndarray]
    steps: list[tuple[str, list[Step]]] = field(default_factory=list)
    input_dtypes: tuple[torch.dtype, ...] = ()  # what each graph input is passed as
    storage: Storage | None = None  # every value's storage dtype (None: loaded, not rendered)
    source_file: Path | None = None  # where `source` is, when loaded from an artifact
    code: types.CodeType | None = None  # the driver compiled, when an artifact saved it
    compiles: Any = None  # `llvm_workers.Compiles` of the modules, when rendered in this process
    library: Any = None  # the kernels already linked (an artifact's kernels.so), or None
    mapped_weights: bool = False  # the weights are memory-mapped from an artifact's file
    choices: tuple[tuple[str, Choice], ...] = ()  # (extern call, how it runs and why)

    @property
    def filename(self) -> str:
        """The driver's file name in tracebacks (a digest of its source: the same in every
        process, so a saved compiled driver names the same file)."""
        digest = hashlib.sha256(self.driver.encode()).hexdigest()[:12]
        return f"<tilefuse-llvm:{self.name}:{digest}>"

    def compiled_driver(self) -> types.CodeType:
        """The driver compiled (Note [A compiled driver])."""
        if self.code is None:
            self.code = compile(self.driver, self.filename, "exec")
        return self.code

    def save_driver(self, path: Path) -> None:
        """Write the compiled driver to `path`: this Python's bytecode magic, then marshal."""
        path.write_bytes(importlib.util.MAGIC_NUMBER + marshal.dumps(self.compiled_driver()))

    def read_driver(self, path: Path) -> None:
        """Use the compiled driver at `path` (`save_driver`) when this Python wrote it for this
        very source; else leave the driver to be compiled.

        Note [A compiled driver]
        Compiling a driver's source takes memory the process keeps (llama's 400-line driver:
        1.8 MiB resident), where a loaded model's peak RSS is within a MiB or two of eager's.
        So an artifact saves the driver compiled (marshal, as a .pyc does) and a load on the
        same Python reads it back: no compile. Another Python (another bytecode magic)
        compiles the source."""
        if not path.is_file():
            return
        data = path.read_bytes()
        magic = importlib.util.MAGIC_NUMBER
        if not data.startswith(magic):
            return
        code = marshal.loads(data[len(magic) :])
        if isinstance(code, types.CodeType) and code.co_filename == self.filename:
            self.code = code

    @property
    def source(self) -> str:
        if self.source_file is not None:
            return self.source_file.read_text()
        parts = [self.driver]
        for m in self.modules.values():
            parts.append(m.ir)
        return "\n\n".join(parts)

    def load_namespace(self) -> dict[str, Any]:
        """Compile (or fetch from the disk cache) every module, link them, run the driver.
        With `library` (a saved artifact's `llvm_aot.SharedLibrary`, anything with
        `.address(symbol)`) the kernels are already linked: then LLVM is not loaded at all.
        With `mapped_weights` the weights are memory-mapped from a file (`PackedWeights`)."""
        lib = self.library
        if lib is None and self.modules:
            from backends.llvm import jit as llvm_jit  # loads LLVM (Note [Why a shared library])
            from backends.llvm import workers as llvm_workers

            llvm_jit.openmp()
            texts = [m.ir for m in self.modules.values()]
            jobs = self.compiles if self.compiles is not None else llvm_workers.Compiles()
            lib = llvm_jit.NativeLibrary(jobs.objects(texts))
            self.compiles = None  # linked: its texts and objects are not needed again
        namespace: dict[str, Any] = {
            "torch": torch,
            "F": torch.nn.functional,
            "view": _view,
            "W": PackedWeights(self.mapped_weights),
            "NTHREADS": num_threads(),
            "_library": lib,
            "index_error": index_error,
        }
        for symbol, m in self.modules.items():
            assert lib is not None
            namespace[symbol] = NativeKernel(symbol, lib.address(symbol), m)
        for name, array in self.constants.items():
            namespace[name] = torch.from_numpy(np.array(array, copy=True))
        import linecache

        filename = self.filename
        linecache.cache[filename] = (len(self.driver), None, self.driver.splitlines(True), filename)
        exec(self.compiled_driver(), namespace)
        return namespace

    def load(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        namespace = self.load_namespace()
        fn = namespace[self.name]
        lock = threading.Lock()  # the planned buffers are shared by calls
        prepare = namespace.get(PREPARE)  # the first call prepares every weight up front

        def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            nonlocal prepare
            with lock:
                if prepare is not None:
                    prepare(*inputs)
                    prepare = None
                return fn(*inputs)

        return run


def native_runner(module: KernelModule, args: list[torch.Tensor]) -> Callable[[], None]:
    """One run of the native kernel `module` on `args` (its parameters in order, scratch
    aside), on the threads the program's kernels run on: a candidate the tune stage times
    (`backends.llvm.tuning`). Its object code comes from the cache the candidates were
    compiled into, and is the program's when it is chosen."""
    from backends.llvm import jit as llvm_jit  # LLVM: only while tuning a render

    llvm_jit.openmp()
    lib = llvm_jit.NativeLibrary([llvm_jit.compile_object(module.ir)])
    kernel = NativeKernel(module.symbol, lib.address(module.symbol), module)
    threads = num_threads()

    def run() -> None:
        kernel(threads, *args)
        _ = lib  # the code lives as long as the runner

    return run


class NativeKernel:
    """A loaded native kernel: call it with tensors, one per parameter, in order."""

    def __init__(self, symbol: str, address: int, module: KernelModule | SavedModule) -> None:
        self.symbol = symbol
        self.module = module
        self._fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(address)
        self._args = (ctypes.c_void_p * len(module.params))()
        self._scratch = torch.empty(max(module.scratch_bytes, 1), dtype=torch.uint8)

    def __call__(self, nthreads: int, *tensors: torch.Tensor) -> None:
        args = self._args
        for i, t in enumerate(tensors):
            args[i] = t.data_ptr()
        if self.module.scratch_bytes:
            args[len(tensors)] = self._scratch.data_ptr()
        self._fn(args, nthreads)

    def __repr__(self) -> str:
        return f"<native {self.symbol}: {len(self.module.params)} params>"


class PackedWeights:
    """Packed copies of GEMM weights (MKL's, oneDNN's, Winograd's), rebuilt when a weight
    changes (its version or storage), so a compiled model still reads the module's current
    weights.

    Note [Preparing weights up front]
    Packing a weight holds it twice for a moment: the original (paged in from a loaded
    artifact's file) and the packed copy; the original is paged out afterwards. Packed where
    the kernels first use them, the last weight's moment came on top of every other packed
    weight and every touched buffer: a loaded gpt2's peak RSS was 3.7 MiB above where its
    first call ended. So the driver has `prepare_weights`, which the first call runs before
    the program: every `W` call of the kernels, largest weight first, while nothing else is
    resident; the peak of preparing is then the largest weight twice, and the first call
    ends at its peak. The kernels' own `W` calls stay: they are cache hits, and repack a
    weight that changed since."""

    def __init__(self, mapped: bool = False) -> None:
        """`mapped`: the weights are memory-mapped from a file; each is paged out once packed
        (reordered, transformed): only the prepared copy stays resident."""
        self._cache: dict[tuple[Any, ...], tuple[int, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self._mapped = mapped

    def _prepared(self, w: torch.Tensor, tag: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """`make()`'s layout of `w`, cached per weight and `tag` until `w` changes. Keyed by
        storage; the entry holds `w`, so its memory cannot be reused by another tensor while
        cached, and the version counter says when it was written in place."""
        key = (w.data_ptr(), tuple(w.shape), tuple(w.stride()), w.dtype, *tag)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == w._version:
            return hit[2]
        prepared = make()
        self._cache[key] = (w._version, w, prepared)
        if self._mapped:
            page_out(w)
        return prepared

    def winograd(self, w: torch.Tensor) -> torch.Tensor:
        """`w` [OC, C, 3, 3] as Winograd's U = G w G^T, [16, OC, C]."""

        return self._prepared(w, ("winograd",), lambda: winograd_weights(w))

    def conv(self, w: torch.Tensor, *geometry: Any) -> torch.Tensor:
        """`w` reordered into oneDNN's blocked layout for this convolution geometry."""
        return self._prepared(
            w,
            (repr(geometry),),
            lambda: torch.ops.mkldnn._reorder_convolution_weight(w.contiguous(), *geometry),
        )

    def dnnl(self, w: torch.Tensor, m: int, transposed: bool) -> torch.Tensor:
        """`w` (`w.T` when `transposed`) reordered for oneDNN's GEMM of `m` rows
        (`torch.ops.mkldnn._linear_pointwise`; Note [Which GEMM library])."""
        return self._prepared(
            w,
            (m, transposed, "dnnl"),
            lambda: torch.ops.mkldnn._reorder_linear_weight(_oriented(w, transposed), m),
        )

    def transposed(self, w: torch.Tensor) -> torch.Tensor:
        """`w.T` contiguous: the [K, N] operand of a native matmul `x @ w.T`
        (`backends.llvm.matmul`)."""
        return self._prepared(w, ("transposed",), lambda: w.t().contiguous())

    def pack(self, w: torch.Tensor, m: int, transposed: bool) -> tuple[torch.Tensor, ...]:
        """`w` (`w.T` when `transposed`) packed for MKL's GEMM of `m` rows, with the stand-in
        `_mkl_linear` takes for the unpacked weight."""

        def make() -> tuple[torch.Tensor, ...]:
            orig = _oriented(w, transposed)
            # _mkl_linear reads only the shape of its unpacked weight when the batch is the
            # packed batch `m`, which the driver's static shapes guarantee: a stride-0
            # stand-in keeps no second copy of the weight alive
            stand_in = torch.zeros((), dtype=orig.dtype).expand(orig.shape)
            return torch.ops.mkl._mkl_reorder_linear_weight(orig, m), stand_in

        return self._prepared(w, (m, transposed), make)


WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
"""Winograd F(2x2, 3x3)'s G."""


def winograd_weights(w: torch.Tensor, block_bytes: int = 1 << 20) -> torch.Tensor:
    """U = G w G^T as [16, OC, C] float32, computed in float64 a block of output channels at
    a time (about `block_bytes` of float64 per block): its transient memory stays small
    whatever the weight's size (the whole weight in float64 with einsum's intermediates was
    ~6x the weight at once, a peak a loaded artifact's RSS kept). Here, not with the rest of
    Winograd in `backends.llvm.winograd`: a loaded artifact runs it on its first call, and
    importing the renderer there would load LLVM (Note [Why a shared library]) into a
    process that needs none."""
    oc, c = w.shape[0], w.shape[1]
    g = torch.tensor(WINOGRAD_G, dtype=torch.float64)
    u = torch.empty(16, oc, c, dtype=torch.float32)
    step = max(1, block_bytes // (16 * c * 8))
    with torch.no_grad():
        for lo in range(0, oc, step):
            block = w[lo : lo + step].to(torch.float64)
            u[:, lo : lo + step] = torch.einsum("ik,ockl,jl->ijoc", g, block, g).reshape(16, -1, c)
    return u


def index_error(
    checked: np.ndarray, site: int, sites: Sequence[tuple[str, str, str, int, int]]
) -> IndexOutOfRangeError:
    """The error call site `site` reported in its words of `checked` (which check + 1, the
    index), whose checks are `sites`; the words are cleared for the next call (Note [Index
    checks] in backends/index_maps.py)."""
    which, index = int(checked[2 * site]) - 1, int(checked[2 * site + 1])
    checked[2 * site : 2 * site + 2] = 0
    op, node, source, size, lowest = sites[which]
    return IndexOutOfRangeError(op, node, source, index, size, lowest)


def _oriented(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """`w.T` (HF Conv1D's [in, out]) or `w` as a contiguous [out, in] weight."""
    return w.t().contiguous() if transposed else w.contiguous()


def page_out(t: torch.Tensor) -> None:
    """Drop the resident pages of `t`, a weight memory-mapped from a file (a loaded artifact's,
    `torch.load(mmap=True)`), once its packed copy exists: they are re-read from the file if
    ever touched again, so the process holds the packed copy only. A hint (MADV_PAGEOUT,
    Linux 5.4+): contents never change, and where it is not supported nothing happens."""
    if not hasattr(os, "sysconf"):
        return
    page = os.sysconf("SC_PAGE_SIZE")
    start = -(-t.data_ptr() // page) * page  # whole pages inside the tensor only
    end = (t.data_ptr() + t.numel() * t.element_size()) // page * page
    if end > start:
        _libc().madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_PAGEOUT)


_MADV_PAGEOUT = 21


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _view(buf: torch.Tensor, shape: Sequence[int], dtype: torch.dtype, at: int = 0) -> torch.Tensor:
    """`shape` elements of `dtype` at byte `at` of the byte tensor `buf` (the driver's arena)."""
    count = math.prod(shape)
    return buf[at : at + count * dtype.itemsize].view(dtype).view(tuple(shape))
