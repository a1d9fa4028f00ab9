"""`Compiled.verify_targets`: every kernel of a plan compiled as Triton for GPU targets
(backends/triton/targets.py; docs/triton_targets.md), whatever backend the model runs on."""

from __future__ import annotations

import sys
from typing import Any

from compiler.core.gpu import resolve_profiles


def verify_targets(
    compiled: Any, gpu: str | list[str] | None = None, *, progress: bool | None = None
) -> Any:
    """The `TargetReport` of `compiled`'s kernels on `gpu`'s profiles (None: the compiled-for
    GPU, else the default profile); `Compiled.verify_targets` says more."""
    profiles = resolve_profiles(gpu if gpu is not None else compiled.gpu)
    try:
        from backends.triton.targets import verify_kernels  # triton, only when verifying
    except ImportError as e:
        raise ImportError(
            f"verify_targets compiles {compiled.graph.name}'s kernels with Triton, which is not "
            f"importable here ({e}); install it with `pip install 'triton==3.9.*'` (Linux)"
        ) from e
    return verify_kernels(
        compiled.schedule.kernels,
        profiles,
        strided=frozenset(v.name for v in compiled.graph.inputs),
        float_dtype=compiled._float_dtype,
        model=compiled.graph.name,
        echo=sys.stderr.isatty() if progress is None else progress,
    )
