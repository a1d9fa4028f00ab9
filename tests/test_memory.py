"""plan_memory: liveness-based buffer reuse, used by the generated code, never above eager."""

from __future__ import annotations

import re

import pytest

import compiler
from backends.numpy_kernels import storage_itemsize
from passes.fusion import fuse_kernels
from passes.memory import eager_peak_bytes, plan_buffers, plan_memory
from tests.helpers import ir
from tests.test_fusion import CASES

CHAIN = """
def f(x: f32[4,8], w: f32[8,8]):
    v0: f32[4,8] = matmul(x, w)
    v1: f32[4,8] = matmul(v0, w)
    v2: f32[4,8] = matmul(v1, w)
    v3: f32[4,8] = matmul(v2, w)
    return (v3,)
"""


def test_docstring_example_chain_reuses_a_buffer() -> None:
    s = plan_memory(fuse_kernels(ir(CHAIN)))
    assert s.plan is not None
    assert dict(s.plan.assignment) == {"v0": 0, "v1": 1, "v2": 0}  # v3 is the output
    assert s.plan.sizes == (128, 128)


def test_outputs_and_their_views_are_never_reused() -> None:
    s = plan_memory(
        fuse_kernels(
            ir("""
def f(x: f32[4,8], w: f32[8,8]):
    v0: f32[4,8] = matmul(x, w)
    v1: f32[32] = reshape(v0, shape=(32,))
    v2: f32[4,8] = matmul(v0, w)
    v3: f32[4,8] = matmul(v2, w)
    return (v1, v3)
""")
        )
    )
    assert s.plan is not None and "v0" not in dict(s.plan.assignment)


def test_larger_value_grows_a_free_buffer() -> None:
    s = plan_memory(
        fuse_kernels(
            ir("""
def f(x: f32[4,8], w: f32[8,8], u: f32[8,64]):
    v0: f32[4,8] = matmul(x, w)
    v1: f32[4,8] = matmul(v0, w)
    v2: f32[4,64] = matmul(v1, u)
    v3: f32[4,64] = layer_norm(v2, normalized_shape=(64,), eps=1e-05)
    return (v3,)
""")
        )
    )
    assert s.plan is not None
    assert dict(s.plan.assignment)["v2"] == 0 and s.plan.sizes[0] == 4 * 64 * 4


def test_eager_peak_counts_live_intermediates() -> None:
    g = ir(CHAIN)
    assert eager_peak_bytes(g) == 2 * 4 * 8 * 4  # a matmul's input and output are both live


@pytest.mark.parametrize("name", list(CASES))
def test_plan_is_within_eager_peak_and_is_what_the_code_allocates(name: str) -> None:
    model, inputs = CASES[name][0]()
    c = compiler.compile(model, inputs, backend="numpy")
    assert c.stats["planned_bytes"] <= c.stats["eager_peak_bytes"], c.stats
    numpy_plan = plan_buffers(c.schedule, storage_itemsize("float32"))
    allocated = re.findall(r"buf(\d+) = np.empty\((\d+), dtype=np.uint8\)", c.source("numpy"))
    assert [int(size) for _, size in allocated] == list(numpy_plan.sizes)
