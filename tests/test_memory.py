"""plan_memory: the one planner, placing what each program's storage policy requests in one
arena by liveness; what the generated code allocates, never above eager."""

from __future__ import annotations

import itertools
import random
import re

import pytest

import compiler
from backends.numpy.kernels import memory_request
from passes.fusion import fuse_kernels
from passes.memory import (
    MemoryRequest,
    eager_peak_bytes,
    output_roots,
    plan_memory,
    stored_in,
)
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


def test_docstring_example_chain_shares_memory_between_dead_and_new_values() -> None:
    s = fuse_kernels(ir(CHAIN))
    arena = plan_memory(s, stored_in(s))
    assert arena.offsets == {"v0": 0, "v1": 128, "v2": 0}  # v3 is the output
    assert arena.size == 256


def test_outputs_and_their_views_are_never_planned() -> None:
    s = fuse_kernels(
        ir("""
def f(x: f32[4,8], w: f32[8,8]):
    v0: f32[4,8] = matmul(x, w)
    v1: f32[32] = reshape(v0, shape=(32,))
    v2: f32[4,8] = matmul(v0, w)
    v3: f32[4,8] = matmul(v2, w)
    return (v1, v3)
""")
    )
    assert "v0" not in plan_memory(s, stored_in(s)).offsets


def test_a_larger_value_takes_the_memory_of_smaller_dead_ones() -> None:
    s = fuse_kernels(
        ir("""
def f(x: f32[4,8], w: f32[8,8], u: f32[8,64]):
    v0: f32[4,8] = matmul(x, w)
    v1: f32[4,8] = matmul(v0, w)
    v2: f32[4,64] = matmul(v1, u)
    v3: f32[4,64] = layer_norm(v2, normalized_shape=(64,), eps=1e-05)
    return (v3,)
""")
    )
    arena = plan_memory(s, stored_in(s))
    # v2 (1 KiB) is written while v1 is read, v0 is dead: the arena is v1 and v2, side by side
    assert arena.size == 4 * 64 * 4 + 128, arena


def test_a_request_must_name_exactly_the_planned_values() -> None:
    s = fuse_kernels(ir(CHAIN))
    with pytest.raises(ValueError, match="missing"):
        plan_memory(s, MemoryRequest((("v0", 128),)))


def test_eager_peak_counts_live_intermediates() -> None:
    g = ir(CHAIN)
    assert eager_peak_bytes(g) == 2 * 4 * 8 * 4  # a matmul's input and output are both live


@pytest.mark.parametrize("name", list(CASES))
def test_plan_is_within_eager_peak_and_is_what_the_code_allocates(name: str) -> None:
    model, inputs = CASES[name][0]()
    c = compiler.compile(model, inputs, backend="numpy")
    assert c.stats["planned_bytes"] <= c.stats["eager_peak_bytes"], c.stats
    arena = plan_memory(c.schedule, memory_request(c.schedule, "float32"))
    assert arena.size == c.stats["planned_bytes"]
    source = c.source("numpy")
    allocated = re.findall(r"arena = np.empty\((\d+), dtype=np.uint8\)", source)
    assert allocated == ([str(arena.size)] if arena.blocks else [])
    for name, offset in arena.offsets.items():
        assert f"_at(arena, {offset}, " in source, name


ARENA = """
def f(x: f32[32,32], w: f32[32,8], u: f32[8,8]):
    a: f32[32,32] = matmul(x, x)
    b: f32[32,8] = matmul(a, w)
    c: f32[32,8] = matmul(b, u)
    return (c,)
"""


def test_docstring_example_arena_overlaps_a_value_and_later_scratch() -> None:
    s = fuse_kernels(ir(ARENA))  # k0 writes a (4 KiB), k1 b (1 KiB), k2 the output
    assert [k.outputs for k in s.kernels] == [("a",), ("b",), ("c",)]
    scratch = {2: [("scratch", 4096)]}
    arena = plan_memory(s, MemoryRequest.of(s, lambda _, t: t.nbytes, scratch))
    assert arena.offsets == {"a": 0, "scratch": 0, "b": 4096}
    assert arena.size == 5 * 1024
    # k1 and k2 interleaved (row blocks): a, b and k2's scratch all live through both
    request = MemoryRequest.of(s, lambda _, t: t.nbytes, scratch, together=[range(1, 3)])
    assert plan_memory(s, request).offsets == {"a": 0, "scratch": 4096, "b": 8192}


def _live_at(lifetimes: dict[str, tuple[int, int]], i: int) -> set[str]:
    return {name for name, (first, last) in lifetimes.items() if first <= i <= last}


@pytest.mark.parametrize("name", list(CASES))
def test_arena_never_overlaps_what_one_kernel_needs_at_once(name: str) -> None:
    model, inputs = CASES[name][0]()
    s = compiler.compile(model, inputs, backend="numpy").schedule
    rng = random.Random(name)
    scratch = {i: [(f"s{i}.{j}", rng.randrange(1, 5000)) for j in range(rng.randrange(3))]
               for i in range(len(s.kernels))}  # fmt: skip
    nbytes = {o: k.type_of(o).nbytes for k in s.kernels for o in k.outputs}
    arena = plan_memory(s, MemoryRequest.of(s, lambda o, t: t.nbytes, scratch))
    last = {v.name: i for i, k in enumerate(s.kernels) for v in k.inputs}
    lifetimes: dict[str, tuple[int, int]] = {}
    sizes: dict[str, int] = {}
    for i, k in enumerate(s.kernels):
        for o in k.outputs:
            if o in arena.offsets:
                lifetimes[o], sizes[o] = (i, max(i, last.get(o, i))), max(nbytes[o], 1)
        for block, size in scratch[i]:
            lifetimes[block], sizes[block] = (i, i), size
    assert set(lifetimes) == set(arena.offsets)  # every planned value and block, once
    assert len(arena.blocks) == len(arena.offsets)
    assert not set(lifetimes) & output_roots(s.graph)
    peak = 0
    for i in range(len(s.kernels)):
        live = sorted(
            (arena.offset_of(b), arena.offset_of(b) + sizes[b]) for b in _live_at(lifetimes, i)
        )
        assert all(end <= start for (_, end), (start, _) in itertools.pairwise(live)), (i, live)
        peak = max(peak, sum(e - o for o, e in live))
    assert all(offset % 64 == 0 for offset in arena.offsets.values())
    assert peak <= arena.size <= sum(-(-size // 64) * 64 for size in sizes.values())
    assert max((o + sizes[b] for b, o in arena.offsets.items()), default=0) == arena.size
