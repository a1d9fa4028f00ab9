"""The backend contract: everything the public face (`compiler.api`, `compiler.pipeline`,
`compiler.compiled`, `compiler.artifact`, `compiler.artifact_load`) knows of a backend.

A backend is a package under `backends/` whose `backend.py` defines `BACKEND`, an object with
the `Backend` interface below; `backends.get(name)` returns it. A program is made in three
calls, the pipeline's `lay_out`, `plan_memory` and `render` stages: the backend lays the
schedule out for `RenderOptions` (a `Layout`, whose `request` declares the program's storage
policy), the one memory planner (`passes.memory.plan_memory`) places that request in an
`Arena`, and the backend renders the layout over the arena into a `Program`. The public face
runs a program through `runner`, and asks the backend where its inputs go (`placement`) and
how its program is saved in an artifact and read back (`save`, `load_saved`). It never
names a backend nor reads a program's insides, so a fourth backend is one more package, one
more name in `backends.AVAILABLE` and in the backend contracts of `pyproject.toml`.
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
from passes.memory import Arena, MemoryRequest

Runner = Callable[..., tuple[torch.Tensor, ...]]  # graph inputs (tensors, in order) -> outputs
KernelFunction = Callable[..., None]  # a kernel's inputs, then one array per output (written)


@dataclass(frozen=True)
class RenderOptions:
    """What a program is rendered for. `float_dtype`: the compute float type ("float32" or
    "float64"). `weights`: the graph inputs that are model weights (parameters), whose
    layouts a backend may prepare once and keep while they do not change. `per_kernel`: every
    kernel function computes its whole kernel in the compute type, as the graph-level
    reference does, so kernel-by-kernel bisection can compare it (a backend that stores
    floats in 16 bits or runs kernels a block of rows at a time does neither then).
    `tuning`: what the backend's `tune` measured for this program (None: nothing)."""

    float_dtype: str = "float32"
    weights: frozenset[str] = frozenset()
    per_kernel: bool = False
    tuning: Any = None


@dataclass(frozen=True)
class Placement:
    """Where a program takes its graph inputs: `device` (None: the CPU; a device without an
    index: the device of that type the user's tensors are on, else the current one) and, per
    input, the torch dtype it is passed as (None: a float in the compute float type, anything
    else as it is). A program's placement does not change from call to call."""

    device: torch.device | None
    dtypes: tuple[torch.dtype | None, ...]


class Layout(Protocol):
    """A program laid out as far as it goes before its memory is placed; `request`: what it
    asks the memory planner to place (every planned value in the bytes the program stores it
    in, each kernel's scratch, kernels run interleaved)."""

    @property
    def request(self) -> MemoryRequest: ...


@dataclass(frozen=True)
class ScheduleLayout:
    """The layout of a backend that writes its whole program once memory is placed: the
    schedule, the compute float type and the request."""

    schedule: Schedule
    float_dtype: str
    request: MemoryRequest
    per_kernel: bool = False  # `RenderOptions.per_kernel`


class Program(Protocol):
    """A rendered program: `source` is its generated code, meant to be read."""

    @property
    def source(self) -> str: ...


class Backend(Protocol):
    name: str

    def supports(self, spec: KernelSpec) -> bool:
        """Whether this backend can run the kernel `spec`."""
        ...

    def tune(self, schedule: Schedule, options: RenderOptions) -> Any:
        """The choices of the program for `schedule` that are measured on this host (a
        printable object the backend's `lay_out` reads from `options.tuning`), or None for
        a backend that measures nothing."""
        ...

    def choices(self, program: Program) -> Any:
        """The choices `program` took that `tune` measured (or read, or left to a default),
        printable with `to_dict()`; None for a backend that measures nothing."""
        ...

    def lay_out(self, schedule: Schedule, options: RenderOptions) -> Layout:
        """The program computing `schedule`, laid out for `options` up to where its memory
        goes (a backend that learns what scratch its kernels need by writing them does so
        here)."""
        ...

    def render(self, layout: Layout, arena: Arena) -> Program:
        """The program of `layout`, its planned values and scratch in `arena` (what
        `plan_memory` made of `layout.request`)."""
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
    """A kernel function over tensors, called with NumPy arrays instead (memory shared; an
    array that is not C-contiguous is passed as a contiguous copy, copied back after the call,
    so an output written in place lands in the caller's array)."""

    def run(*arrays: np.ndarray) -> None:
        dense = [np.ascontiguousarray(a) for a in arrays]
        fn(*(torch.from_numpy(d) for d in dense))
        for a, d in zip(arrays, dense, strict=True):
            if d is not a and a.flags.writeable:
                a[...] = d

    return run
