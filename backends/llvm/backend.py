"""The `llvm` backend behind the Backend protocol (`backends.protocol`).

The renderer (llvmlite's IR builder and every kernel generator) is imported only to render:
loading an artifact on the CPU it was built for needs neither it nor LLVM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backends.llvm import artifact
from backends.llvm.runtime import LlvmProgram
from backends.protocol import KernelFunction, Placement, RenderOptions, Runner, numpy_kernel
from compiler.core.ir import Graph
from compiler.core.schedule import KernelSpec, Schedule
from passes.memory import Arena

if TYPE_CHECKING:
    from backends.llvm.render import LlvmLayout
    from backends.llvm.tuning import Choices, Tuned


class LlvmBackend:
    name = "llvm"

    def supports(self, spec: KernelSpec) -> bool:
        return True  # matmuls, convolutions and attention native or extern, the rest native

    def tune(self, schedule: Schedule, options: RenderOptions) -> Tuned | None:
        if options.per_kernel:  # bisection's program: the defaults, nothing timed
            return None
        from backends.llvm.render import tune

        return tune(schedule, float_dtype=options.float_dtype, weights=options.weights)

    def choices(self, program: LlvmProgram) -> Choices:
        from backends.llvm import tuning

        return tuning.Choices(program.choices, tuning.cpu(), tuning.tuning_file())

    def lay_out(self, schedule: Schedule, options: RenderOptions) -> LlvmLayout:
        from backends.llvm.render import lay_out

        return lay_out(
            schedule,
            float_dtype=options.float_dtype,
            weights=options.weights,
            sixteen_bit=not options.per_kernel,
            row_blocks=not options.per_kernel,
            tuned=options.tuning,
        )

    def render(self, layout: LlvmLayout, arena: Arena) -> LlvmProgram:
        from backends.llvm.render import render

        return render(layout, arena)

    def runner(self, program: LlvmProgram) -> Runner:
        return program.load()

    def kernel_functions(self, program: LlvmProgram) -> dict[str, KernelFunction]:
        namespace = program.load_namespace()
        return {name: numpy_kernel(namespace[name]) for name, _ in program.steps}

    def placement(self, program: LlvmProgram, graph: Graph, float_dtype: str) -> Placement:
        return Placement(None, program.input_dtypes)

    def save(
        self, program: LlvmProgram, render: Callable[[], LlvmProgram], path: Path
    ) -> dict[str, Any] | None:
        if program.source_file is not None:  # itself read back from an artifact: no IR kept
            program = render()
        return artifact.save(program, path)

    def load_saved(self, path: Path, entry: Any, render: Callable[[], LlvmProgram]) -> LlvmProgram:
        return artifact.load(path, entry, render)


BACKEND = LlvmBackend()
