"""Saved artifacts: `c.save(dir)` writes a compiled model; `compiler.load(dir)` runs it in a
process that has neither the model's code nor torch.export.

    c = compiler.compile(model, (x,))
    c.save("build/gpt2")                   # or: tilefuse compile examples/gpt2.py:build -o ...
    c2 = compiler.load("build/gpt2")       # no tracing, no passes: the schedule is read back
    y = c2(x)                              # or: tilefuse run build/gpt2 (prints parity)

An artifact is a directory:

    manifest.json    format, versions, backend, GPU, bindings, argument and output structure,
                     the backend's own entry for its program (`Backend.save`), and the size
                     and SHA-256 of every other file (Note [An artifact cannot lie])
    schedule.json    the kernels (bodies, tiles) and the optimized graph;
                     tensor constants in constants.npz
    captured.json    the graph as captured (explain's eager op-by-op figures are priced on it)
    constants.npz    tensor constants of both graphs, by content digest
    weights.safetensors  the parameters and buffers the graph reads (data, not a pickle;
                     memory-mapped on load; tied weights stored once: `save_weights`)
    example.pt       example inputs, eager's outputs and the float64 reference (`tilefuse run`)
    graph.py         the optimized graph as readable Python (for people; not read back)
    schedule.txt     the schedule as printed (for people; not read back)
    <backend>.txt    the generated source (for people; not read back)

and what the backend's `save` adds; for `llvm` (backends/llvm/artifact.py):

    kernels.so       the kernels linked for the CPU it was built on, or for the x86-64
                     level it was built for (TILEFUSE_CPU, `tilefuse compile --cpu`: then
                     for any CPU with the level): loading them needs no LLVM
                     (backends/llvm/aot.py, Note [Code for a level])
    program.json     the llvm program as rendered (driver source, each module's symbol,
                     parameters, scratch and IR digest; constants in program_constants.npz):
                     with kernels.so, loading renders nothing (Note [A saved program])
    driver.bin       the driver compiled by the Python that saved it (marshal; read back by the
                     same Python only: Note [A compiled driver] in backends/llvm/runtime.py)
    llvm/*.tfo       the same kernels as object code for the JIT's cache (the fallback)
    tuning.jsonl     the choices the program took (which GEMM per shape) with the CPU they
                     were made on: rendered again on that CPU, they are taken without timing
                     (Note [Measured choices] in backends/llvm/tuning.py)

Note [What an artifact stores]
It stores the schedule, the end of the pipeline: `load` runs no graph pass, no fusion and no
tiling, so the loaded model is the compiled one kernel for kernel, and loading stays cheap
(not even networkx is imported). A backend stores what its program needs beside it: the
llvm backend the object code, keyed as the object cache keys it (IR, CPU, features,
versions), and linked into kernels.so: on the same kind of CPU, loading opens kernels.so and
neither loads LLVM nor compiles anything; on another CPU the keys differ and the kernels are
compiled for it.
Weights are copied in, so a loaded model no longer follows the original module's parameters.

Note [An artifact cannot lie]
A file of an artifact damaged after saving (a copy cut short, a flipped bit, a file lost or
replaced) would otherwise load and run without a word, or crash the process in native code. So
the manifest, written last, records every other file's size and SHA-256, and `read_manifest`
checks them all before anything is read or loaded: a missing, truncated or changed file is an
`ArtifactError` naming it and what differs. Hashing is fast next to loading (the unet
artifact's files in a few milliseconds). It guards against damage, not against an attacker
who can rewrite the manifest too: an artifact holds native code, so load only artifacts from
sources you trust, as with any shared library.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch.utils import _pytree as pytree

import backends
from compiler.core.errors import ArtifactError
from compiler.core.schedule import Schedule
from compiler.core.serialize import decode_graph, decode_schedule, encode_graph, encode_schedule
from compiler.core.version import __version__
from compiler.frontend.capture import ArgSpec, Captured, InputBinding
from compiler.parity_rule import reference_f64

FORMAT = "tilefuse-artifact/3"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


def versions() -> dict[str, str]:
    return {"tilefuse": __version__, "torch": torch.__version__}


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


def json_value(x: Any, what: str) -> Any:
    if x is None or isinstance(x, bool | int | float | str):
        return x
    raise ArtifactError(
        f"cannot save {what} that is a {type(x).__name__} ({x!r}); artifacts hold tensors and "
        "plain Python values (None, bool, int, float, str)"
    )


def encode_arg(spec: ArgSpec) -> dict[str, Any]:
    if spec.shape is None:
        return {"value": json_value(spec.value, "an argument")}
    return {"shape": list(spec.shape), "dtype": dtype_name(spec.dtype)}


def decode_arg(d: dict[str, Any]) -> ArgSpec:
    if "value" in d:
        return ArgSpec(None, None, d["value"])
    return ArgSpec(tuple(d["shape"]), getattr(torch, d["dtype"]))


def dump_spec(spec: pytree.TreeSpec) -> str:
    try:
        return pytree.treespec_dumps(spec)
    except Exception as e:  # torch raises NotImplementedError/TypeError for unnamed node types
        raise ArtifactError(
            f"cannot save the model's output structure ({spec}): {e}. Return tensors, tuples, "
            "lists or dicts, or register the output type with a serialized_type_name."
        ) from e


def spec_modules(spec: pytree.TreeSpec) -> list[str]:
    """Modules whose import registers the output's node types (a Hugging Face ModelOutput)."""
    found: list[str] = []
    stack = [spec]
    while stack:
        s = stack.pop()
        module = getattr(s.type, "__module__", "builtins")
        if module not in ("builtins", "collections") and module not in found:
            found.append(module)
        stack.extend(s.children())
    return sorted(found)


