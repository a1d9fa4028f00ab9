"""index_map: chains of view ops as strided index arithmetic over a contiguous buffer."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.core.schedule import index_map
from compiler.core.types import DType, TensorType
from tests.helpers import ir


def _chain(text: str) -> tuple[list, TensorType, np.ndarray]:
    g = ir(text)
    src = g.inputs[0].type
    x = np.arange(int(np.prod(src.shape)), dtype=np.float32).reshape(src.shape)
    # the same chain evaluated with NumPy view ops
    env = {g.inputs[0].name: x}
    for n in g.nodes:
        a = env[n.inputs[0]]
        if n.op == "permute":
            env[n.out.name] = np.transpose(a, n.attr("dims"))
        elif n.op == "reshape":
            env[n.out.name] = np.reshape(a, n.attr("shape"))
        elif n.op == "expand":
            env[n.out.name] = np.broadcast_to(a, n.attr("shape"))
        else:
            idx = [slice(None)] * a.ndim
            idx[n.attr("dim")] = slice(n.attr("start"), n.attr("end"), n.attr("step"))
            env[n.out.name] = a[tuple(idx)]
    return list(g.nodes), src, env[g.outputs[0]]


CHAINS = {
    "attention-heads": """
def f(x: f32[2,8,96]):
    v0: f32[2,8,32] = slice(x, dim=2, start=32, end=64, step=1)
    v1: f32[2,8,4,8] = reshape(v0, shape=(2, 8, 4, 8))
    v2: f32[2,4,8,8] = permute(v1, dims=(0, 2, 1, 3))
    return (v2,)
""",
    "broadcast-bias": """
def f(x: f32[16]):
    v0: f32[1,16] = reshape(x, shape=(1, 16))
    v1: f32[4,3,16] = expand(v0, shape=(4, 3, 16))
    return (v1,)
""",
    "strided-slice": """
def f(x: f32[6,10]):
    v0: f32[6,4] = slice(x, dim=1, start=1, end=9, step=2)
    v1: f32[4,6] = permute(v0, dims=(1, 0))
    return (v1,)
""",
    "gqa-repeat": """
def f(x: f32[1,2,5,4]):
    v0: f32[1,2,1,5,4] = reshape(x, shape=(1, 2, 1, 5, 4))
    v1: f32[1,2,3,5,4] = expand(v0, shape=(1, 2, 3, 5, 4))
    return (v1,)
""",
}


@pytest.mark.parametrize("name", list(CHAINS))
def test_index_map_matches_numpy_views(name: str) -> None:
    chain, src, want = _chain(CHAINS[name])
    mapped = index_map(chain, src)
    assert mapped is not None
    shape, strides, offset = mapped
    flat = np.arange(int(np.prod(src.shape)), dtype=np.float32)
    got = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=shape, strides=[s * flat.itemsize for s in strides]
    )
    np.testing.assert_array_equal(got, want)


def test_reshape_of_a_permuted_view_needs_a_copy() -> None:
    chain, src, _ = _chain("""
def f(x: f32[2,3,4]):
    v0: f32[3,2,4] = permute(x, dims=(1, 0, 2))
    v1: f32[6,4] = reshape(v0, shape=(6, 4))
    return (v1,)
""")
    assert index_map(chain, src) is None
    assert index_map(chain[:1], TensorType((2, 3, 4), DType.f32)) is not None
