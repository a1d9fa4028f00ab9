"""Size-0 and size-1 dimensions: the compiled model answers as eager does on every backend, or
(Triton, where a kernel would have to read a size-0 dimension) refuses with an error saying so;
it never crashes inside the compiler."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import compiler
from backends.triton.ops import TritonUnsupportedError


def _t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(len(shape)))


ids = torch.zeros(0, dtype=torch.long)
CASES: dict[str, tuple[Callable[..., Any], tuple[torch.Tensor, ...]]] = {
    "add, empty rows": (lambda x: x + 1, (_t(0, 4),)),
    "sum over an empty dim": (lambda x: x.sum(0), (_t(0, 4),)),
    "sum, empty rows": (lambda x: x.sum(1), (_t(0, 4),)),
    "softmax of empty rows": (lambda x: torch.softmax(x, -1), (_t(3, 0),)),
    "softmax, no rows": (lambda x: torch.softmax(x, -1), (_t(0, 3),)),
    "layer_norm, no rows": (lambda x: F.layer_norm(x, (4,)), (_t(0, 4),)),
    "mean over an empty dim": (lambda x: x.mean(-1), (_t(3, 0),)),
    "amax, no rows": (lambda x: x.amax(-1), (_t(0, 3),)),
    "matmul, K = 0": (lambda a, b: a @ b, (_t(3, 0), _t(0, 5))),
    "matmul, M = 0": (lambda a, b: a @ b, (_t(0, 4), _t(4, 5))),
    "cat with an empty piece": (lambda a, b: torch.cat([a, b], 0), (_t(0, 4), _t(2, 4))),
    "embedding of no ids": (lambda w, i: F.embedding(i, w), (_t(5, 4), ids)),
    "cumsum, no rows": (lambda x: x.cumsum(0), (_t(0, 4),)),
    "conv2d, empty batch": (lambda x, w: F.conv2d(x, w), (_t(0, 3, 8, 8), _t(4, 3, 3, 3))),
    "attention, no queries": (
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v),
        (_t(1, 2, 0, 8), _t(1, 2, 5, 8), _t(1, 2, 5, 8)),
    ),
    "group_norm, empty batch": (lambda x: F.group_norm(x, 2), (_t(0, 4, 3, 3),)),
    "softmax of one element": (lambda x: torch.softmax(x, -1), (_t(1, 1),)),
    "matmul, 1 x 1 x 1": (lambda a, b: a @ b + 1, (_t(1, 1), _t(1, 1))),
    "layer_norm of one": (lambda x: F.layer_norm(x, (1,)), (_t(3, 1),)),
    "layer_norm, one row": (lambda x: F.layer_norm(x, (8,)), (_t(1, 8),)),
    "softmax, one row of a 3-d": (lambda x: torch.softmax(x * 2, -1), (_t(1, 1, 8),)),
    "group_norm, one sample": (lambda x: F.group_norm(x, 2), (_t(1, 4, 3, 3),)),
}
# a Triton kernel that must read a size-0 dimension to fill a non-empty output: refused
TRITON_REFUSES = {"sum over an empty dim", "mean over an empty dim"}


@pytest.mark.parametrize("backend", ["numpy", "llvm", "triton"])
@pytest.mark.parametrize("name", list(CASES))
def test_empty_and_unit_dims_answer_as_eager(name: str, backend: str) -> None:
    fn, args = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy: the mean of nothing
        want = fn(*args)
        if backend == "triton" and name in TRITON_REFUSES:
            with pytest.raises(TritonUnsupportedError, match=r"from the empty tensor .*size-0"):
                compiler.compile(fn, args, backend=backend)
            return
        got = compiler.compile(fn, args, backend=backend)(*args)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("name", list(CASES))
def test_empty_dims_tile_and_price_for_a_gpu(name: str) -> None:
    fn, args = CASES[name]
    c = compiler.compile(fn, args, backend="numpy", gpu="h100")
    assert all(k.tile is not None for k in c.kernels)
    assert c.explain().plans
