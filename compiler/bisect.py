"""Kernel-by-kernel bisection: which kernel first diverged from the reference?

Each kernel runs on inputs taken from the unfused graph-level NumPy reference (the oracle), and
its outputs are compared with the reference's values for the same IR names; the first kernel
whose outputs differ beyond float tolerance is named, with its IR. Feeding reference inputs to
every kernel isolates it: an error upstream cannot make a correct kernel look wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RTOL = 1e-4  # kernels compute in float32 like the reference: only reassociation differs


@dataclass(frozen=True)
class Divergence:
    kernel: str
    output: str
    max_abs: float
    scale: float
    ir: str

    def __str__(self) -> str:
        return (
            f"first kernel that diverged: {self.kernel} (output {self.output}: max abs err "
            f"{self.max_abs:.3e} against a reference of magnitude {self.scale:.3e})\n{self.ir}"
        )


def bisect_kernels(
    compiled: Any, args: tuple[Any, ...], kwargs: dict[str, Any], backend: str
) -> Divergence | None:
    """Run `backend`'s kernels one at a time on reference inputs; the first divergence."""
    reference = compiled.reference_values(args, kwargs)
    namespace = compiled.kernel_functions(backend)
    for k in compiled.schedule.kernels:
        outs = {
            o: np.empty(np.shape(reference[o]), np.asarray(reference[o]).dtype) for o in k.outputs
        }
        with np.errstate(all="ignore"):
            namespace[k.name](*(reference[v.name] for v in k.inputs), *outs.values())
        for o, got in outs.items():
            want = np.asarray(reference[o])
            if want.dtype.kind not in "fc":
                if not np.array_equal(got, want):
                    return Divergence(k.name, o, float("inf"), 0.0, str(k))
                continue
            # equal values (infinities included) and NaN where the reference has NaN agree
            differ = ~((got == want) | (np.isnan(got) & np.isnan(want)))
            finite = np.isfinite(want)
            scale = float(np.max(np.abs(want[finite]))) if finite.any() else 0.0
            err = float(np.max(np.abs(got - want)[differ])) if differ.any() else 0.0
            if not err <= RTOL * max(scale, 1e-30) + 1e-7:  # also catches NaN
                return Divergence(k.name, o, err, scale, str(k))
    return None
