"""The pass runner: verifies between passes, times them, dumps IR; the PIPELINE end to end.
The compile pipeline (`compiler.pipeline`): every stage in order, timed and dumped, and every
program's memory planned by the one planner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compiler
from compiler import pipeline
from compiler.core.errors import VerifyError
from compiler.core.ir import Graph, Node, Value
from passes.pipeline import PIPELINE, PassContext, run_pipeline
from tests.helpers import assert_numpy_equivalent, ir

HF_STYLE_MASK = """
def f(x: f32[1,1,4,4]):
    v0: i64[4] = arange(start=0, end=4, step=1, dtype=i64)
    v1: i64[()] = full(shape=(), value=0, dtype=i64)
    v2: i64[4] = add(v0, v1)
    v3: i64[4,1] = reshape(v2, shape=(4, 1))
    v4: i64[1,4] = reshape(v2, shape=(1, 4))
    v5: bool[4,4] = le(v4, v3)
    v6: bool[1,1,4,4] = reshape(v5, shape=(1, 1, 4, 4))
    v7: f32[()] = full(shape=(), value=-10000.0, dtype=f32)
    v8: f32[1,1,4,4] = where(v6, x, v7)
    v9: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v10: f32[1,1,4,4] = mul(v8, v9)
    return (v10,)
"""


def test_pipeline_folds_a_causal_mask_to_one_constant() -> None:
    before = ir(HF_STYLE_MASK)
    after = run_pipeline(before)
    assert after.op_counts() == {"constant": 1, "full": 1, "where": 1}
    assert_numpy_equivalent(before, after)


def test_runner_times_every_pass_and_dumps(tmp_path: Path) -> None:
    ctx = PassContext(dump_dir=tmp_path)
    run_pipeline(ir(HF_STYLE_MASK), ctx=ctx)
    assert [t[0] for t in ctx.timings] == [p.__name__ for p in PIPELINE]
    assert all(seconds >= 0 for _, seconds, _ in ctx.timings)
    dumps = sorted(p.name for p in tmp_path.iterdir())
    assert dumps[0] == "f.00.captured.py"
    assert any("fold_constants" in d for d in dumps)
    ir((tmp_path / dumps[-1]).read_text())  # every dump parses back as IR


def test_runner_verifies_between_passes() -> None:
    def broken_pass(g: Graph) -> Graph:
        n = g.nodes[0]
        bad = Node(n.op, ("nonexistent",), n.attrs, n.out)
        return g.replace(nodes=(bad, *g.nodes[1:]))

    with pytest.raises(VerifyError, match="nonexistent used before it is defined"):
        run_pipeline(
            ir("def f(x: f32[2]):\n    v0: f32[2] = exp(x)\n    return (v0,)\n"), [broken_pass]
        )


def test_pipeline_returns_the_same_graph_when_nothing_applies() -> None:
    g = ir("def f(x: f32[2]):\n    v0: f32[2] = exp(x)\n    return (v0,)\n")
    assert run_pipeline(g) is g


def test_value_names_do_not_leak_into_print() -> None:
    g = run_pipeline(ir(HF_STYLE_MASK))
    assert all(isinstance(v, Value) for v in g.inputs)
    assert "v0:" in str(g)


def _small(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    h = torch.relu(x @ w)
    return torch.softmax(h @ w + x, -1)


SMALL = (torch.randn(4, 8), torch.randn(8, 8))


def test_compile_runs_every_stage_in_order_timed_and_dumped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEFUSE_DUMP", str(tmp_path))
    c = compiler.compile(_small, SMALL, backend="numpy")
    names = [stage.__name__ for stage in pipeline.STAGES]
    assert names == ["capture", "lower", "optimize", "fuse", "tile"] + [
        "tune",
        "lay_out",
        "plan_memory",
        "render",
        "load",
    ]
    assert list(c.stats["stage_timings"]) == names
    dumped = {p.name.split(".")[2]: p for p in tmp_path.iterdir() if ".stage" in p.name}
    # loading makes nothing to write; the numpy backend measures nothing
    assert set(dumped) == set(names) - {"load", "tune"}
    arena = dumped["plan_memory"].read_text()
    assert arena.startswith(f"arena: {c.stats['planned_bytes']} bytes")
    assert f"arena = np.empty({c.stats['planned_bytes']}, dtype=np.uint8)" in c.source()
    assert dumped["render"].read_text() == c.source()
    assert dumped["lay_out"].read_text().startswith("memory request: ")


def test_every_program_is_planned_by_the_one_planner(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled program, another backend's and the per-kernel one bisection runs: each
    asks `plan_memory` once, for its own storage policy."""
    from passes import memory

    plan = memory.plan_memory
    requests: list[memory.MemoryRequest] = []

    def planner(s: object, request: memory.MemoryRequest) -> memory.Arena:
        requests.append(request)
        return plan(s, request)  # type: ignore[arg-type]

    monkeypatch.setattr(memory, "plan_memory", planner)

    def f(x: torch.Tensor) -> torch.Tensor:  # two kernels, a bf16 value between them
        return torch.softmax(torch.softmax(x, -1).t() * 2, -1)

    c = compiler.compile(f, (torch.randn(64, 32, dtype=torch.bfloat16),), backend="llvm")
    assert len(requests) == 1
    c.kernel_functions()  # the per-kernel program: every float stored in float32
    c.source("numpy")
    assert len(requests) == 3
    compiled, per_kernel, numpy = (dict(r.values) for r in requests)
    assert set(compiled) == set(per_kernel) == set(numpy)
    # the compiled program stores the bf16 value native kernels hand over in 16 bits
    assert compiled and all(compiled[v] * 2 == per_kernel[v] for v in compiled)
    assert per_kernel == numpy
    c.kernel_functions()
    assert len(requests) == 3  # each program made once
