"""fold_constants: constant subgraphs are evaluated by the NumPy reference; weights never fold."""

from __future__ import annotations

import numpy as np

from passes.cleanup import FOLD_LIMIT, eliminate_dead_code, fold_constants
from tests.helpers import assert_ir, assert_numpy_equivalent, ir, run


def test_docstring_example_folds_a_mask() -> None:
    before = ir("""
def f(x: f32[4], y: f32[4]):
    v0: i64[4] = arange(start=0, end=4, step=1, dtype=i64)
    v1: i64[()] = full(shape=(), value=2, dtype=i64)
    v2: bool[4] = lt(v0, v1)
    v3: f32[4] = where(v2, x, y)
    return (v3,)
""")
    after = eliminate_dead_code(fold_constants(before))
    assert [n.op for n in after.nodes] == ["constant", "where"]
    assert_ir(
        after,
        """
def f(x: f32[4], y: f32[4]):
    v0: bool[4] = constant(value=const([True, True, False, False]), dtype=bool)
    v1: f32[4] = where(v0, x, y)
    return (v1,)
""",
    )
    assert_numpy_equivalent(before, after)


def test_uniform_result_becomes_full() -> None:
    before = ir("""
def f(x: f32[2,3]):
    v0: f32[()] = full(shape=(), value=2.0, dtype=f32)
    v1: f32[2,3] = expand(v0, shape=(2, 3))
    v2: f32[2,3] = exp(v1)
    v3: f32[2,3] = mul(x, v2)
    return (v3,)
""")
    after = eliminate_dead_code(fold_constants(before))
    assert_ir(
        after,
        f"""
def f(x: f32[2,3]):
    v0: f32[2,3] = full(shape=(2, 3), value={float(np.exp(np.float32(2.0)))!r}, dtype=f32)
    v1: f32[2,3] = mul(x, v0)
    return (v1,)
""",
    )
    assert_numpy_equivalent(before, after)


def test_weights_never_fold() -> None:
    g = ir("""
def f(w: f32[3], x: f32[3]):
    v0: f32[3] = exp(w)
    v1: f32[3] = add(v0, x)
    return (v1,)
""")
    assert fold_constants(g) is g


def test_large_non_uniform_result_stays_computed() -> None:
    n = FOLD_LIMIT * 2
    g = ir(f"""
def f(x: f32[{n}]):
    v0: f32[{n}] = arange(start=0, end={n}, step=1, dtype=f32)
    v1: f32[{n}] = sin(v0)
    v2: f32[{n}] = add(x, v1)
    return (v2,)
""")
    assert fold_constants(g) is g


def test_folded_values_match_the_unfolded_program() -> None:
    before = ir("""
def f(x: f32[3,4]):
    v0: i64[4] = arange(start=0, end=4, step=1, dtype=i64)
    v1: f32[4] = cast(v0, dtype=f32)
    v2: f32[()] = full(shape=(), value=0.5, dtype=f32)
    v3: f32[4] = mul(v1, v2)
    v4: f32[4] = cos(v3)
    v5: f32[3,4] = mul(x, v4)
    return (v5,)
""")
    after = fold_constants(before)
    assert "cos" not in after.op_counts()
    inputs = [np.ones((3, 4), np.float32)]
    np.testing.assert_allclose(run(after, inputs)[0][0], np.cos(np.arange(4) * 0.5), rtol=1e-6)
