"""fuse_kernels: the docstring example, kernel budgets per block on every example and Hugging
Face model, horizontal GEMMs, refusals with reasons, and the schedule's invariants."""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

import pytest
import torch

import compiler
from compiler.core.schedule import KernelSpec, Schedule
from examples import dit, gpt2, llama, unet
from passes.fusion import fuse_kernels
from tests.helpers import ir
from tests.test_models import hf_gpt2, hf_llama


def test_docstring_example() -> None:
    s = fuse_kernels(
        ir("""
def f(x: f32[4,8], w: f32[8,16], b: f32[16]):
    v0: f32[4,16] = matmul(x, w)
    v1: f32[4,16] = add(v0, b)
    v2: f32[4,16] = gelu(v1, approximate='tanh')
    v3: f32[4,16] = layer_norm(v2, normalized_shape=(16,), eps=1e-05)
    return (v3,)
""")
    )
    assert [(k.name, k.kind) for k in s] == [
        ("k0_fused_matmul_add_gelu", "matmul"),
        ("k1_layer_norm", "reduction"),
    ]
    assert [v.name for v in s.kernels[0].inputs] == ["x", "w", "b"]
    assert s.kernels[0].outputs == ("v2",) and s.kernels[1].reduction_axes == (1,)


def test_pointwise_chain_with_views_is_one_kernel() -> None:
    s = fuse_kernels(
        ir("""
def f(x: f32[4,8], y: f32[8,4]):
    v0: f32[8,4] = permute(x, dims=(1, 0))
    v1: f32[8,4] = add(v0, y)
    v2: f32[8,4] = exp(v1)
    v3: f32[32] = reshape(v2, shape=(32,))
    v4: f32[32] = neg(v3)
    return (v4,)
""")
    )
    assert len(s) == 1 and s.kernels[0].kind == "pointwise"
    assert [n.op for n in s.kernels[0].body] == ["permute", "add", "exp", "reshape", "neg"]


def test_refusals_are_logged_with_reasons(caplog: pytest.LogCaptureFixture) -> None:
    g = ir("""
def f(x: f32[4,8], w: f32[8,8]):
    v0: f32[4,8] = matmul(x, w)
    v1: f32[4,8] = matmul(v0, w)
    return (v1,)
""")
    with caplog.at_level(logging.DEBUG, logger="tilefuse.fusion"):
        s = fuse_kernels(g)
    assert len(s) == 2
    assert any("two anchors (matmul and matmul)" in r for r in s.refusals)
    assert any("cannot fuse" in m for m in caplog.messages)


def test_a_merge_that_would_make_a_cycle_is_refused() -> None:
    # v2 reads v0 directly and through the matmul: putting v0 and v2 together would need the
    # matmul both before and after that kernel.
    s = fuse_kernels(
        ir("""
def f(x: f32[4,4], w: f32[4,4]):
    v0: f32[4,4] = exp(x)
    v1: f32[4,4] = matmul(v0, w)
    v2: f32[4,4] = add(v0, v1)
    v3: f32[4,4] = layer_norm(v2, normalized_shape=(4,), eps=1e-05)
    return (v3, v0)
""")
    )
    order = {o: i for i, k in enumerate(s) for o in k.outputs}
    for i, k in enumerate(s):  # every kernel reads only what earlier kernels wrote
        assert all(order.get(v.name, -1) < i for v in k.inputs), str(s)


# ----------------------------------------------------------------------------- budgets

BLOCK = re.compile(r"^((?:h|layers|blocks|resnets|transformer_blocks)\.\d+)\b")


def kernels_per_block(c: compiler.Compiled) -> Counter[str]:
    """Kernels attributed to the block of their first anchor (or first node)."""
    producers = c.graph.producers()
    counts: Counter[str] = Counter()
    for k in c.kernels:
        first = k.anchors[0] if k.anchors else k.body[-1].out.name
        m = BLOCK.match(producers[first].source)
        if m:
            counts[m.group(1)] += 1
    return counts


CASES: dict[str, tuple[Any, str, int]] = {
    # name: (builder, block prefix, kernels-per-block budget)
    "gpt2": (lambda: gpt2.build(seq=16, hidden=64, heads=4, layers=2), "h.", 7),
    "llama": (
        lambda: llama.build(seq=16, hidden=64, heads=4, layers=2, intermediate=128),
        "layers.",
        8,
    ),
    "hf_gpt2": (lambda: hf_gpt2(torch.float32), "h.", 7),
    "hf_llama": (lambda: hf_llama(torch.float32), "layers.", 8),
    "unet_resnet": (
        lambda: unet.build(
            size=8, channels=32, groups=8, heads=2, context_len=4, context_dim=24, temb_dim=64
        ),
        "resnets.",
        5,
    ),
    "dit": (lambda: dit.build(size=8, hidden=32, heads=2, depth=2), "blocks.", 9),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernels_per_block_within_budget(name: str) -> None:
    build, prefix, budget = CASES[name]
    model, inputs = build()
    report = compiler.check_parity(model, inputs)
    assert report.ok, f"\n{report}"
    counts = {b: n for b, n in kernels_per_block(report.compiled).items() if b.startswith(prefix)}
    assert counts, "no kernel was attributed to a block"
    assert max(counts.values()) <= budget, f"{counts}\n{report.compiled.schedule}"


def test_llama_gemms_share_kernels() -> None:
    model, inputs = CASES["hf_llama"][0]()
    c = compiler.compile(model, inputs, backend="numpy")
    names = [k.name for k in c.kernels]
    assert sum("matmul_x3" in n for n in names) == 2  # q, k, v per layer
    assert sum("matmul_x2_swiglu" in n for n in names) == 2  # gate, up + the SwiGLU epilogue
    assert sum("sdpa_rope" in n for n in names) == 2  # RoPE in the attention prologue


# ----------------------------------------------------------------------------- invariants


def single_reader_edges(s: Schedule) -> list[tuple[KernelSpec, KernelSpec, str]]:
    readers: dict[str, list[KernelSpec]] = {}
    for k in s:
        for v in k.inputs:
            readers.setdefault(v.name, []).append(k)
    producer = s.producer_kernel()
    return [
        (producer[v], ks[0], v)
        for v, ks in readers.items()
        if len(ks) == 1 and v in producer and v not in s.graph.outputs
    ]


@pytest.mark.parametrize("name", list(CASES))
def test_no_pointwise_kernel_writes_for_a_single_reader(name: str) -> None:
    """An intermediate read by exactly one other kernel is written only where two anchors
    (GEMM, conv, attention, reduction) meet: pointwise work always fuses into a neighbour."""
    model, inputs = CASES[name][0]()
    s = compiler.compile(model, inputs, backend="numpy").schedule
    bad = [
        (a.name, b.name, v)
        for a, b, v in single_reader_edges(s)
        if a.kind == "pointwise" or b.kind == "pointwise"
    ]
    assert not bad, f"{bad}\n{s}"


@pytest.mark.parametrize("name", ["hf_llama", "unet_resnet", "dit"])
def test_every_kernel_matches_the_reference(name: str) -> None:
    """Kernel by kernel against the unfused graph-level reference, not only end to end."""
    from compiler.bisect import bisect_kernels

    model, inputs = CASES[name][0]()
    c = compiler.compile(model, inputs, backend="numpy")
    assert bisect_kernels(c, inputs, {}, "numpy") is None
