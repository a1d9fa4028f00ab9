"""The four examples at reduced size with every kernel in Triton (pointwise, reductions,
matmul, conv2d and attention; no torch fallback), run under the Triton interpreter:
`compiler.compile(model, args, backend="triton")`, then `c(*args)` against eager by the
parity rule, and the kernel kinds each example renders.

Sizes are the smallest that keep every fusion pattern of the example (two layers, several
heads, GQA, cross-attention, GEGLU, adaLN): the interpreter runs each program serially in
NumPy, so the default sizes would take minutes.
Repro: pytest tests/test_triton_models.py -k "llama and bfloat16"
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch

import compiler
from compiler.parity_rule import compare, output_leaves, reference_f64
from examples import dit, gpt2, llama, unet

MODELS: dict[str, Callable[[torch.dtype], tuple[torch.nn.Module, tuple[Any, ...]]]] = {
    "gpt2": lambda d: gpt2.build(seq=16, hidden=64, heads=4, layers=2, dtype=d),
    "llama": lambda d: llama.build(
        seq=16, hidden=64, heads=4, kv_heads=2, layers=2, intermediate=128, dtype=d
    ),
    "unet": lambda d: unet.build(
        size=8, channels=32, groups=4, heads=2, context_len=4, context_dim=32, temb_dim=64, dtype=d
    ),
    "dit": lambda d: dit.build(size=8, hidden=64, heads=2, depth=2, num_classes=10, dtype=d),
}
# heavy kernels per example at these sizes (the rest are pointwise and reduction kernels)
HEAVY = {
    "gpt2": {"matmul": 8, "attention": 2},
    "llama": {"matmul": 8, "attention": 2},
    "unet": {"matmul": 12, "attention": 2, "conv2d": 4},
    "dit": {"matmul": 14, "attention": 2, "conv2d": 1},
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_example_in_triton_under_the_interpreter(name: str, dtype: torch.dtype) -> None:
    model, inputs = MODELS[name](dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the interpreter notice
        c = compiler.compile(model, inputs, backend="triton")
        out = c(*inputs)
    kinds = Counter(k.kind for k in c.kernels)
    assert {k: kinds[k] for k in ("matmul", "attention", "conv2d") if kinds[k]} == HEAVY[name]
    source = c.source("triton")
    for k in c.kernels:
        assert f"@triton.jit\ndef {k.name}(" in source
    assert "torch.nn.functional" not in source and "torch.matmul" not in source
    with torch.no_grad():
        eager = model(*inputs)
    ref = reference_f64(model, inputs, {})
    rows = [
        compare(path, "triton", o, e, r)
        for (path, e), (_, r), (_, o) in zip(
            output_leaves(eager), output_leaves(ref), output_leaves(out), strict=True
        )
    ]
    assert all(row.ok for row in rows), "\n".join(map(str, rows))
