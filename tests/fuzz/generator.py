"""Random valid PyTorch modules for differential testing, written as Python source.

`generate(seed)` returns the source of a module `Fuzzed` and its example inputs' shapes: a
chain of steps over a [B, S, D] input, each one of the op families tilefuse compiles (pointwise
math, broadcasting with parameters, linear layers, reductions over random dims, softmax, norms
called and written out, GELU written out, views: transposes, reshapes, slices, expands,
concatenation, residual adds, attention with and without a causal mask). Sizes include 1 and
sizes that are not multiples of a tile. The source is the repro: a failure prints it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

SIZES = (1, 2, 3, 5, 8, 13, 16)


@dataclass
class _Builder:
    rng: random.Random
    lines: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    values: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    count: int = 0

    def new(self, expr: str, shape: tuple[int, ...]) -> None:
        name = f"v{self.count}"
        self.count += 1
        self.lines.append(f"        {name} = {expr}  # {list(shape)}")
        self.values.append((name, shape))

    def param(self, shape: tuple[int, ...], scale: float = 1.0) -> str:
        name = f"p{len(self.params)}"
        self.params.append(
            f"        self.{name} = nn.Parameter(torch.randn({shape}, generator=g) * {scale})"
        )
        return f"self.{name}"

    def last(self) -> tuple[str, tuple[int, ...]]:
        return self.values[-1]

    def pick(self, rank: int | None = None) -> tuple[str, tuple[int, ...]]:
        options = [v for v in self.values if rank is None or len(v[1]) == rank]
        return self.rng.choice(options[-4:]) if options else self.last()


def _step(b: _Builder) -> None:
    rng = b.rng
    x, shape = b.last() if rng.random() < 0.7 else b.pick()
    d = shape[-1]
    kind = rng.choice(
        ["unary", "unary", "binary", "param", "linear", "linear", "reduce", "softmax", "norm",
         "norm_written", "gelu_written", "view", "slice", "cat", "residual", "attention"]
    )  # fmt: skip
    if kind == "unary":
        expr = rng.choice(["torch.tanh({})", "torch.sigmoid({})", "F.gelu({})", "F.silu({})",
                           "torch.relu({})", "-{}", "{}.abs()", "torch.exp({} * 0.25)",
                           "torch.sqrt({}.abs() + 1e-3)", "torch.rsqrt({} * {} + 1.0)",
                           "{} * {}", "torch.clamp({}, -1.5, 1.5)"])  # fmt: skip
        b.new(expr.format(x, x) if expr.count("{}") == 2 else expr.format(x), shape)
    elif kind == "binary":
        y, yshape = b.pick(len(shape))
        if yshape != shape:
            y, yshape = x, shape
        op = rng.choice(["+", "-", "*"])
        b.new(f"{x} {op} {y}", shape)
    elif kind == "param":
        p = b.param((d,), 0.5)
        b.new(rng.choice([f"{x} * {p}", f"{x} + {p}", f"{x} / ({p}.abs() + 1.0)"]), shape)
    elif kind == "linear":
        out = rng.choice(SIZES[1:])
        w, bias = b.param((out, d), d**-0.5), b.param((out,), 0.1)
        bias = bias if rng.random() < 0.7 else "None"
        b.new(f"F.linear({x}, {w}, {bias})", (*shape[:-1], out))
    elif kind == "reduce" and len(shape) > 1:
        dim = rng.randrange(len(shape))
        op = rng.choice(["sum", "mean", "amax"])
        b.new(
            f"{x}.{op}({dim}, keepdim=True)",
            tuple(1 if i == dim else n for i, n in enumerate(shape)),
        )
        name = b.last()[0]
        b.new(f"{x} - {name}", shape)  # broadcast the reduction back
    elif kind == "softmax":
        dim = rng.randrange(len(shape))
        fn = rng.choice(["torch.softmax", "torch.log_softmax"])
        b.new(f"{fn}({x}, dim={dim})", shape)
    elif kind == "norm":
        w, bias = b.param((d,), 1.0), b.param((d,), 0.1)
        b.new(f"F.layer_norm({x}, ({d},), {w}, {bias}, eps=1e-5)", shape)
    elif kind == "norm_written":
        w = b.param((d,), 1.0)
        b.new(f"{x} * torch.rsqrt({x}.pow(2).mean(-1, keepdim=True) + 1e-6) * {w}", shape)
    elif kind == "gelu_written":
        b.new(f"0.5 * {x} * (1.0 + torch.tanh(0.7978845608 * ({x} + 0.044715 * {x} ** 3)))", shape)
    elif kind == "view" and len(shape) == 3:
        choice = rng.choice(["transpose", "merge", "expand"])
        if choice == "transpose":
            b.new(f"{x}.transpose(1, 2)", (shape[0], shape[2], shape[1]))
        elif choice == "merge":
            b.new(f"{x}.reshape({shape[0]}, {shape[1] * shape[2]}).reshape({shape})", shape)
        else:
            b.new(f"{x}[:, :1, :].expand({shape[0]}, {shape[1]}, {d})", shape)
    elif kind == "slice" and d > 1:
        k = rng.randrange(1, d)
        b.new(f"{x}[..., :{k}]", (*shape[:-1], k))
    elif kind == "cat":
        b.new(f"torch.cat([{x}, {x} * 0.5], dim=-1)", (*shape[:-1], 2 * d))
    elif kind == "residual" and len(b.values) > 1:
        y, yshape = b.pick(len(shape))
        b.new(f"{x} + {y}" if yshape == shape else f"{x} + 1.0", shape)
    elif kind == "attention" and len(shape) == 3 and d % 2 == 0:
        bsz, s = shape[0], shape[1]
        heads = rng.choice([h for h in (1, 2) if d % h == 0])
        q, k, v = (b.param((d, d), d**-0.5) for _ in range(3))
        causal = rng.random() < 0.5
        split = f".reshape({bsz}, {s}, {heads}, {d // heads}).transpose(1, 2)"
        b.new(
            f"F.scaled_dot_product_attention(({x} @ {q}){split}, ({x} @ {k}){split}, "
            f"({x} @ {v}){split}, is_causal={causal}).transpose(1, 2).reshape({shape})",
            shape,
        )
    else:
        b.new(f"torch.tanh({x})", shape)


def generate(seed: int, steps: int | None = None) -> tuple[str, tuple[int, ...]]:
    """The source of a random module `Fuzzed` and the shape of its one input."""
    rng = random.Random(seed)
    b = _Builder(rng)
    shape = (rng.choice((1, 2)), rng.choice(SIZES), rng.choice(SIZES[1:]))
    b.values.append(("x", shape))
    for _ in range(steps or rng.randrange(3, 9)):
        _step(b)
    out = b.last()[0]
    init = "\n".join(b.params) or "        pass"
    source = f'''import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz seed {seed}"""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed({seed})
{init}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
{chr(10).join(b.lines)}
        return {out}
'''
    return source, shape


def build(seed: int) -> tuple[object, tuple[object, ...], str]:
    """The module of `generate(seed)` (eval mode), an input for it, and its source."""
    import torch

    source, shape = generate(seed)
    namespace: dict[str, object] = {}
    exec(compile(source, f"<fuzz seed {seed}>", "exec"), namespace)
    model = namespace["Fuzzed"]().eval()  # type: ignore[operator]
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return model, (x,), source
