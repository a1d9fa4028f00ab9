"""`check_parity`: compile a model once and check every backend's outputs against eager
and the float64 reference, by the parity rule of `compiler.parity_rule`; where an output fails,
the first kernel that diverged from the reference is named (`compiler.bisect`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

import backends as backend_registry
from compiler.api import compile as compile_model
from compiler.bisect import bisect_kernels
from compiler.parity_rule import ParityReport, compare, output_leaves, reference_f64


def check_parity(
    model: Callable[..., Any],
    args: tuple[Any, ...] | Any,
    kwargs: Mapping[str, Any] | None = None,
    *,
    backends: Sequence[str] | None = None,
    gpu: str | None = None,
) -> ParityReport:
    """Compile `model` once and check every backend's outputs against eager and the float64
    reference (the rule: `compiler.parity_rule`); `backends` defaults to
    `backends.parity_default()` (numpy and llvm; triton too on a machine with a CUDA/ROCm
    device)."""
    backends = tuple(backends or backend_registry.parity_default())

    args = args if isinstance(args, tuple) else (args,)
    kwargs = dict(kwargs or {})
    with torch.no_grad():
        eager = model(*args, **kwargs)
    ref = reference_f64(model, args, kwargs)
    compiled = compile_model(model, args, kwargs, gpu=gpu, backend=backends[0])
    report = ParityReport(compiled.graph.name, compiled=compiled)
    eager_leaves = output_leaves(eager)
    ref_leaves = output_leaves(ref)
    for backend in backends:
        out_leaves = output_leaves(compiled.run(args, kwargs, backend=backend))
        rows = [
            compare(path, backend, o, e, r)
            for (path, e), (_, r), (_, o) in zip(eager_leaves, ref_leaves, out_leaves, strict=True)
        ]
        report.rows += rows
        if not all(row.ok for row in rows):
            found = bisect_kernels(compiled, args, kwargs, backend)
            report.divergences[backend] = found or "no single kernel diverged from the reference"
    return report
