"""Symbolic index arithmetic (backends/index.py): simplifications are exact."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from backends.index import Clamp, Lin, Var, linearize, reshape_index, unravel


def evaluate(e: Lin, env: dict[str, int]) -> int:
    total = e.const
    for atom, coeff in e.terms:
        total += coeff * _atom(atom, env)
    return total


def _atom(a: object, env: dict[str, int]) -> int:
    if isinstance(a, Var):
        return env[a.name]
    if isinstance(a, Clamp):
        return min(max(evaluate(a.x, env), a.lo), a.hi)
    k = a.k  # type: ignore[attr-defined]
    x = evaluate(a.x, env)  # type: ignore[attr-defined]
    return x // k if type(a).__name__ == "FloorDiv" else x % k


def test_group_of_channels_needs_no_division_by_the_spatial_size() -> None:
    c, h, w = Var("c", 320), Var("h", 32), Var("w", 32)
    linear = c.lin * 1024 + h.lin * 32 + w.lin
    assert repr(linear // (10 * 1024)) == "(c // 10)"
    assert repr(linear % 1024) == "(h*32 + w)"
    assert repr((h.lin * 32 + w.lin) // 32) == "h"


def test_split_and_merge_reshapes_cancel() -> None:
    b, s, d = Var("b", 2), Var("s", 128), Var("d", 768)
    idx = (b.lin, s.lin, d.lin)
    heads = reshape_index(idx, (2, 128, 768), (2, 128, 12, 64))
    back = reshape_index(heads, (2, 128, 12, 64), (2, 128, 768))
    assert back == idx


@pytest.mark.parametrize(
    ("out_shape", "in_shape"),
    [((6, 4), (2, 3, 4)), ((4, 6), (2, 12)), ((3, 1, 8), (24,)), ((5, 7), (35,)), ((12,), (3, 4))],
)
def test_reshape_index_matches_numpy(out_shape: tuple, in_shape: tuple) -> None:
    vars_ = [Var(f"v{i}", n) for i, n in enumerate(out_shape)]
    mapped = reshape_index(tuple(v.lin for v in vars_), out_shape, in_shape)
    source = np.arange(math.prod(in_shape)).reshape(in_shape)
    target = source.reshape(out_shape)
    for point in itertools.product(*(range(n) for n in out_shape)):
        env = {v.name: p for v, p in zip(vars_, point, strict=True)}
        at = tuple(evaluate(e, env) for e in mapped)
        assert source[at] == target[point]


def test_unravel_inverts_linearize() -> None:
    shape = (3, 5, 7)
    vars_ = [Var(f"v{i}", n) for i, n in enumerate(shape)]
    idx = tuple(v.lin for v in vars_)
    assert unravel(linearize(idx, shape), shape) == idx


def test_division_of_a_value_that_may_be_negative_stays_a_division() -> None:
    i = Var("i", 10)
    shifted = i.lin - 3
    q = shifted // 4
    for v in range(10):
        assert evaluate(q, {"i": v}) == (v - 3) // 4
        assert evaluate(shifted % 4, {"i": v}) == (v - 3) % 4


def test_bounds_and_free_variables() -> None:
    i, j = Var("i", 4), Var("j", 8)
    e = i.lin * 8 + j.lin
    assert e.bounds() == (0, 31)
    assert e.free() == {"i", "j"}
    assert (e // 8).free() == {"i"}
    clamp = Lin.of(Clamp(j.lin - 2, 0, 5))
    assert clamp.within(0, 5)