class SavedState(torch.nn.Module):
    """The parameters and buffers of a saved artifact, looked up by their qualified names."""

    def __init__(self, tensors: dict[str, torch.Tensor], kinds: dict[str, str]) -> None:
        super().__init__()
        self.tensors = tensors
        self.kinds = kinds

    def get_parameter(self, target: str) -> torch.Tensor:
        return self.tensors[target]

    def get_buffer(self, target: str) -> torch.Tensor:
        return self.tensors[target]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise ArtifactError("a loaded artifact has no model code to run eagerly")


def file_digests(path: Path) -> dict[str, dict[str, Any]]:
    """Every file of the artifact at `path` but the manifest: its path relative to `path`,
    with its size and SHA-256 (Note [An artifact cannot lie])."""
    files = {}
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.relative_to(path).as_posix() != MANIFEST:
            with f.open("rb") as stream:
                digest = hashlib.file_digest(stream, "sha256").hexdigest()
            files[f.relative_to(path).as_posix()] = {"bytes": f.stat().st_size, "sha256": digest}
    return files


def verify_files(path: Path, files: dict[str, dict[str, Any]]) -> None:
    """Raise `ArtifactError` naming the first file of `files` (`file_digests`) that is
    missing or differs from what was saved."""
    for name, want in files.items():
        f = path / name
        if not f.is_file():
            raise ArtifactError(
                f"{path}: {name} is missing (the manifest lists it): the artifact is incomplete; "
                "save or copy it again"
            )
        size = f.stat().st_size
        if size != want["bytes"]:
            raise ArtifactError(
                f"{path}: {name} is {size} bytes, it was saved with {want['bytes']}: truncated "
                "or changed since; save or copy the artifact again"
            )
        with f.open("rb") as stream:
            got = hashlib.file_digest(stream, "sha256").hexdigest()
        if got != want["sha256"]:
            raise ArtifactError(
                f"{path}: {name} differs from the file saved (SHA-256 {got[:16]}..., saved "
                f"{want['sha256'][:16]}...): damaged or changed since; save or copy the "
                "artifact again"
            )


def read_json(path: Path, name: str) -> Any:
    """The JSON file `name` of the artifact at `path`, or an `ArtifactError` naming it."""
    try:
        return json.loads((path / name).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: {name} cannot be read ({e})") from e


def save_weights(state: dict[str, torch.Tensor], file: Path) -> None:
    """`state` as safetensors: a tensor that is another name's (tied weights) is stored once
    and named in the metadata's `aliases`; one sharing memory with another is copied (the
    format stores each tensor's own bytes)."""
    seen: dict[tuple[Any, ...], str] = {}
    storages: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for name, t in state.items():
        t = t.detach().cpu()
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), t.shape, t.stride(), t.dtype)
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        shared = t.untyped_storage().data_ptr() in storages
        storages.add(t.untyped_storage().data_ptr())
        tensors[name] = t.clone() if shared else t.contiguous()
    safetensors.torch.save_file(tensors, file, metadata={"aliases": json.dumps(aliases)})


