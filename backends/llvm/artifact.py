"""The llvm program in an artifact directory (the layout is in `compiler.artifact`).

Saving writes the kernels' object code (llvm/*.tfo, for the JIT's cache), the kernels linked
into kernels.so for this CPU, and the rendered program (program.json, program_constants.npz,
driver.bin). Loading on a CPU with kernels.so's fingerprint, at the thread count it was
rendered for, opens kernels.so and uses the saved program as it is: no LLVM, no rendering;
elsewhere the schedule is rendered again and the kernels compiled for this CPU.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backends.llvm import aot as llvm_aot
from backends.llvm import tuning
from backends.llvm.runtime import LlvmProgram, SavedModule
from compiler.core import config

log = logging.getLogger("tilefuse.artifact")


def save(program: LlvmProgram, path: Path) -> dict[str, Any] | None:
    """Write the program's object code, kernels.so and the rendered program into `path`; the
    manifest entry (what kernels.so was built from and for), or None without kernels.so."""
    _save_objects(program, path / "llvm")
    _save_choices(program, path / TUNING)
    native = _save_library(program, path)
    if native is not None:
        _save_program(program, path)
    return native


def load(
    path: Path, native: dict[str, Any] | None, render: Callable[[], LlvmProgram]
) -> LlvmProgram:
    """The program of the artifact at `path` whose manifest entry is `native`: the saved one
    where it runs here as it is, else `render()`; it loads through the saved kernels.so where
    that was built for this CPU from exactly its kernels, and its weights are memory-mapped
    from the artifact's file."""
    program = _saved_program(path, native)
    if program is None:
        _replay(path / TUNING)
        program = render()
    program.library = _open_library(path, native, program)
    program.mapped_weights = True
    return program


TUNING = "tuning.jsonl"
"""The choices the program took (`LlvmProgram.choices`), a line each with the CPU they hold
for: read back with the saved program, and replayed into this host's tuning file when the
program is rendered again on the CPU they were made on (Note [Measured choices])."""


def _save_choices(program: LlvmProgram, path: Path) -> None:
    cpu = tuning.cpu()
    lines = [
        json.dumps({"call": call, "cpu": cpu, **choice.to_dict()}, sort_keys=True)
        for call, choice in program.choices
    ]
    path.write_text("".join(line + "\n" for line in lines))


def _read_choices(path: Path) -> list[dict[str, Any]]:
    """The entries of an artifact's tuning.jsonl; none where it is missing or damaged."""
    try:
        entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return []
    keys = ("call", "kind", "shape", "choice", "why", "default")
    return [e for e in entries if isinstance(e, dict) and all(k in e for k in keys)]


def _replay(path: Path) -> None:
    """Add the artifact's measured choices to this host's tuning file when they were made on
    this CPU (the same model, flags, level and threads) and the file lacks them: the render
    that follows takes them without timing."""
    if not config.load().tune:
        return
    store, cpu = tuning.current(), tuning.cpu()
    for e in _read_choices(path):
        if e.get("cpu") != cpu or e.get("why") == "default":
            continue
        if store.get(e["kind"], e["shape"]) is None:
            store.add(
                tuning.entry(cpu, e["kind"], e["shape"], e["times_us"], e["choice"], e["default"])
            )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def _save_objects(program: LlvmProgram, folder: Path) -> None:
    from backends.llvm import jit as llvm_jit  # LLVM: saving may compile, loading never does

    folder.mkdir(exist_ok=True)
    for m in program.modules.values():
        llvm_jit.compile_object(m.ir)  # a cache hit after compile; builds it otherwise
        cached = llvm_jit.object_cache_path(m.ir)
        shutil.copyfile(cached, folder / cached.name)


def _save_library(program: LlvmProgram, path: Path) -> dict[str, Any] | None:
    """The kernels linked into kernels.so (Note [Why a shared library] in backends/llvm/aot.py),
    or None with a warning saying why not (loading then uses the JIT)."""
    modules = {symbol: m.ir for symbol, m in program.modules.items()}
    why_not = llvm_aot.link_shared(modules, path / "kernels.so") if modules else "no kernels"
    if why_not is not None:
        log.warning("%s: no shared library (%s); loading it will need LLVM", path, why_not)
        return None
    return {
        "library": "kernels.so",
        "cpu": llvm_aot.cpu_fingerprint(),
        "level": config.load().cpu,
        "kernels": {symbol: llvm_aot.ir_digest(ir) for symbol, ir in modules.items()},
    }


def _save_program(program: LlvmProgram, path: Path) -> None:
    """program.json and program_constants.npz: the llvm program as rendered, for a load that
    skips rendering (Note [A saved program])."""
    np.savez(path / "program_constants.npz", **program.constants)
    _write_json(
        path / "program.json",
        {
            "name": program.name,
            "threads": config.num_threads(),
            "input_dtypes": [str(d).removeprefix("torch.") for d in program.input_dtypes],
            "modules": {
                symbol: {
                    "params": [p.name for p in m.params],
                    "scratch_bytes": m.scratch_bytes,
                    "digest": m.digest,
                }
                for symbol, m in program.modules.items()
            },
            "driver": program.driver,
        },
    )
    program.save_driver(path / "driver.bin")


def _saved_program(path: Path, native: dict[str, Any] | None) -> LlvmProgram | None:
    """The llvm program as saved, when it runs here as it is, else None (`load` renders it
    from the schedule).

    Note [A saved program]
    Rendering the llvm program at load (to check each kernel's IR against the kernels.so it
    was linked from) imported llvmlite's IR builder and every kernel renderer and built the
    IR of every kernel: megabytes of a deployed model's resident memory, and time. The rendered
    program, its driver source and what running each module needs (`SavedModule`), is saved
    beside the library instead, and used as it is where the library is: on a CPU with the
    library's fingerprint, at the thread count it was rendered for (kernels size per-thread
    scratch by it), with the library's kernel digests. Elsewhere the schedule is rendered
    again and the digests decide."""
    file = path / "program.json"
    if native is None or not file.is_file() or llvm_aot.runs_here(native) is not None:
        return None
    saved = json.loads(file.read_text())
    digests = {symbol: m["digest"] for symbol, m in saved["modules"].items()}
    if saved["threads"] != config.num_threads() or digests != native["kernels"]:
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
        choices=tuple(
            (e["call"], tuning.Choice.from_dict(e))
            for e in _read_choices(path / TUNING)
            if "call" in e
        ),
    )
    program.read_driver(path / "driver.bin")  # Note [A compiled driver]
    return program


def _open_library(path: Path, native: dict[str, Any] | None, program: LlvmProgram) -> Any:
    """The saved kernels.so when it was built for this CPU from exactly these kernels, else
    None, with the saved object code put in the JIT's cache (used where its keys match)."""
    why_not = "it has no kernels.so"
    if native is not None:
        digests = {symbol: m.digest for symbol, m in program.modules.items()}
        elsewhere = llvm_aot.runs_here(native)
        if elsewhere is not None:
            why_not = f"kernels.so was {elsewhere}"
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
    if not folder.is_dir():
        return
    from backends.llvm import jit as llvm_jit  # loads LLVM: this load compiles anyway

    cache = config.load().cache_dir / "llvm"
    cache.mkdir(parents=True, exist_ok=True)
    for obj in folder.glob(f"*{llvm_jit.CACHE_SUFFIX}"):
        target = cache / obj.name
        if not target.exists():
            shutil.copyfile(obj, target)
