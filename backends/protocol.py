"""The backend contract: everything the public face (`compiler.api`, `compiler.artifact`,
`compiler.artifact_load`) knows of a backend.

A backend is a package under `backends/` whose `backend.py` defines `BACKEND`, an object with
the `Backend` interface below; `backends.get(name)` returns it. The public face passes a
schedule and `RenderOptions` in and gets a `Program` back, runs it through `runner`, and asks
the backend where its inputs go (`placement`) and how its program is saved in an artifact
and read back (`save`, `load_saved`). It never names a backend nor reads a program's insides,
so a fourth backend is one more package and one more name in `backends.AVAILABLE`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from compiler.core.ir import Graph
from compiler.core.schedule import KernelSpec, Schedule

Runner = Callable[..., tuple[torch.Tensor, ...]]  # graph inputs (tensors, in order) -> outputs
KernelFunction = Callable[..., None]  # a kernel's inputs, then one array per output (written)


@dataclass(frozen=True)
class RenderOptions:
    """What a program is rendered for. `float_dtype`: the compute float type ("float32" or
    "float64"). `weights`: the graph inputs that are model weights (parameters), whose
    layouts a backend may prepare once and keep while they do not change. `per_kernel`: every
    kernel function computes its whole kernel in the compute type, as the graph-level
    reference does, so kernel-by-kernel bisection can compare it (a backend that stores
    floats in 16 bits or runs kernels a block of rows at a time does neither then)."""

    float_dtype: str = "float32"
    weights: frozenset[str] = frozenset()
    per_kernel: bool = False


@dataclass(frozen=True)
class Placement:
    """Where a program takes its graph inputs: `device` (None: the CPU; a device without an
    index: the device of that type the user's tensors are on, else the current one) and, per
    input, the torch dtype it is passed as (None: a float in the compute float type, anything
    else as it is). A program's placement does not change from call to call."""

    device: torch.device | None
    dtypes: tuple[torch.dtype | None, ...]


class Program(Protocol):
    """A rendered program: `source` is its generated code, meant to be read."""

    @property
    def source(self) -> str: ...


class Backend(Protocol):
    name: str

    def supports(self, spec: KernelSpec) -> bool:
        """Whether this backend can run the kernel `spec`."""
        ...

    def render(self, schedule: Schedule, options: RenderOptions) -> Program:
        """The program computing `schedule`."""
        ...

    def runner(self, program: Program) -> Runner:
        """The program loaded, ready to call on tensors placed as `placement` says; returns
        its outputs as tensors (in the compute float type or the program's storage dtype:
        the caller converts them to the graph's output dtypes)."""
        ...

    def kernel_functions(self, program: Program) -> dict[str, KernelFunction]:
        """The program's kernel functions by kernel name, each taking NumPy arrays: the
        kernel's inputs, then one output array per kernel output, written in place."""
        ...

    def placement(self, program: Program, graph: Graph, float_dtype: str) -> Placement:
        """Where and as what the program takes the graph inputs."""
        ...

    def save(self, program: Program, render: Callable[[], Program], path: Path) -> Any:
        """Write what loading the program later needs into the artifact directory `path`,
        beyond the schedule every artifact holds; returns the manifest's entry for it (plain
        JSON data, or None). `render()`: the program rendered afresh, for a backend that
        needs what a program read back from an artifact no longer holds."""
        ...

    def load_saved(self, path: Path, entry: Any, render: Callable[[], Program]) -> Program:
        """The program of the artifact at `path`, whose manifest entry `save` wrote is
        `entry` (None when the artifact was saved for another backend): read back where it
        can be, else `render()`."""
        ...


def numpy_kernel(fn: Callable[..., None]) -> KernelFunction:
    """A kernel function over tensors, called with NumPy arrays instead (memory shared)."""

    def run(*arrays: np.ndarray) -> None:
        fn(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))

    return run
