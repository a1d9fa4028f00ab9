"""The `triton` backend behind the Backend protocol (`backends.protocol`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from backends.protocol import (
    KernelFunction,
    Placement,
    RenderOptions,
    Runner,
    ScheduleLayout,
    numpy_kernel,
)
from backends.triton import render as triton_render
from backends.triton.render import TritonProgram
from compiler.core.dtypes import to_torch
from compiler.core.ir import Graph
from compiler.core.schedule import KernelSpec, Schedule
from passes.memory import Arena


class TritonBackend:
    name = "triton"

    def supports(self, spec: KernelSpec) -> bool:
        return triton_render.supports(spec)

    def tune(self, schedule: Schedule, options: RenderOptions) -> None:
        return None  # nothing is measured: tiles come from the GPU profile's cost model

    def choices(self, program: Any) -> None:
        return None

    def lay_out(self, schedule: Schedule, options: RenderOptions) -> ScheduleLayout:
        # floats are stored as the IR says and computed in the compute type: one program
        # serves both
        fd, wide = options.float_dtype, options.per_kernel
        request = triton_render.memory_request(schedule, fd, wide=wide)
        return ScheduleLayout(schedule, fd, request, per_kernel=wide)

    def render(self, layout: ScheduleLayout, arena: Arena) -> TritonProgram:
        return triton_render.render_schedule(
            layout.schedule, arena, float_dtype=layout.float_dtype, wide=layout.per_kernel
        )

    def runner(self, program: TritonProgram) -> Runner:
        return program.load()

    def kernel_functions(self, program: TritonProgram) -> dict[str, KernelFunction]:
        return {name: numpy_kernel(fn) for name, fn in program.load_namespace().items()}

    def placement(self, program: TritonProgram, graph: Graph, float_dtype: str) -> Placement:
        """On a CUDA/ROCm device every input in its IR dtype (in float64 for a float64
        compute); without one, under the interpreter, on the CPU in the compute float type."""
        if not triton_render.has_gpu():
            return Placement(None, (None,) * len(graph.inputs))
        device = torch.device("cuda")  # the user's tensors' GPU (Placement)
        if float_dtype == "float64":
            return Placement(device, (None,) * len(graph.inputs))
        return Placement(device, tuple(to_torch(v.type.dtype) for v in graph.inputs))

    def save(self, program: TritonProgram, render: Callable[[], Any], path: Path) -> None:
        return None  # the schedule is all it needs: the module renders from it again

    def load_saved(self, path: Path, entry: Any, render: Callable[[], Any]) -> TritonProgram:
        return render()


BACKEND = TritonBackend()
