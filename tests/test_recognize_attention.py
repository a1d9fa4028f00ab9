"""recognize_attention: each rule fires on its pattern (Before -> After, NumPy-equivalent on inputs
that keep at least one key per row) and declines where it must not apply; then whole programs
(a hand-written attention function, Hugging Face LLaMA and GPT-2, sdpa and eager) end with
is_causal / enable_gqa `sdpa` nodes and still match eager PyTorch.

Repro: pytest tests/test_recognize_attention.py -k "gqa"
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from compiler.core.ir import Graph
from compiler.core.reference import render
from compiler.frontend.capture import capture
from passes.cleanup import eliminate_dead_code
from passes.pipeline import PIPELINE, run_pipeline
from passes.recognize_attention import ATTENTION_RULES, recognize_attention
from tests.helpers import assert_ir, ir, random_inputs, run

ADDITIVE = "matmul(softmax(q @ k^T * c [+ mask]), v) => sdpa(q, k, v[, mask], scale=c)"
BOOL = "matmul(softmax(where(keep, q @ k^T * c, -inf)), v) => sdpa(q, k, v, keep, scale=c)"
GQA = "sdpa(q, repeat_kv(k, n), repeat_kv(v, n)) => sdpa(q, k, v, enable_gqa=True)"
CAUSAL = "sdpa(q, k, v, tril mask) => sdpa(q, k, v, is_causal=True)"


def keeping_a_key(g: Graph, seed: int = 0) -> list[np.ndarray]:
    """Random inputs, except that bool masks keep key 0 in every row (inputs named drop* drop
    nothing there): a fully masked row is where hand-written attention and sdpa may differ."""
    inputs = random_inputs(g, seed)
    for v, x in zip(g.inputs, inputs, strict=True):
        if x.dtype == np.bool_:
            x[..., 0] = not v.name.startswith("drop")
    return inputs


def assert_equivalent(before: Graph, after: Graph, tol: float = 1e-6) -> None:
    inputs = keeping_a_key(before)
    for a, b in zip(run(before, inputs), run(after, inputs), strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def recognize(text: str, tol: float = 1e-6) -> Graph:  # the pass, then drop what it left unused
    before = ir(text)
    after = eliminate_dead_code(recognize_attention(before))
    assert_equivalent(before, after, tol)
    return after


def test_docstring_example() -> None:
    after = recognize("""
def f(q: f32[1,2,8,16], k: f32[1,2,8,16], v: f32[1,2,8,16]):
    v0: f32[1,2,16,8] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,8,8] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=0.25, dtype=f32)
    v3: f32[1,2,8,8] = mul(v1, v2)
    v4: f32[1,2,8,8] = softmax(v3, dim=3)
    v5: f32[1,2,8,16] = matmul(v4, v)
    return (v5,)
""")
    assert_ir(
        after,
        """
def f(q: f32[1,2,8,16], k: f32[1,2,8,16], v: f32[1,2,8,16]):
    v0: f32[1,2,8,16] = sdpa(q, k, v, scale=0.25, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    )


QKV = "q: f32[1,2,4,8], k: f32[1,2,4,8], v: f32[1,2,4,8]"
SDPA = "f32[1,2,4,8] = sdpa"

# (rule name [+ "  (variant)"], before, after) — at least one positive case per rule.
POSITIVE = [
    (
        f"{ADDITIVE}  (mul scale, additive mask)",
        f"""
def f({QKV}, mask: f32[1,1,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=0.125, dtype=f32)
    v3: f32[1,2,4,4] = mul(v2, v1)
    v4: f32[1,2,4,4] = add(mask, v3)
    v5: f32[1,2,4,4] = softmax(v4, dim=-1)
    v6: f32[1,2,4,8] = matmul(v5, v)
    return (v6,)
""",
        f"""
def f({QKV}, mask: f32[1,1,4,4]):
    v0: {SDPA}(q, k, v, mask, scale=0.125, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{ADDITIVE}  (div by sqrt(d), no mask)",
        f"""
def f({QKV}):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=4.0, dtype=f32)
    v3: f32[1,2,4,4] = div(v1, v2)
    v4: f32[1,2,4,4] = softmax(v3, dim=3)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
        f"""
def f({QKV}):
    v0: {SDPA}(q, k, v, scale=0.25, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{ADDITIVE}  (scale on q, unscaled scores)",
        f"""
def f({QKV}):
    v0: f32[()] = full(shape=(), value=0.5, dtype=f32)
    v1: f32[1,2,4,8] = mul(q, v0)
    v2: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v3: f32[1,2,4,4] = matmul(v1, v2)
    v4: f32[1,2,4,4] = softmax(v3, dim=-1)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
        f"""
def f({QKV}):
    v0: {SDPA}(q, k, v, scale=0.5, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{ADDITIVE}  (no scale at all)",
        f"""
def f({QKV}):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,4,4] = softmax(v1, dim=-1)
    v3: f32[1,2,4,8] = matmul(v2, v)
    return (v3,)
