"""OpInfo-style samples: for every IR op, small torch programs that lower to it.

Each sample says which IR op it exercises (`op`), how to make inputs for a dtype, and which
dtypes are known to fail (as data, run as strict xfails). Shapes cover broadcasting, size-1 dims
and non-contiguous (transposed, sliced) inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

FLOATS = (torch.float32, torch.bfloat16)


@dataclass(frozen=True)
class OpSample:
    id: str
    op: str  # the IR op the captured graph must contain
    fn: Callable[..., Any]
    make: Callable[[torch.dtype], tuple[Any, ...]]
    dtypes: tuple[torch.dtype, ...] = FLOATS
    xfail: dict[torch.dtype, str] = field(default_factory=dict)


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + sum(shape))
    return torch.randn(*shape, generator=g).to(dtype)


def positive(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (randn(*shape, dtype=torch.float32).abs() + 0.1).to(dtype)


def ints(*shape: int, high: int = 10, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=g)


def transposed(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    """A non-contiguous tensor of `shape`: a contiguous one with its dims reversed, permuted."""
    return randn(*reversed(shape), dtype=dtype).permute(*reversed(range(len(shape))))


def unary(op: str, fn: Callable[..., Any], pos: bool = False) -> list[OpSample]:
    make = positive if pos else randn
    return [
        OpSample(f"{op}-3d", op, fn, lambda d: (make(2, 3, 5, dtype=d),)),
        OpSample(
            f"{op}-noncontig",
            op,
            fn,
            lambda d: (transposed(4, 6, dtype=d).abs() + (0.1 if pos else 0.0),),
        ),
    ]


def binary(
    op: str, fn: Callable[..., Any], pos: bool = False, scalar: bool = True
) -> list[OpSample]:
    make = positive if pos else randn
    samples = [
        OpSample(
            f"{op}-broadcast", op, fn, lambda d: (make(2, 1, 5, dtype=d), make(3, 1, dtype=d))
        ),
        OpSample(
            f"{op}-noncontig",
            op,
            fn,
            lambda d: (transposed(4, 6, dtype=d).abs() + 0.1, make(6, dtype=d)),
        ),
    ]
    if scalar:
        samples.append(
            OpSample(
                f"{op}-scalar",
                op,
                lambda x: fn(x, 3.0 if op == "pow" else 2.0),
                lambda d: (make(3, 4, dtype=d),),
            )
        )
    return samples


def compare(op: str, fn: Callable[..., Any]) -> list[OpSample]:
    return [
        OpSample(
            f"{op}-broadcast", op, fn, lambda d: (ints(2, 1, 5).to(d), ints(3, 1, seed=1).to(d))
        ),
        OpSample(
            f"{op}-int-scalar", op, lambda x: fn(x, 4), lambda d: (ints(3, 4),), (torch.int64,)
        ),
    ]


SAMPLES: list[OpSample] = [
    *unary("neg", torch.neg),
    *unary("abs", torch.abs),
    *unary("exp", torch.exp),
    *unary("log", torch.log, pos=True),
    *unary("sqrt", torch.sqrt, pos=True),
    *unary("rsqrt", torch.rsqrt, pos=True),
    *unary("reciprocal", torch.reciprocal, pos=True),
    *unary("sin", torch.sin),
    *unary("cos", torch.cos),
    *unary("tanh", torch.tanh),
    *unary("erf", torch.erf),
    *unary("sigmoid", torch.sigmoid),
    *unary("relu", torch.relu),
    *unary("silu", F.silu),
    *unary("gelu", F.gelu),
    OpSample(
        "gelu-tanh",
        "gelu",
        lambda x: F.gelu(x, approximate="tanh"),
        lambda d: (randn(4, 8, dtype=d),),
    ),
    OpSample("logical_not", "logical_not", lambda x: ~(x > 0), lambda d: (randn(3, 4, dtype=d),)),
    *binary("add", torch.add),
    OpSample(
        "add-alpha",
        "add",
        lambda x, y: torch.add(x, y, alpha=0.5),
        lambda d: (randn(3, 4, dtype=d), randn(4, dtype=d)),
    ),
    *binary("sub", torch.sub),
    OpSample("sub-rsub", "sub", lambda x: 1.0 - x, lambda d: (randn(3, 4, dtype=d),)),
    *binary("mul", torch.mul),
    *binary("div", torch.div, pos=True),
    *binary("pow", torch.pow, pos=True),
    *binary("maximum", torch.maximum, scalar=False),
    *binary("minimum", torch.minimum, scalar=False),
    OpSample(
        "maximum-clamp", "maximum", lambda x: x.clamp(-0.5, 0.5), lambda d: (randn(3, 4, dtype=d),)
    ),
    *compare("eq", torch.eq),
    *compare("ne", torch.ne),
    *compare("lt", torch.lt),
    *compare("le", torch.le),
    *compare("gt", torch.gt),
    *compare("ge", torch.ge),
    OpSample(
        "logical_and",
        "logical_and",
        lambda x, y: (x > 0) & (y > 0),
        lambda d: (randn(3, 4, dtype=d), randn(4, dtype=d)),
    ),
    OpSample(
        "logical_or",
        "logical_or",
        lambda x, y: (x > 0) | (y < 0),
        lambda d: (randn(3, 4, dtype=d), randn(3, 1, dtype=d)),
    ),
    OpSample(
        "where",
        "where",
        lambda c, x, y: torch.where(c > 0, x, y),
        lambda d: (randn(3, 1, dtype=d), randn(3, 4, dtype=d), randn(4, dtype=d)),
    ),
    OpSample(
        "where-masked_fill",
        "where",
        lambda x, m: x.masked_fill(m > 0, -1e4),
        lambda d: (randn(2, 3, 4, dtype=d), randn(3, 4)),
    ),
    OpSample(
        "cast-to-float",
        "cast",
        lambda i: i.to(torch.float32) * 0.5,
        lambda d: (ints(3, 4),),
        (torch.int64,),
    ),
    OpSample(
        "cast-float-to-int",
        "cast",
        lambda x: (x * 4).to(torch.int64),
        lambda d: (randn(3, 4, dtype=d),),
        (torch.float32,),
    ),
    OpSample(
        "cast-down",
        "cast",
        lambda x: x.to(torch.bfloat16).float(),
        lambda d: (randn(5, 7, dtype=d),),
        (torch.float32,),
    ),
    OpSample(
        "full",
        "full",
        lambda x: x + torch.full((3, 4), 0.5, dtype=x.dtype),
        lambda d: (randn(3, 4, dtype=d),),
    ),
    OpSample(
        "full-zeros_like",
        "full",
        lambda x: torch.cat([x, torch.ones_like(x)]),
        lambda d: (randn(3, 4, dtype=d),),
    ),
    OpSample(
        "arange",
        "arange",
        lambda x: x * torch.arange(4, dtype=x.dtype),
        lambda d: (randn(3, 4, dtype=d),),
    ),
    OpSample(
        "arange-float-step",
        "arange",
        lambda x: x + torch.arange(0.0, 2.0, 0.5),
        lambda d: (randn(2, 4, dtype=d),),
        (torch.float32,),
    ),
    OpSample(
        "constant",
        "constant",
        lambda x: x * torch.tensor([1.0, -2.0, 3.0, 0.5]),
        lambda d: (randn(3, 4),),
        (torch.float32,),
    ),
    OpSample("sum", "sum", lambda x: x.sum(dim=(0, 2)), lambda d: (randn(3, 4, 5, dtype=d),)),
    OpSample("sum-all-noncontig", "sum", lambda x: x.sum(), lambda d: (transposed(4, 6, dtype=d),)),
    OpSample(
        "sum-keepdim-bool",
        "sum",
        lambda x: (x > 0).sum(-1, keepdim=True),
        lambda d: (randn(3, 4, dtype=d),),
    ),
    OpSample(
        "mean", "mean", lambda x: x.mean(-1, keepdim=True), lambda d: (randn(3, 4, 5, dtype=d),)
    ),
    OpSample("amax", "amax", lambda x: x.amax(dim=1), lambda d: (randn(3, 4, 5, dtype=d),)),
    OpSample(
        "amax-max-dim", "amax", lambda x: x.max(dim=-1).values, lambda d: (randn(3, 4, dtype=d),)
    ),
    OpSample(
        "amin",
        "amin",
        lambda x: x.amin(dim=(0, 1), keepdim=True),
        lambda d: (randn(3, 4, 5, dtype=d),),
    ),
    OpSample("cumsum", "cumsum", lambda x: x.cumsum(dim=1), lambda d: (randn(3, 6, dtype=d),)),
    OpSample(
        "cumsum-bool", "cumsum", lambda x: (x > 0).cumsum(dim=-1), lambda d: (randn(3, 6, dtype=d),)
    ),
    OpSample(
        "reshape",
        "reshape",
        lambda x: x.reshape(4, 3, 2) * 2,
        lambda d: (transposed(6, 4, dtype=d),),
    ),
    OpSample(
        "reshape-unsqueeze",
        "reshape",
        lambda x: x.unsqueeze(1).squeeze(-1) * 2,
        lambda d: (randn(3, 1, dtype=d),),
    ),
    OpSample(
        "permute", "permute", lambda x: x.permute(2, 0, 1) * 2, lambda d: (randn(2, 3, 4, dtype=d),)
    ),
    OpSample(
        "permute-transpose",
        "permute",
        lambda x: x.transpose(-1, -2) + 1,
        lambda d: (randn(2, 3, 4, dtype=d),),
    ),
    OpSample(
        "expand", "expand", lambda x: x.expand(2, 3, 4) * 2, lambda d: (randn(3, 1, dtype=d),)
    ),
    OpSample("slice", "slice", lambda x: x[:, 1:3] * 2, lambda d: (randn(3, 5, dtype=d),)),
    OpSample(
        "slice-step-negative-start",
        "slice",
        lambda x: x[..., -4::2] * 2,
        lambda d: (transposed(3, 6, dtype=d),),
    ),
    OpSample("slice-select", "slice", lambda x: x[:, 1] * 2, lambda d: (randn(3, 5, 2, dtype=d),)),
    OpSample(
        "slice-split",
        "slice",
        lambda x: torch.stack(x.split([2, 3], dim=-1)[::-1][0:1]).sum(0) * 1,
        lambda d: (randn(3, 5, dtype=d),),
    ),
    OpSample(
        "slice-chunk",
        "slice",
        lambda x: x.chunk(2, dim=0)[1] * 2,
        lambda d: (randn(4, 3, dtype=d),),
    ),
    OpSample(
        "cat",
        "cat",
        lambda x, y: torch.cat([x, y, x], dim=1),
        lambda d: (randn(2, 3, dtype=d), randn(2, 1, dtype=d)),
    ),
    OpSample(
        "cat-mixed-dtype",
        "cat",
        lambda x, y: torch.cat([x, y.float()], dim=0),
        lambda d: (randn(2, 3), ints(1, 3)),
        (torch.float32,),
    ),
    OpSample(
        "index",
        "index",
        lambda x, i, j: x[i, j],
        lambda d: (randn(5, 6, 2, dtype=d), ints(3, 1, high=5), ints(4, high=6)),
    ),
    OpSample(
        "index-middle",
        "index",
        lambda x, i: x[:, i],
        lambda d: (randn(3, 6, 2, dtype=d), ints(2, 2, high=6)),
    ),
    OpSample(
        "embedding",
        "embedding",
        lambda w, i: F.embedding(i, w),
        lambda d: (randn(10, 4, dtype=d), ints(2, 3)),
    ),
    OpSample(
        "matmul", "matmul", torch.matmul, lambda d: (randn(2, 3, 4, dtype=d), randn(4, 5, dtype=d))
    ),
    OpSample(
        "matmul-batched-broadcast",
        "matmul",
        torch.matmul,
        lambda d: (randn(2, 1, 3, 4, dtype=d), transposed(3, 5, 4, dtype=d).transpose(-1, -2)),
    ),
    OpSample(
        "matmul-vector", "matmul", torch.matmul, lambda d: (randn(3, 4, dtype=d), randn(4, dtype=d))
    ),
    OpSample(
        "matmul-linear",
        "matmul",
        F.linear,
        lambda d: (randn(2, 3, 4, dtype=d), randn(5, 4, dtype=d), randn(5, dtype=d)),
    ),
    OpSample(
        "matmul-addmm",
        "matmul",
        lambda b, x, w: torch.addmm(b, x, w),
        lambda d: (randn(5, dtype=d), randn(3, 4, dtype=d), randn(4, 5, dtype=d)),
    ),
    OpSample(
        "sdpa",
        "sdpa",
        F.scaled_dot_product_attention,
        lambda d: (
            randn(1, 2, 5, 8, dtype=d),
            randn(1, 2, 7, 8, dtype=d),
            randn(1, 2, 7, 4, dtype=d),
        ),
    ),
    OpSample(
        "sdpa-causal-scale",
        "sdpa",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=0.3),
        lambda d: (
            randn(2, 2, 6, 8, dtype=d),
            randn(2, 2, 6, 8, dtype=d),
            randn(2, 2, 6, 8, dtype=d),
        ),
    ),
    OpSample(
        "sdpa-bool-mask",
        "sdpa",
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m > -0.5),
        lambda d: (
            randn(1, 2, 5, 8, dtype=d),
            randn(1, 2, 6, 8, dtype=d),
            randn(1, 2, 6, 8, dtype=d),
            randn(5, 6),
        ),
    ),
    OpSample(
        "sdpa-float-mask",
        "sdpa",
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
        lambda d: (
            randn(1, 2, 5, 8, dtype=d),
            randn(1, 2, 6, 8, dtype=d),
            randn(1, 2, 6, 8, dtype=d),
            randn(1, 1, 5, 6, dtype=d),
        ),
    ),
    OpSample(
        "sdpa-gqa",
        "sdpa",
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
        lambda d: (
            randn(1, 4, 6, 8, dtype=d),
            randn(1, 2, 6, 8, dtype=d),
            randn(1, 2, 6, 8, dtype=d),
        ),
    ),
    OpSample(
        "sdpa-head-dim-40",
        "sdpa",
        F.scaled_dot_product_attention,
        lambda d: (
            randn(1, 2, 4, 40, dtype=d),
            randn(1, 2, 3, 40, dtype=d),
            randn(1, 2, 3, 40, dtype=d),
        ),
    ),
    OpSample(
        "layer_norm",
        "layer_norm",
        lambda x, w, b: F.layer_norm(x, (8,), w, b),
        lambda d: (randn(2, 3, 8, dtype=d), randn(8, dtype=d), randn(8, dtype=d)),
    ),
    OpSample(
        "layer_norm-no-affine-2d",
        "layer_norm",
        lambda x: F.layer_norm(x, (3, 8), eps=1e-3),
        lambda d: (transposed(2, 3, 8, dtype=d),),
    ),
    OpSample(
        "layer_norm-bias-only",
        "layer_norm",
        lambda x, b: F.layer_norm(x, (8,), None, b),
        lambda d: (randn(2, 8, dtype=d), randn(8, dtype=d)),
    ),
    OpSample(
        "rms_norm",
        "rms_norm",
        lambda x, w: F.rms_norm(x, (8,), w, eps=1e-6),
        lambda d: (randn(2, 3, 8, dtype=d), randn(8, dtype=d)),
    ),
    OpSample(
        "rms_norm-default-eps",
        "rms_norm",
        lambda x: F.rms_norm(x, (8,)),
        lambda d: (randn(4, 8, dtype=d),),
    ),
    OpSample(
        "group_norm",
        "group_norm",
        lambda x, w, b: F.group_norm(x, 2, w, b),
        lambda d: (randn(2, 4, 3, 3, dtype=d), randn(4, dtype=d), randn(4, dtype=d)),
    ),
    OpSample(
        "group_norm-channels-last",
        "group_norm",
        lambda x: F.group_norm(x, 3),
        lambda d: (randn(2, 6, 4, 4, dtype=d).to(memory_format=torch.channels_last),),
    ),
    OpSample(
        "softmax",
        "softmax",
        lambda x: torch.softmax(x, dim=-1),
        lambda d: (randn(2, 3, 7, dtype=d),),
    ),
    OpSample(
        "softmax-dim0-noncontig",
        "softmax",
        lambda x: torch.softmax(x, dim=0),
        lambda d: (transposed(5, 6, dtype=d),),
    ),
    OpSample(
        "log_softmax",
        "log_softmax",
        lambda x: torch.log_softmax(x, dim=1),
        lambda d: (randn(2, 7, 3, dtype=d),),
    ),
    OpSample(
        "conv2d-3x3-pad",
        "conv2d",
        lambda x, w, b: F.conv2d(x, w, b, padding=1),
        lambda d: (randn(2, 3, 7, 6, dtype=d), randn(5, 3, 3, 3, dtype=d), randn(5, dtype=d)),
    ),
    OpSample(
        "conv2d-stride2-odd",
        "conv2d",
        lambda x, w: F.conv2d(x, w, stride=2, padding=1),
        lambda d: (randn(1, 4, 9, 7, dtype=d), randn(6, 4, 3, 3, dtype=d)),
    ),
    OpSample(
        "conv2d-1x1-channels-last",
        "conv2d",
        lambda x, w, b: F.conv2d(x, w, b),
        lambda d: (
            randn(2, 8, 5, 5, dtype=d).to(memory_format=torch.channels_last),
            randn(4, 8, 1, 1, dtype=d),
            randn(4, dtype=d),
        ),
    ),
    OpSample(
        "conv2d-patchify",
        "conv2d",
        lambda x, w, b: F.conv2d(x, w, b, stride=2),
        lambda d: (randn(1, 4, 8, 8, dtype=d), randn(16, 4, 2, 2, dtype=d), randn(16, dtype=d)),
    ),
    OpSample(
        "conv2d-groups-dilation",
        "conv2d",
        lambda x, w: F.conv2d(x, w, padding=2, dilation=2, groups=2),
        lambda d: (randn(1, 4, 6, 6, dtype=d), randn(6, 2, 3, 3, dtype=d)),
    ),
    OpSample(
        "conv2d-noncontig",
        "conv2d",
        lambda x, w: F.conv2d(x, w, padding=1),
        lambda d: (randn(1, 3, 6, 5, dtype=d).transpose(2, 3), randn(2, 3, 3, 3, dtype=d)),
    ),
    OpSample(
        "pad-asymmetric-channels-last",
        "pad",
        lambda x: F.pad(x, (0, 1, 0, 1)),
        lambda d: (randn(1, 3, 5, 7, dtype=d).to(memory_format=torch.channels_last),),
    ),
    OpSample(
        "pad-value-crop-noncontig",
        "pad",
        lambda x: F.pad(x, (2, -1, 1, 0), value=-0.5),
        lambda d: (transposed(3, 4, 6, dtype=d),),
    ),
    OpSample(
        "group_norm-noncontig-odd",
        "group_norm",
        lambda x, w, b: F.group_norm(x, 3, w, b, eps=1e-6),
        lambda d: (transposed(2, 6, 5, 3, dtype=d), randn(6, dtype=d), randn(6, dtype=d)),
    ),
    OpSample(
        "swiglu",
        "swiglu",
        lambda g, u: F.silu(g) * u,
        lambda d: (randn(2, 3, 8, dtype=d), randn(2, 3, 8, dtype=d)),
    ),
    OpSample(
        "geglu-broadcast-tanh",
        "geglu",
        lambda h, g: h * F.gelu(g, approximate="tanh"),
        lambda d: (randn(2, 1, 8, dtype=d), transposed(2, 3, 8, dtype=d)),
    ),
    OpSample(
        "rope",
        "rope",
        lambda x, c, s: x * c + torch.cat([-x[..., 3:], x[..., :3]], dim=-1) * s,
        lambda d: (randn(1, 2, 5, 6, dtype=d), randn(1, 1, 5, 6, dtype=d), randn(5, 6, dtype=d)),
    ),
    OpSample(
        "adaln_modulate",
        "adaln_modulate",
        lambda x, scale, shift: x * (1 + scale[:, None]) + shift[:, None],
        lambda d: (randn(2, 5, 8, dtype=d), randn(2, 8, dtype=d), randn(2, 8, dtype=d)),
    ),
    OpSample(
        "upsample_nearest2d-x2",
        "upsample_nearest2d",
        lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"),
        lambda d: (randn(1, 3, 4, 5, dtype=d),),
    ),
    OpSample(
        "upsample_nearest2d-size",
        "upsample_nearest2d",
        lambda x: F.interpolate(x, size=(7, 9), mode="nearest"),
        lambda d: (randn(2, 2, 3, 4, dtype=d).to(memory_format=torch.channels_last),),
    ),
]