def load_weights(file: Path) -> dict[str, torch.Tensor]:
    """The tensors `save_weights` wrote, memory-mapped; aliases are the same tensor."""
    try:
        with safetensors.safe_open(file, framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
            aliases = json.loads((f.metadata() or {}).get("aliases", "{}"))
    except (OSError, ValueError, safetensors.SafetensorError) as e:
        raise ArtifactError(f"{file.parent}: {file.name} cannot be read ({e})") from e
    for name, target in aliases.items():
        tensors[name] = tensors[target]
    return tensors


def read_manifest(path: Path) -> dict[str, Any]:
    """The artifact's manifest, after checking the format, the versions and every file
    (Note [An artifact cannot lie])."""
    file = path / MANIFEST
    if not file.is_file():
        what = "no such directory" if not path.is_dir() else f"it has no {MANIFEST}"
        raise ArtifactError(
            f"{path} is not a tilefuse artifact ({what}); write one with c.save(path) or "
            "`tilefuse compile FILE.py:FACTORY -o PATH`"
        )
    manifest = read_json(path, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ArtifactError(
            f"{path}: artifact format {found!r}, this tilefuse reads {FORMAT!r}: compile it again"
        )
    saved, now = manifest["versions"], versions()
    if saved["tilefuse"] != now["tilefuse"]:
        raise ArtifactError(
            f"{path} was written by tilefuse {saved['tilefuse']}, this is {now['tilefuse']}: "
            "compile it again"
        )
    if saved["torch"] != now["torch"]:
        warnings.warn(
            f"{path} was written with torch {saved['torch']}, running with {now['torch']}",
            stacklevel=3,
        )
    verify_files(path, manifest["files"])
    return manifest


def load_captured(path: Path, manifest: dict[str, Any]) -> tuple[Captured, Schedule]:
    """The saved capture (bindings, structure, weights) and the schedule."""
    for module in manifest["requires"]:
        importlib.import_module(module)  # registers the output node types for treespec_loads
    with np.load(path / "constants.npz") as npz:
        constants = {k: npz[k] for k in npz.files}
    schedule = decode_schedule(read_json(path, "schedule.json"), constants)
    captured_graph = decode_graph(read_json(path, "captured.json"), constants)
    bindings = tuple(InputBinding(b["kind"], b["key"]) for b in manifest["bindings"])
    tensors = load_weights(path / WEIGHTS)
    kinds = {str(b.key): b.kind for b in bindings if b.kind != "user"}
    captured = Captured(
        graph=captured_graph,
        bindings=bindings,
        arg_specs=tuple(decode_arg(a) for a in manifest["args"]),
        in_spec=pytree.treespec_loads(manifest["in_spec"]),
        out_spec=pytree.treespec_loads(manifest["out_spec"]),
        out_leaves=tuple((kind, x) for kind, x in manifest["out_leaves"]),
        module=SavedState(tensors, kinds),
        kwarg_names=tuple(manifest["kwarg_names"]),
        capture_seconds=manifest["stats"].get("capture_s", 0.0),
    )
    return captured, schedule


# ----------------------------------------------------------------------------- saving


def save(compiled: Any, path: Path, *, reference: bool = True) -> Path:
    """Write `compiled` (a `Compiled`) to the directory `path`; see the module docstring."""
    captured: Captured = compiled.captured
    path.mkdir(parents=True, exist_ok=True)
    constants: dict[str, np.ndarray] = {}
    write_json(path / "schedule.json", encode_schedule(compiled.schedule, constants))
    write_json(path / "captured.json", encode_graph(captured.graph, constants))
    np.savez(path / "constants.npz", **constants)
    state = {
        str(b.key): compiled._bind(b, [])
        for b in captured.bindings
        if b.kind != "user"
    }  # fmt: skip
    save_weights(state, path / WEIGHTS)
    manifest = {
        "format": FORMAT,
        "versions": versions(),
        "name": compiled.graph.name,
        "backend": compiled.backend,
        "gpu": compiled.gpu,
        "compute_dtype": dtype_name(compiled.compute_dtype),
        "bindings": [{"kind": b.kind, "key": b.key} for b in captured.bindings],
        "args": [encode_arg(s) for s in captured.arg_specs],
        "kwarg_names": list(captured.kwarg_names),
        "in_spec": pytree.treespec_dumps(captured.in_spec),
        "out_spec": dump_spec(captured.out_spec),
        "out_leaves": [[kind, json_value(x, "an output")] for kind, x in captured.out_leaves],
        "requires": spec_modules(captured.out_spec),
        "kernels": [k.summary() for k in compiled.kernels],
        "stats": {k: compiled.stats[k] for k in ("capture_s", "compile_s") if k in compiled.stats},
        "example": False,
    }
    if reference and compiled.example is not None:
        _save_example(compiled, path / "example.pt")
        manifest["example"] = True
    (path / "graph.py").write_text(str(compiled.graph))
    (path / "schedule.txt").write_text(str(compiled.schedule))
    (path / f"{compiled.backend}.txt").write_text(compiled.source())
    name = compiled.backend
    render = functools.partial(compiled._render, name)
    manifest["program"] = backends.get(name).save(compiled._program(name), render, path)
    manifest["files"] = file_digests(path)
    write_json(path / MANIFEST, manifest)  # last: a directory without it is incomplete
    return path


def _save_example(compiled: Any, path: Path) -> None:
    args, kwargs = compiled.example
    model = compiled.captured.module
    with torch.no_grad():
        eager = model(*args, **kwargs)
    ref = reference_f64(model, args, kwargs)
    flat = [pytree.tree_leaves(x) for x in (eager, ref)]
    torch.save({"args": args, "kwargs": kwargs, "eager": flat[0], "reference": flat[1]}, path)
