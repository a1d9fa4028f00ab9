"""`load`: a compiled model from an artifact directory, ready to call, with nothing traced
(the layout is in `compiler.artifact`); `run_saved` checks it on its saved example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import backends
from compiler import pipeline
from compiler.api import collect_new_objects_only
from compiler.artifact import load_captured, read_manifest
from compiler.compiled import Compiled
from compiler.core.errors import ArtifactError
from compiler.parity_rule import ParityReport, compare, output_leaves


def load(path: str | Path, *, backend: str | None = None) -> Compiled:
    """A `Compiled` from the artifact at `path`, ready to call; `backend` defaults to the one it
    was saved for. Nothing is traced; on the CPU it was built on, nothing is compiled either."""
    path = Path(path)
    manifest = read_manifest(path)
    captured, schedule = load_captured(path, manifest)
    name = backends.resolve(backend or manifest["backend"])
    dtype = manifest["compute_dtype"]
    entry = manifest["program"] if name == manifest["backend"] else None
    build = pipeline.Build(
        name,
        manifest["gpu"],
        getattr(torch, dtype) if dtype else None,
        captured=captured,
        schedule=schedule,
        load_program=lambda render: backends.get(name).load_saved(path, entry, render),
    )
    with collect_new_objects_only():
        compiled = pipeline.run(build, pipeline.AFTER_SCHEDULE)
    compiled.artifact = path
    return compiled


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
