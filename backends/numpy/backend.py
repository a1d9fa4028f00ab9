"""The `numpy` backend behind the Backend protocol (`backends.protocol`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from backends.numpy import kernels
from backends.protocol import KernelFunction, Placement, RenderOptions, Runner, ScheduleLayout
from compiler.core.ir import Graph
from compiler.core.reference import NumpyProgram
from compiler.core.schedule import KernelSpec, Schedule
from passes.memory import Arena


class NumpyBackend:
    name = "numpy"

    def supports(self, spec: KernelSpec) -> bool:
        return True  # every op has a NumPy template

    def tune(self, schedule: Schedule, options: RenderOptions) -> None:
        return None  # nothing is measured: tiles come from the GPU profile's cost model

    def choices(self, program: Any) -> None:
        return None

    def lay_out(self, schedule: Schedule, options: RenderOptions) -> ScheduleLayout:
        # every float is computed and stored in the compute type: one program serves both
        fd = options.float_dtype
        return ScheduleLayout(schedule, fd, kernels.memory_request(schedule, fd))

    def render(self, layout: ScheduleLayout, arena: Arena) -> NumpyProgram:
        return kernels.render_schedule(layout.schedule, arena, float_dtype=layout.float_dtype)

    def runner(self, program: NumpyProgram) -> Runner:
        fn = program.load()

        def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            outs = fn(*(t.numpy() for t in inputs))
            return tuple(torch.from_numpy(np.array(o)) for o in outs)

        return run

    def kernel_functions(self, program: NumpyProgram) -> dict[str, KernelFunction]:
        return program.load_namespace()

    def placement(self, program: NumpyProgram, graph: Graph, float_dtype: str) -> Placement:
        return Placement(None, (None,) * len(graph.inputs))

    def save(self, program: NumpyProgram, render: Callable[[], Any], path: Path) -> None:
        return None  # the schedule is all it needs

    def load_saved(self, path: Path, entry: Any, render: Callable[[], Any]) -> NumpyProgram:
        return render()


BACKEND = NumpyBackend()
