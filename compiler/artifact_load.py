"""`load`: a compiled model from an artifact directory, ready to call, with nothing traced
(the layout is in `compiler.artifact`); `run_saved` checks it on its saved example."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

import backends
from compiler.api import build
from compiler.artifact import load_captured, read_manifest
from compiler.core.errors import ArtifactError
from compiler.parity_rule import ParityReport, compare, output_leaves

log = logging.getLogger("tilefuse.artifact")


def load(path: str | Path, *, backend: str | None = None) -> Any:
    """A `Compiled` from the artifact at `path`, ready to call; `backend` defaults to the one it
    was saved for. Nothing is traced; on the CPU it was built on, nothing is compiled either."""
    path = Path(path)
    manifest = read_manifest(path)
    captured, schedule = load_captured(path, manifest)
    name = backends.resolve(backend or manifest["backend"])
    dtype = manifest["compute_dtype"]
    compiled = build(
        captured,
        backend=name,
        gpu=manifest["gpu"],
        compute_dtype=getattr(torch, dtype) if dtype else None,
        schedule=schedule,
        llvm_options=lambda program: {
            "library": _open_library(path, manifest.get("native"), program),
            "mapped_weights": True,
        },
        program=_saved_program(path, manifest) if name == "llvm" else None,
    )
    compiled.artifact = path
    return compiled


def _saved_program(path: Path, manifest: dict[str, Any]) -> Any:
    """The llvm program as saved, when it runs here as it is, else None (`load` renders it
    from the schedule).

    Note [A saved program]
    Rendering the llvm program at load (to check each kernel's IR against the kernels.so it
    was linked from) imported llvmlite's IR builder and every kernel renderer and built the
    IR of every kernel: ~3 MiB of a deployed model's resident memory, and time. The rendered
    program, its driver source and what running each module needs (`SavedModule`), is saved
    beside the library instead, and used as it is where the library is: on a CPU with the
    library's fingerprint, at the thread count it was rendered for (kernels size per-thread
    scratch by it), with the library's kernel digests. Elsewhere the schedule is rendered
    again and the digests decide, as before."""
    from backends.llvm import aot as llvm_aot
    from backends.llvm.runtime import LlvmProgram, SavedModule
    from compiler.core.config import num_threads

    native, file = manifest.get("native"), path / "program.json"
    if native is None or not file.is_file() or native["cpu"] != llvm_aot.cpu_fingerprint():
        return None
    saved = json.loads(file.read_text())
    digests = {symbol: m["digest"] for symbol, m in saved["modules"].items()}
    if saved["threads"] != num_threads() or digests != native["kernels"]:
        return None
    with np.load(path / "program_constants.npz") as npz:
        constants = {k: npz[k] for k in npz.files}
    modules = {
        symbol: SavedModule(symbol, tuple(m["params"]), m["scratch_bytes"], m["digest"])
        for symbol, m in saved["modules"].items()
    }
    program = LlvmProgram(
        saved["name"],
        saved["driver"],
        modules,
        constants,
        input_dtypes=tuple(getattr(torch, d) for d in saved["input_dtypes"]),
        source_file=path / "llvm.txt",
    )
    program.read_driver(path / "driver.bin")  # Note [A compiled driver]
    return program


def _open_library(path: Path, native: dict[str, Any] | None, program: Any) -> Any:
    """The saved kernels.so when it was built for this CPU from exactly these kernels, else
    None, with the saved object code put in the JIT's cache (used where its keys match)."""
    from backends.llvm import aot as llvm_aot

    why_not = "it has no kernels.so"
    if native is not None:
        digests = {symbol: m.digest for symbol, m in program.modules.items()}
        if native["cpu"] != llvm_aot.cpu_fingerprint():
            why_not = "kernels.so was built for another CPU"
        elif digests != native["kernels"]:
            why_not = "its kernels differ from kernels.so's (another thread count?)"
        else:
            return llvm_aot.SharedLibrary(path / native["library"])
    log.info("%s: %s; loading the kernels through the JIT", path, why_not)
    _restore_objects(path / "llvm")
    return None


def _restore_objects(folder: Path) -> None:
    """Put the saved object code where the object cache looks (keys name the host: another
    CPU's objects are never picked up)."""
    from compiler.core import config

    if not folder.is_dir():
        return
    cache = config.load().cache_dir / "llvm"
    cache.mkdir(parents=True, exist_ok=True)
    for obj in folder.glob("*.o"):
        target = cache / obj.name
        if not target.exists():
            shutil.copyfile(obj, target)


def load_example(path: Path) -> dict[str, Any]:
    """The saved example inputs with eager's outputs and the float64 reference (flat leaves)."""
    if not (path / "example.pt").is_file():
        raise ArtifactError(
            f"{path} holds no example inputs (saved with reference=False); call the loaded "
            "model on your own inputs instead"
        )
    return torch.load(path / "example.pt", weights_only=True)


def run_saved(path: str | Path, *, backend: str | None = None) -> Any:
    """Load the artifact, run it on its saved example inputs and compare with the saved eager
    outputs and float64 reference: a `ParityReport` (what `tilefuse run` prints)."""
    path = Path(path)
    compiled = load(path, backend=backend)
    example = load_example(path)
    with torch.inference_mode():
        out = compiled(*example["args"], **example["kwargs"])
    report = ParityReport(compiled.graph.name, compiled=compiled)
    saved = zip(output_leaves(out), example["eager"], example["reference"], strict=True)
    for (name, o), e, r in saved:
        report.rows.append(compare(name, compiled.backend, o, e, r))
    return report
