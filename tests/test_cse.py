"""eliminate_common_subexpressions."""

from __future__ import annotations

from passes.cleanup import eliminate_common_subexpressions
from tests.helpers import assert_ir, assert_numpy_equivalent, ir


def test_docstring_example() -> None:
    before = ir("""
def f(x: f32[4]):
    v0: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v1: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v2: f32[4] = add(x, v0)
    v3: f32[4] = add(x, v1)
    return (v2, v3)
""")
    after = eliminate_common_subexpressions(before)
    assert_ir(
        after,
        """
def f(x: f32[4]):
    v0: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v1: f32[4] = add(x, v0)
    return (v1, v1)
""",
    )
    assert_numpy_equivalent(before, after)


def test_chains_collapse_transitively() -> None:
    before = ir("""
def f(x: f32[4]):
    v0: f32[4] = exp(x)
    v1: f32[4] = exp(x)
    v2: f32[4] = neg(v0)
    v3: f32[4] = neg(v1)
    v4: f32[4] = add(v2, v3)
    return (v4,)
""")
    after = eliminate_common_subexpressions(before)
    assert after.op_counts() == {"add": 1, "exp": 1, "neg": 1}
    assert_numpy_equivalent(before, after)


def test_declines_when_attributes_differ() -> None:
    g = ir("""
def f(x: f32[2,3]):
    v0: f32[2] = sum(x, dims=(1,), keepdim=False)
    v1: f32[3] = sum(x, dims=(0,), keepdim=False)
    return (v0, v1)
""")
    assert eliminate_common_subexpressions(g) is g


def test_declines_when_input_order_differs() -> None:
    g = ir("""
def f(x: f32[4], y: f32[4]):
    v0: f32[4] = sub(x, y)
    v1: f32[4] = sub(y, x)
    return (v0, v1)
""")
    assert eliminate_common_subexpressions(g) is g
