"""Shared test helpers: IR comparison, NumPy equivalence of two graphs, a backend's program
for a schedule."""

from __future__ import annotations

from typing import Any

import numpy as np

from backends.protocol import Program
from compiler import pipeline
from compiler.core.ir import Graph, print_graph
from compiler.core.ir_text import parse_graph
from compiler.core.ops import ref
from compiler.core.reference import render
from compiler.core.schedule import Schedule
from passes.memory import plan_memory


def program(backend: str, s: Schedule) -> Program:
    """`backend`'s program for `s`, made as the pipeline makes every program."""
    return pipeline.program(pipeline.Build(backend, schedule=s))


def llvm_program(s: Schedule, **flags: Any) -> Any:
    """The llvm program for `s` with the renderer's own storage flags (`sixteen_bit`,
    `row_blocks`, `weights`), through the one planner as the pipeline does."""
    from backends.llvm import render as llvm_render

    layout = llvm_render.lay_out(s, **flags)
    return llvm_render.render(layout, plan_memory(s, layout.request))


def ir(text: str) -> Graph:
    return parse_graph(text)


def assert_ir(actual: Graph, expected: str) -> None:
    """`actual` prints exactly as the expected IR text does (renumbered, without sources)."""
    want = print_graph(parse_graph(expected), sources=False)
    got = print_graph(actual, sources=False)
    assert got == want, f"\n--- got\n{got}--- expected\n{want}"


def random_inputs(g: Graph, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for v in g.inputs:
        t = v.type
        if t.dtype.is_float:
            # values a tensor of that dtype can hold (bf16/f16 live in float32 arrays)
            x = rng.standard_normal(t.shape).astype(np.float32)
            out.append(ref.cast(x, t.dtype.value, np.float32))
        elif t.dtype.value == "bool":
            out.append(rng.random(t.shape) > 0.5)
        else:
            out.append(rng.integers(0, 4, t.shape).astype(np.int64))
    return out


def run(g: Graph, inputs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    return render(g).load()(*inputs)


def assert_numpy_equivalent(before: Graph, after: Graph, seed: int = 0) -> None:
    """Both graphs give the same outputs on random inputs (the NumPy reference decides)."""
    inputs = random_inputs(before, seed)
    outs = zip(before.outputs, run(before, inputs), run(after, inputs), strict=True)
    for name, a, b in outs:
        # bf16/f16 values live in float32 arrays; a rewrite may drop one rounding to them.
        tol = {"bf16": 8e-3, "f16": 1e-3}.get(before.type_of(name).dtype.value, 1e-6)
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)