""",
        f"""
def f({QKV}):
    v0: {SDPA}(q, k, v, scale=1.0, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{ADDITIVE}  (GPT-2: head split and transpose composed into one permute)",
        """
def f(q: f32[1,2,4,8], x: f32[1,4,2,8], v: f32[1,2,4,8]):
    v0: f32[1,2,8,4] = permute(x, dims=(0, 2, 3, 1))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=0.25, dtype=f32)
    v3: f32[1,2,4,4] = mul(v1, v2)
    v4: f32[1,2,4,4] = softmax(v3, dim=-1)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
        """
def f(q: f32[1,2,4,8], x: f32[1,4,2,8], v: f32[1,2,4,8]):
    v0: f32[1,2,4,8] = permute(x, dims=(0, 2, 1, 3))
    v1: f32[1,2,4,8] = sdpa(q, v0, v, scale=0.25, is_causal=False, enable_gqa=False)
    return (v1,)
""",
    ),
    (
        f"{ADDITIVE}  (rank 3: batch*heads folded together)",
        """
def f(q: f32[2,4,8], k: f32[2,4,8], v: f32[2,4,8]):
    v0: f32[2,8,4] = permute(k, dims=(0, 2, 1))
    v1: f32[2,4,4] = matmul(q, v0)
    v2: f32[2,4,4] = softmax(v1, dim=2)
    v3: f32[2,4,8] = matmul(v2, v)
    return (v3,)
""",
        """
def f(q: f32[2,4,8], k: f32[2,4,8], v: f32[2,4,8]):
    v0: f32[2,4,8] = sdpa(q, k, v, scale=1.0, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{BOOL}  (where(keep, scores, -inf))",
        f"""
def f({QKV}, keep: bool[1,1,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=0.125, dtype=f32)
    v3: f32[1,2,4,4] = mul(v1, v2)
    v4: f32[()] = full(shape=(), value=-1e999, dtype=f32)
    v5: f32[1,2,4,4] = where(keep, v3, v4)
    v6: f32[1,2,4,4] = softmax(v5, dim=-1)
    v7: f32[1,2,4,8] = matmul(v6, v)
    return (v7,)
""",
        f"""
def f({QKV}, keep: bool[1,1,4,4]):
    v0: {SDPA}(q, k, v, keep, scale=0.125, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{BOOL}  (masked_fill(drop, finfo.min), drop an input)",
        f"""
def f({QKV}, drop: bool[1,1,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=-3.4028234663852886e+38, dtype=f32)
    v3: f32[1,2,4,4] = where(drop, v2, v1)
    v4: f32[1,2,4,4] = softmax(v3, dim=-1)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
        f"""
def f({QKV}, drop: bool[1,1,4,4]):
    v0: bool[1,1,4,4] = logical_not(drop)
    v1: {SDPA}(q, k, v, v0, scale=1.0, is_causal=False, enable_gqa=False)
    return (v1,)
""",
    ),
    (
        f"{BOOL}  (a constant padding mask to drop, inverted)",
        f"""
def f({QKV}):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: bool[1,4] = constant(value=const([[False, False, False, True]]), dtype=bool)
    v3: f32[()] = full(shape=(), value=-1e999, dtype=f32)
    v4: f32[1,2,4,4] = where(v2, v3, v1)
    v5: f32[1,2,4,4] = softmax(v4, dim=-1)
    v6: f32[1,2,4,8] = matmul(v5, v)
    return (v6,)
""",
        f"""
def f({QKV}):
    v0: bool[1,4] = constant(value=const([[True, True, True, False]]), dtype=bool)
    v1: {SDPA}(q, k, v, v0, scale=1.0, is_causal=False, enable_gqa=False)
    return (v1,)
""",
    ),
    (
        f"{GQA}  (Hugging Face repeat_kv, mask kept)",
        """
def f(q: f32[1,4,4,8], k: f32[1,2,4,8], v: f32[1,2,4,8], mask: f32[1,1,4,4]):
    v0: f32[1,2,1,4,8] = reshape(k, shape=(1, 2, 1, 4, 8))
    v1: f32[1,2,2,4,8] = expand(v0, shape=(1, 2, 2, 4, 8))
    v2: f32[1,4,4,8] = reshape(v1, shape=(1, 4, 4, 8))
    v3: f32[1,2,1,4,8] = reshape(v, shape=(1, 2, 1, 4, 8))
    v4: f32[1,2,2,4,8] = expand(v3, shape=(1, 2, 2, 4, 8))
    v5: f32[1,4,4,8] = reshape(v4, shape=(1, 4, 4, 8))
    v6: f32[1,4,4,8] = sdpa(q, v2, v5, mask, scale=0.25, is_causal=False, enable_gqa=False)
    return (v6,)
""",
        """
def f(q: f32[1,4,4,8], k: f32[1,2,4,8], v: f32[1,2,4,8], mask: f32[1,1,4,4]):
    v0: f32[1,4,4,8] = sdpa(q, k, v, mask, scale=0.25, is_causal=False, enable_gqa=True)
    return (v0,)
""",
    ),
    (
        f"{GQA}  (k's own reshape composed into repeat_kv's)",
        """
def f(q: f32[1,4,4,8], x: f32[2,32], v: f32[1,2,4,8]):
    v0: f32[1,2,1,4,8] = reshape(x, shape=(1, 2, 1, 4, 8))
    v1: f32[1,2,2,4,8] = expand(v0, shape=(1, 2, 2, 4, 8))
    v2: f32[1,4,4,8] = reshape(v1, shape=(1, 4, 4, 8))
    v3: f32[1,2,1,4,8] = reshape(v, shape=(1, 2, 1, 4, 8))
    v4: f32[1,2,2,4,8] = expand(v3, shape=(1, 2, 2, 4, 8))
    v5: f32[1,4,4,8] = reshape(v4, shape=(1, 4, 4, 8))
    v6: f32[1,4,4,8] = sdpa(q, v2, v5, scale=None, is_causal=True, enable_gqa=False)
    return (v6,)
""",
        """
def f(q: f32[1,4,4,8], x: f32[2,32], v: f32[1,2,4,8]):
    v0: f32[1,2,4,8] = reshape(x, shape=(1, 2, 4, 8))
    v1: f32[1,4,4,8] = sdpa(q, v0, v, scale=None, is_causal=True, enable_gqa=True)
    return (v1,)
""",
    ),
    (
        f"{CAUSAL}  (bool tril)",
        f"""
def f({QKV}):
    v0: bool[1,1,4,4] = constant(value=const([[[[True, False, False, False], [True, True, False, False], [True, True, True, False], [True, True, True, True]]]]), dtype=bool)
    v1: {SDPA}(q, k, v, v0, scale=0.25, is_causal=False, enable_gqa=False)
    return (v1,)
""",  # noqa: E501
        f"""
def f({QKV}):
    v0: {SDPA}(q, k, v, scale=0.25, is_causal=True, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{CAUSAL}  (float: 0 and finfo.min, over two batch rows)",
        """
def f(q: f32[2,1,2,8], k: f32[2,1,2,8], v: f32[2,1,2,8]):
    v0: f32[2,1,2,2] = constant(value=const([[[[0.0, -3.4028234663852886e+38], [0.0, 0.0]]], [[[0.0, -3.4028234663852886e+38], [0.0, 0.0]]]]), dtype=f32)
    v1: f32[2,1,2,8] = sdpa(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",  # noqa: E501
        """
def f(q: f32[2,1,2,8], k: f32[2,1,2,8], v: f32[2,1,2,8]):
    v0: f32[2,1,2,8] = sdpa(q, k, v, scale=None, is_causal=True, enable_gqa=False)
    return (v0,)
""",
    ),
    (
        f"{CAUSAL}  (float -inf, top-left aligned when L < S)",
        """
def f(q: f32[1,1,2,8], k: f32[1,1,4,8], v: f32[1,1,4,8]):
    v0: f32[2,4] = constant(value=const([[0.0, -1e999, -1e999, -1e999], [0.0, 0.0, -1e999, -1e999]]), dtype=f32)
    v1: f32[1,1,2,8] = sdpa(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",  # noqa: E501
        """
def f(q: f32[1,1,2,8], k: f32[1,1,4,8], v: f32[1,1,4,8]):
    v0: f32[1,1,2,8] = sdpa(q, k, v, scale=None, is_causal=True, enable_gqa=False)
    return (v0,)
""",
    ),
]

# (rule name + "  (why)", a graph the pass must leave alone)
DECLINED = [
    (
        f"{BOOL}  (masked_fill(~keep, -1e4): exact only for kept scores well above -1e4: kept)",
        f"""
def f({QKV}, keep: bool[1,1,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: bool[1,1,4,4] = logical_not(keep)
    v3: f32[()] = full(shape=(), value=-10000.0, dtype=f32)
    v4: f32[1,2,4,4] = where(v2, v3, v1)
    v5: f32[1,2,4,4] = softmax(v4, dim=-1)
    v6: f32[1,2,4,8] = matmul(v5, v)
    return (v6,)
""",
    ),
    (
        f"{CAUSAL}  (a -1e4 mask removes a key only for close scores: kept additive)",
        """
def f(q: bf16[1,1,2,8], k: bf16[1,1,2,8], v: bf16[1,1,2,8]):
    v0: bf16[2,2] = constant(value=const([[0.0, -9984.0], [0.0, 0.0]]), dtype=bf16)
    v1: bf16[1,1,2,8] = sdpa(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",
    ),
    (
        f"{ADDITIVE}  (rank 2: sdpa needs a head dim)",
        """
def f(q: f32[4,8], k: f32[4,8], v: f32[4,8]):
    v0: f32[8,4] = permute(k, dims=(1, 0))
    v1: f32[4,4] = matmul(q, v0)
    v2: f32[4,4] = softmax(v1, dim=1)
    v3: f32[4,8] = matmul(v2, v)
    return (v3,)
""",
    ),
    (
        f"{ADDITIVE}  (softmax over the query dim)",
        f"""
def f({QKV}):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,4,4] = softmax(v1, dim=2)
    v3: f32[1,2,4,8] = matmul(v2, v)
    return (v3,)
""",
    ),
    (
        f"{ADDITIVE}  (the permute does not transpose the head dim)",
        """
def f(q: f32[1,2,4,8], x: f32[1,8,2,4], v: f32[1,2,4,8]):
    v0: f32[1,2,8,4] = permute(x, dims=(0, 2, 1, 3))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,4,4] = softmax(v1, dim=-1)
    v3: f32[1,2,4,8] = matmul(v2, v)
    return (v3,)
""",
    ),
    (
        f"{ADDITIVE}  (no transpose at all)",
        """
def f(q: f32[1,2,4,8], kt: f32[1,2,8,4], v: f32[1,2,4,8]):
    v0: f32[1,2,4,4] = matmul(q, kt)
    v1: f32[1,2,4,4] = softmax(v0, dim=-1)
    v2: f32[1,2,4,8] = matmul(v1, v)
    return (v2,)
""",
    ),
    (
        f"{ADDITIVE}  (scale is a tensor input, not a constant)",
        f"""
def f({QKV}, s: f32[()]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,4,4] = mul(v1, s)
    v3: f32[1,2,4,4] = softmax(v2, dim=-1)
    v4: f32[1,2,4,8] = matmul(v3, v)
    return (v4,)
""",
    ),
    (
        f"{ADDITIVE}  (per-head scale is not a scalar)",
        f"""
def f({QKV}):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,1,1] = constant(value=const([[[[0.5]], [[0.25]]]]), dtype=f32)
    v3: f32[1,2,4,4] = mul(v1, v2)
    v4: f32[1,2,4,4] = softmax(v3, dim=-1)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
    ),
    (
        f"{ADDITIVE}  (c / scores is not a scale)",
        f"""
def f({QKV}):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=4.0, dtype=f32)
    v3: f32[1,2,4,4] = div(v2, v1)
    v4: f32[1,2,4,4] = softmax(v3, dim=-1)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
    ),
    (
        f"{ADDITIVE}  (mask added before the scale)",
        f"""
def f({QKV}, mask: f32[1,1,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,4,4] = add(v1, mask)
    v3: f32[()] = full(shape=(), value=0.125, dtype=f32)
    v4: f32[1,2,4,4] = mul(v2, v3)
    v5: f32[1,2,4,4] = softmax(v4, dim=-1)
    v6: f32[1,2,4,8] = matmul(v5, v)
    return (v6,)
""",
    ),
    (
        f"{ADDITIVE}  (the mask broadcasts the batch up: sdpa would type otherwise)",
        f"""
def f({QKV}, mask: f32[3,1,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[3,2,4,4] = add(v1, mask)
    v3: f32[3,2,4,4] = softmax(v2, dim=-1)
    v4: f32[3,2,4,8] = matmul(v3, v)
    return (v4,)
""",
    ),
    (
        f"{ADDITIVE}  (one key head broadcast over four query heads: sdpa's type rule refuses)",
        """
def f(q: f32[1,4,4,8], k: f32[1,1,4,8], v: f32[1,1,4,8]):
    v0: f32[1,1,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,4,4,4] = matmul(q, v0)
    v2: f32[1,4,4,4] = softmax(v1, dim=-1)
    v3: f32[1,4,4,8] = matmul(v2, v)
    return (v3,)
""",
    ),
    (
        f"{ADDITIVE}  (softmax computed in a narrower float)",
        """
def f(q: f32[1,2,4,8], k: f32[1,2,4,8], v: f32[1,2,4,8]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: bf16[1,2,4,4] = cast(v1, dtype=bf16)
    v3: bf16[1,2,4,4] = softmax(v2, dim=-1)
    v4: f32[1,2,4,4] = cast(v3, dtype=f32)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
    ),
    (
        f"{BOOL}  (fill -100 does not remove a key)",
        f"""
def f({QKV}, keep: bool[1,1,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[()] = full(shape=(), value=-100.0, dtype=f32)
    v3: f32[1,2,4,4] = where(keep, v1, v2)
    v4: f32[1,2,4,4] = softmax(v3, dim=-1)
    v5: f32[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
    ),
    (
        f"{BOOL}  (fill is a tensor)",
        f"""
def f({QKV}, keep: bool[1,1,4,4], other: f32[1,2,4,4]):
    v0: f32[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: f32[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,4,4] = where(keep, v1, other)
    v3: f32[1,2,4,4] = softmax(v2, dim=-1)
    v4: f32[1,2,4,8] = matmul(v3, v)
    return (v4,)
""",
    ),
    (
        f"{GQA}  (expand over the outer dim: repeat, not repeat_interleave)",
        """
def f(q: f32[1,4,4,8], k: f32[1,2,4,8], v: f32[1,2,4,8]):
    v0: f32[1,1,2,4,8] = reshape(k, shape=(1, 1, 2, 4, 8))
    v1: f32[1,2,2,4,8] = expand(v0, shape=(1, 2, 2, 4, 8))
    v2: f32[1,4,4,8] = reshape(v1, shape=(1, 4, 4, 8))
    v3: f32[1,1,2,4,8] = reshape(v, shape=(1, 1, 2, 4, 8))
    v4: f32[1,2,2,4,8] = expand(v3, shape=(1, 2, 2, 4, 8))
    v5: f32[1,4,4,8] = reshape(v4, shape=(1, 4, 4, 8))
    v6: f32[1,4,4,8] = sdpa(q, v2, v5, scale=None, is_causal=False, enable_gqa=False)
    return (v6,)
""",
    ),
    (
        f"{GQA}  (k and v repeated differently)",
        """
def f(q: f32[1,4,4,8], k: f32[1,2,4,8], v: f32[1,1,4,8]):
    v0: f32[1,2,1,4,8] = reshape(k, shape=(1, 2, 1, 4, 8))
    v1: f32[1,2,2,4,8] = expand(v0, shape=(1, 2, 2, 4, 8))
    v2: f32[1,4,4,8] = reshape(v1, shape=(1, 4, 4, 8))
    v3: f32[1,1,1,4,8] = reshape(v, shape=(1, 1, 1, 4, 8))
    v4: f32[1,1,4,4,8] = expand(v3, shape=(1, 1, 4, 4, 8))
    v5: f32[1,4,4,8] = reshape(v4, shape=(1, 4, 4, 8))
    v6: f32[1,4,4,8] = sdpa(q, v2, v5, scale=None, is_causal=False, enable_gqa=False)
    return (v6,)
""",
    ),
    (
        f"{GQA}  (only k is repeated)",
        """
def f(q: f32[1,4,4,8], k: f32[1,2,4,8], v: f32[1,4,4,8]):
    v0: f32[1,2,1,4,8] = reshape(k, shape=(1, 2, 1, 4, 8))
    v1: f32[1,2,2,4,8] = expand(v0, shape=(1, 2, 2, 4, 8))
    v2: f32[1,4,4,8] = reshape(v1, shape=(1, 4, 4, 8))
    v3: f32[1,4,4,8] = sdpa(q, v2, v, scale=None, is_causal=False, enable_gqa=False)
    return (v3,)
""",
    ),
    (
        f"{CAUSAL}  (a padding mask)",
        f"""
def f({QKV}):
    v0: bool[1,4] = constant(value=const([[True, True, True, False]]), dtype=bool)
    v1: {SDPA}(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",
    ),
    (
        f"{CAUSAL}  (a sliding window of 2)",
        f"""
def f({QKV}):
    v0: bool[4,4] = constant(value=const([[True, False, False, False], [True, True, False, False], [False, True, True, False], [False, False, True, True]]), dtype=bool)
    v1: {SDPA}(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",  # noqa: E501
    ),
    (
        f"{CAUSAL}  (bottom-right aligned, L < S)",
        """
def f(q: f32[1,1,2,8], k: f32[1,1,4,8], v: f32[1,1,4,8]):
    v0: bool[2,4] = constant(value=const([[True, True, True, False], [True, True, True, True]]), dtype=bool)
    v1: f32[1,1,2,8] = sdpa(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",  # noqa: E501
    ),
    (
        f"{CAUSAL}  (batch rows differ: the second also pads)",
        """
def f(q: f32[2,1,2,8], k: f32[2,1,2,8], v: f32[2,1,2,8]):
    v0: bool[2,1,2,2] = constant(value=const([[[[True, False], [True, True]]], [[[True, False], [True, False]]]]), dtype=bool)
    v1: f32[2,1,2,8] = sdpa(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",  # noqa: E501
    ),
    (
        f"{CAUSAL}  (float mask -100 above the diagonal)",
        """
def f(q: f32[1,1,2,8], k: f32[1,1,2,8], v: f32[1,1,2,8]):
    v0: f32[2,2] = constant(value=const([[0.0, -100.0], [0.0, 0.0]]), dtype=f32)
    v1: f32[1,1,2,8] = sdpa(q, k, v, v0, scale=None, is_causal=False, enable_gqa=False)
    return (v1,)
""",
    ),
    (
        f"{CAUSAL}  (the mask is an input, not a constant)",
        f"""
def f({QKV}, keep: bool[4,4]):
    v0: {SDPA}(q, k, v, keep, scale=None, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    ),
]


def _rule(case: str) -> str:
    return case.split("  (")[0]


@pytest.mark.parametrize(("case", "before", "after"), POSITIVE, ids=[p[0] for p in POSITIVE])
def test_rule_fires(case: str, before: str, after: str) -> None:
    assert_ir(recognize(before), after)


@pytest.mark.parametrize(("case", "before"), DECLINED, ids=[d[0] for d in DECLINED])
def test_rule_declines(case: str, before: str) -> None:
    g = ir(before)
    assert recognize_attention(g) is g  # untouched: the very same object


def test_every_rule_has_a_positive_and_a_declined_case() -> None:
    names = {r.name for r in ATTENTION_RULES}
    assert names == {_rule(p[0]) for p in POSITIVE}
    assert names == {_rule(d[0]) for d in DECLINED}


def test_bf16_softmax_in_f32_casts() -> None:
    """`softmax(x, dim=-1, dtype=torch.float32).to(bf16)`; sdpa skips the rounding of the
    weights to bf16, so the two agree to bf16 precision, not exactly."""
    after = recognize(
        """
def f(q: bf16[1,2,4,8], k: bf16[1,2,4,8], v: bf16[1,2,4,8]):
    v0: bf16[1,2,8,4] = permute(k, dims=(0, 1, 3, 2))
    v1: bf16[1,2,4,4] = matmul(q, v0)
    v2: f32[1,2,4,4] = cast(v1, dtype=f32)
    v3: f32[1,2,4,4] = softmax(v2, dim=-1)
    v4: bf16[1,2,4,4] = cast(v3, dtype=bf16)
    v5: bf16[1,2,4,8] = matmul(v4, v)
    return (v5,)
""",
        tol=1e-2,
    )
    assert_ir(
        after,
        """
def f(q: bf16[1,2,4,8], k: bf16[1,2,4,8], v: bf16[1,2,4,8]):
    v0: bf16[1,2,4,8] = sdpa(q, k, v, scale=1.0, is_causal=False, enable_gqa=False)
    return (v0,)
""",
    )


def test_all_rules_chain_on_eager_llama_attention() -> None:
    """Hand-written GQA attention with a folded causal mask: rules 1, 3 and 4 in turn."""
    after = recognize("""
def f(q: f32[1,4,2,8], k: f32[1,2,2,8], v: f32[1,2,2,8]):
    v0: f32[1,2,1,2,8] = reshape(k, shape=(1, 2, 1, 2, 8))
    v1: f32[1,2,2,2,8] = expand(v0, shape=(1, 2, 2, 2, 8))
    v2: f32[1,4,2,8] = reshape(v1, shape=(1, 4, 2, 8))
    v3: f32[1,2,1,2,8] = reshape(v, shape=(1, 2, 1, 2, 8))
    v4: f32[1,2,2,2,8] = expand(v3, shape=(1, 2, 2, 2, 8))
    v5: f32[1,4,2,8] = reshape(v4, shape=(1, 4, 2, 8))
    v6: f32[1,4,8,2] = permute(v2, dims=(0, 1, 3, 2))
    v7: f32[1,4,2,2] = matmul(q, v6)
    v8: f32[()] = full(shape=(), value=0.35355339059327373, dtype=f32)
    v9: f32[1,4,2,2] = mul(v7, v8)
    v10: f32[1,1,2,2] = constant(value=const([[[[0.0, -3.4028234663852886e+38], [0.0, 0.0]]]]), dtype=f32)
    v11: f32[1,4,2,2] = add(v9, v10)
    v12: f32[1,4,2,2] = softmax(v11, dim=3)
    v13: f32[1,4,2,8] = matmul(v12, v5)
    return (v13,)
""")  # noqa: E501
    assert_ir(
        after,
        """
def f(q: f32[1,4,2,8], k: f32[1,2,2,8], v: f32[1,2,2,8]):
    v0: f32[1,4,2,8] = sdpa(q, k, v, scale=0.35355339059327373, is_causal=True, enable_gqa=True)
    return (v0,)
""",
    )


def test_no_attention_returns_the_same_graph() -> None:
    g = ir("""
def f(x: f32[2,3], w: f32[3,4]):
    v0: f32[2,4] = matmul(x, w)
    v1: f32[2,4] = softmax(v0, dim=-1)
    return (v1,)
""")
    assert recognize_attention(g) is g


def test_does_not_mutate_its_input() -> None:
    g = ir(POSITIVE[0][1])
    text = str(g)
    recognize_attention(g)
    assert str(g) == text


# ----------------------------------------------------------------------------- end to end


def compile_attention(
    model: Callable[..., Any], args: tuple[Any, ...]
) -> tuple[Graph, Callable[[], tuple[np.ndarray, ...]]]:
    """Capture, run the pipeline plus this pass; the graph and a thunk running it in NumPy."""
    captured = capture(model, args)
    g = run_pipeline(captured.graph, [*PIPELINE, recognize_attention, eliminate_dead_code])
    module = captured.module
    inputs = []
    for b in captured.bindings:
        if b.kind == "user":
            t = args[b.key]
        else:
            get = module.get_parameter if b.kind == "parameter" else module.get_buffer
            t = get(b.key)
        inputs.append(t.detach().float().numpy() if t.is_floating_point() else t.numpy())
    fn = render(g).load()
    return g, lambda: fn(*inputs)


def assert_matches_eager(model: Callable[..., Any], args: tuple[Any, ...]) -> Graph:
    g, run_numpy = compile_attention(model, args)
    with torch.no_grad():
        out = model(*args)
    want = out if isinstance(out, torch.Tensor) else out[0]
    np.testing.assert_allclose(run_numpy()[0], want.numpy(), rtol=1e-4, atol=1e-5)
    return g


def sdpa_nodes(g: Graph) -> list[Any]:
    return [n for n in g.nodes if n.op == "sdpa"]


def test_hand_written_attention_function() -> None:
    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> Any:
        d = q.shape[-1]
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, -1) @ v

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 8, generator=gen) for _ in range(3))
    mask = torch.randn(1, 1, 4, 4, generator=gen)
    g = assert_matches_eager(attention, (q, k, v, mask))
    ops = g.op_counts()
    assert ops.get("sdpa") == 1 and "softmax" not in ops and "matmul" not in ops
    assert len(sdpa_nodes(g)[0].inputs) == 4  # the (non-constant) mask stays


def test_diffusers_classic_attn_processor() -> None:
    """diffusers' AttnProcessor: baddbmm(beta=0) scores over [batch*heads, L, D], a rank-3 sdpa."""
    from diffusers.models.attention_processor import Attention, AttnProcessor

    torch.manual_seed(0)
    model = Attention(query_dim=32, heads=2, dim_head=16, processor=AttnProcessor()).eval()
    g = assert_matches_eager(model, (torch.randn(1, 6, 32),))
    ops = g.op_counts()
    assert ops.get("sdpa") == 1 and "softmax" not in ops
    assert [n.type.rank for n in sdpa_nodes(g)] == [3]


def _hf_model(kind: str, attn: str | None) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2Model, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    kw: dict[str, Any] = {"use_cache": False}
    if attn is not None:
        kw["attn_implementation"] = attn
    if kind == "llama":
        cfg = LlamaConfig(
            num_hidden_layers=1,
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            vocab_size=100,
            max_position_embeddings=32,
            **kw,
        )
        return LlamaModel(cfg).eval()
    cfg = GPT2Config(
        n_layer=1,
        n_embd=64,
        n_head=4,
        n_positions=32,
        vocab_size=100,
        bos_token_id=0,
        eos_token_id=0,
        **kw,
    )
    return GPT2Model(cfg).eval()


@pytest.mark.parametrize("attn", [None, "eager"], ids=["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_hugging_face_attention_becomes_causal_sdpa(kind: str, attn: str | None) -> None:
    model = _hf_model(kind, attn)
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(1))
    g = assert_matches_eager(model, (ids,))
    nodes = sdpa_nodes(g)
    assert len(nodes) == 1 and "softmax" not in g.op_counts()
    for n in nodes:
        assert n.attr("is_causal") and len(n.inputs) == 3, n
        assert n.attr("enable_gqa") == (kind == "llama"), n
    assert "expand" not in g.op_counts()
