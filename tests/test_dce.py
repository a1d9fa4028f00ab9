"""eliminate_dead_code."""

from __future__ import annotations

from passes.cleanup import eliminate_dead_code
from tests.helpers import assert_ir, assert_numpy_equivalent, ir


def test_docstring_example() -> None:
    before = ir("""
def f(x: f32[4]):
    v0: f32[4] = exp(x)
    v1: f32[4] = neg(x)
    return (v1,)
""")
    after = eliminate_dead_code(before)
    assert_ir(
        after,
        """
def f(x: f32[4]):
    v0: f32[4] = neg(x)
    return (v0,)
""",
    )
    assert_numpy_equivalent(before, after)


def test_keeps_inputs_even_when_unused() -> None:
    after = eliminate_dead_code(
        ir("""
def f(x: f32[4], unused: f32[2]):
    v0: f32[2] = exp(unused)
    return (x,)
""")
    )
    assert [v.name for v in after.inputs] == ["x", "unused"]
    assert len(after) == 0


def test_declines_when_everything_is_live() -> None:
    g = ir("""
def f(x: f32[4]):
    v0: f32[4] = exp(x)
    v1: f32[4] = neg(v0)
    return (v0, v1)
""")
    assert eliminate_dead_code(g) is g
