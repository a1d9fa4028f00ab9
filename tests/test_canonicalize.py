"""canonicalize: each rule fires on its pattern (Before -> After, NumPy-equivalent) and declines
where it must not apply."""

from __future__ import annotations

import pytest

from passes.canonicalize import CANONICALIZE_RULES, canonicalize
from passes.cleanup import eliminate_dead_code
from tests.helpers import assert_ir, assert_numpy_equivalent, ir


def simplify(text: str):  # canonicalize, then drop what it left unused
    before = ir(text)
    after = eliminate_dead_code(canonicalize(before))
    assert_numpy_equivalent(before, after)
    return after


def test_docstring_example() -> None:
    after = canonicalize(
        ir("""
def f(x: f32[2,3]):
    v0: f32[3,2] = reshape(x, shape=(3, 2))
    v1: f32[2,3] = reshape(v0, shape=(2, 3))
    v2: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v3: f32[2,3] = mul(v1, v2)
    return (v3,)
""")
    )
    assert_ir(
        after,
        """
def f(x: f32[2,3]):
    v0: f32[3,2] = reshape(x, shape=(3, 2))
    v1: f32[()] = full(shape=(), value=1.0, dtype=f32)
    return (x,)
""",
    )


# (rule name, before, after) — the positive case of every rule.
POSITIVE = [
    (
        "sum(x) => x  (x 0-d)",
        """
def f(x: f32[()]):
    v0: f32[()] = sum(x, dims=(), keepdim=False)
    v1: f32[()] = exp(v0)
    return (v1,)
""",
        """
def f(x: f32[()]):
    v0: f32[()] = exp(x)
    return (v0,)
""",
    ),
    (
        "mean(x) => x  (x 0-d)",
        """
def f(x: f32[()]):
    v0: f32[()] = mean(x, dims=(), keepdim=True)
    v1: f32[()] = exp(v0)
    return (v1,)
""",
        """
def f(x: f32[()]):
    v0: f32[()] = exp(x)
    return (v0,)
""",
    ),
    (
        "amax(x) => x  (x 0-d)",
        """
def f(x: f32[()]):
    v0: f32[()] = amax(x, dims=(), keepdim=False)
    v1: f32[()] = exp(v0)
    return (v1,)
""",
        """
def f(x: f32[()]):
    v0: f32[()] = exp(x)
    return (v0,)
""",
    ),
    (
        "amin(x) => x  (x 0-d)",
        """
def f(x: f32[()]):
    v0: f32[()] = amin(x, dims=(), keepdim=False)
    v1: f32[()] = exp(v0)
    return (v1,)
""",
        """
def f(x: f32[()]):
    v0: f32[()] = exp(x)
    return (v0,)
""",
    ),
    (
        "cumsum(x) => x  (x 0-d)",
        """
def f(x: f32[()]):
    v0: f32[()] = cumsum(x, dim=0)
    v1: f32[()] = exp(v0)
    return (v1,)
""",
        """
def f(x: f32[()]):
    v0: f32[()] = exp(x)
    return (v0,)
""",
    ),
    (
        "softmax(x) => exp(x - x)  (x 0-d)",
        """
def f(x: f32[()]):
    v0: f32[()] = softmax(x, dim=0)
    return (v0,)
""",
        """
def f(x: f32[()]):
    v0: f32[()] = sub(x, x)
    v1: f32[()] = exp(v0)
    return (v1,)
""",
    ),
    (
        "log_softmax(x) => x - x  (x 0-d)",
        """
def f(x: f32[()]):
    v0: f32[()] = log_softmax(x, dim=-1)
    return (v0,)
""",
        """
def f(x: f32[()]):
    v0: f32[()] = sub(x, x)
    return (v0,)
""",
    ),
    (
        "reshape(x) => x  (same shape)",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = reshape(x, shape=(2, 3))
    v1: f32[2,3] = exp(v0)
    return (v1,)
""",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = exp(x)
    return (v0,)
""",
    ),
    (
        "reshape(reshape(x)) => reshape(x)",
        """
def f(x: f32[2,3]):
    v0: f32[6] = reshape(x, shape=(6,))
    v1: f32[3,2] = reshape(v0, shape=(3, 2))
    return (v1,)
""",
        """
def f(x: f32[2,3]):
    v0: f32[3,2] = reshape(x, shape=(3, 2))
    return (v0,)
""",
    ),
    (
        "permute(x, identity) => x",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = permute(x, dims=(0, 1))
    v1: f32[2,3] = exp(v0)
    return (v1,)
""",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = exp(x)
    return (v0,)
""",
    ),
    (
        "permute(permute(x, p), q) => permute(x, p[q])",
        """
def f(x: f32[2,3,4]):
    v0: f32[3,4,2] = permute(x, dims=(1, 2, 0))
    v1: f32[4,2,3] = permute(v0, dims=(1, 2, 0))
    return (v1,)
""",
        """
def f(x: f32[2,3,4]):
    v0: f32[4,2,3] = permute(x, dims=(2, 0, 1))
    return (v0,)
""",
    ),
    (
        "expand(x) => x  (same shape)",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = expand(x, shape=(2, 3))
    return (v0,)
""",
        """
def f(x: f32[2,3]):
    return (x,)
""",
    ),
    (
        "slice(x) => x  (whole dim)",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = slice(x, dim=1, start=0, end=3, step=1)
    return (v0,)
""",
        """
def f(x: f32[2,3]):
    return (x,)
""",
    ),
    (
        "cat(x) => x",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = cat(x, dim=0)
    return (v0,)
""",
        """
def f(x: f32[2,3]):
    return (x,)
""",
    ),
    (
        "cast(x, x.dtype) => x",
        """
def f(x: f32[2,3]):
    v0: f32[2,3] = cast(x, dtype=f32)
    return (v0,)
""",
        """
def f(x: f32[2,3]):
    return (x,)
""",
    ),
    (
        "cast(cast(x, exact), t) => cast(x, t)",
        """
def f(x: bf16[2,3]):
    v0: f32[2,3] = cast(x, dtype=f32)
    v1: bf16[2,3] = cast(v0, dtype=bf16)
    return (v1,)
""",
        """
def f(x: bf16[2,3]):
    return (x,)
""",
    ),
    (
        "mul(x, 1) => x",
        """
def f(x: f32[2,3]):
    v0: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v1: f32[2,3] = mul(v0, x)
    return (v1,)
""",
        """
def f(x: f32[2,3]):
    return (x,)
""",
    ),
    (
        "add(x, 0) => x  (integer 0, or -0.0)",
        """
def f(x: i64[4]):
    v0: i64[()] = full(shape=(), value=0, dtype=i64)
    v1: i64[4] = add(x, v0)
    return (v1,)
""",
        """
def f(x: i64[4]):
    return (x,)
""",
    ),
    (
        "sub(x, 0) => x",
        """
def f(x: f32[4]):
    v0: f32[()] = full(shape=(), value=0.0, dtype=f32)
    v1: f32[4] = sub(x, v0)
    return (v1,)
""",
        """
def f(x: f32[4]):
    return (x,)
""",
    ),
    (
        "div(x, 1) => x",
        """
def f(x: f32[4]):
    v0: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v1: f32[4] = div(x, v0)
    return (v1,)
""",
        """
def f(x: f32[4]):
    return (x,)
""",
    ),
    (
        "pow(x, 2) => mul(x, x)",
        """
def f(x: f32[4]):
    v0: f32[()] = full(shape=(), value=2.0, dtype=f32)
    v1: f32[4] = pow(x, v0)
    return (v1,)
""",
        """
def f(x: f32[4]):
    v0: f32[4] = mul(x, x)
    return (v0,)
""",
    ),
    (
        "neg(neg(x)) => x",
        """
def f(x: f32[4]):
    v0: f32[4] = neg(x)
    v1: f32[4] = neg(v0)
    return (v1,)
""",
        """
def f(x: f32[4]):
    return (x,)
""",
    ),
]

# (rule name, a graph the rule must leave alone)
DECLINED = [
    (
        "reshape(x) => x  (same shape)",
        """
def f(x: f32[2,3]):
    v0: f32[3,2] = reshape(x, shape=(3, 2))
    return (v0,)
""",
    ),
    (
        "permute(x, identity) => x",
        """
def f(x: f32[2,3]):
    v0: f32[3,2] = permute(x, dims=(1, 0))
    return (v0,)
""",
    ),
    (
        "expand(x) => x  (same shape)",
        """
def f(x: f32[1,3]):
    v0: f32[2,3] = expand(x, shape=(2, 3))
    return (v0,)
""",
    ),
    (
        "slice(x) => x  (whole dim)",
        """
def f(x: f32[2,3]):
    v0: f32[2,2] = slice(x, dim=1, start=1, end=3, step=1)
    return (v0,)
""",
    ),
    (
        "cast(cast(x, exact), t) => cast(x, t)  (lossy middle)",
        """
def f(x: f32[2,3]):
    v0: bf16[2,3] = cast(x, dtype=bf16)
    v1: f32[2,3] = cast(v0, dtype=f32)
    return (v1,)
""",
    ),
    (
        "cast(cast(x, exact), t) => cast(x, t)  (f16 is not exact in bf16)",
        """
def f(x: f16[2,3]):
    v0: bf16[2,3] = cast(x, dtype=bf16)
    v1: f16[2,3] = cast(v0, dtype=f16)
    return (v1,)
""",
    ),
    (
        "mul(x, 1) => x  (the scalar broadcasts x up)",
        """
def f(x: f32[3]):
    v0: f32[2,3] = full(shape=(2, 3), value=1.0, dtype=f32)
    v1: f32[2,3] = mul(x, v0)
    return (v1,)
""",
    ),
    (
        "mul(x, 1) => x  (not one)",
        """
def f(x: f32[3]):
    v0: f32[()] = full(shape=(), value=1.5, dtype=f32)
    v1: f32[3] = mul(x, v0)
    return (v1,)
""",
    ),
    (
        "sub(x, 0) => x  (zero on the left)",
        """
def f(x: f32[3]):
    v0: f32[()] = full(shape=(), value=0.0, dtype=f32)
    v1: f32[3] = sub(v0, x)
    return (v1,)
""",
    ),
    (
        "pow(x, 2) => mul(x, x)  (other exponent)",
        """
def f(x: f32[4]):
    v0: f32[()] = full(shape=(), value=3.0, dtype=f32)
    v1: f32[4] = pow(x, v0)
    return (v1,)
""",
    ),
]


@pytest.mark.parametrize(("rule", "before", "after"), POSITIVE, ids=[p[0] for p in POSITIVE])
def test_rule_fires(rule: str, before: str, after: str) -> None:
    assert_ir(simplify(before), after)


@pytest.mark.parametrize(("rule", "before"), DECLINED, ids=[d[0] for d in DECLINED])
def test_rule_declines(rule: str, before: str) -> None:
    g = ir(before)
    assert canonicalize(g) is g  # untouched: the very same object


def test_every_rule_has_a_positive_case() -> None:
    assert {r.name for r in CANONICALIZE_RULES} == {p[0] for p in POSITIVE}


def test_does_not_mutate_its_input() -> None:
    g = ir(POSITIVE[1][1])
    text = str(g)
    canonicalize(g)
    assert str(g) == text


def test_a_sum_of_an_integer_scalar_keeps_its_wider_type() -> None:
    after = simplify("""
def f(x: i32[()]):
    v0: i64[()] = sum(x, dims=(), keepdim=False)
    return (v0,)
""")
    assert_ir(
        after,
        """
def f(x: i32[()]):
    v0: i64[()] = cast(x, dtype=i64)
    return (v0,)
""",
    )


def test_a_reduction_of_a_tensor_is_kept() -> None:
    g = ir("""
def f(x: f32[3]):
    v0: f32[()] = sum(x, dims=(0,), keepdim=False)
    v1: f32[3] = softmax(x, dim=0)
    return (v0, v1)
""")
    assert canonicalize(g) is g
