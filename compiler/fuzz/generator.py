"""Random valid PyTorch modules, written as Python source: the differential fuzzer's input.

`generate(case)` writes a module `Fuzzed` and a function `example_inputs()`; `build(case)`
runs that source. A `Case` is a seed plus what the minimiser took away (steps left out, a cap
on every size drawn), so the same seed always writes the same module and a smaller case is
the same module with less in it.

What a module is made of, all drawn from the seed:
- **dtype**: float32, bfloat16 or float16 (`self.to(dtype)` after the parameters are drawn).
- **input**: tokens [B, S, D] (sometimes with token ids [B, S] for an embedding) or an image
  [B, C, H, W]; contiguous, transposed, strided or, for images, channels_last. Sizes include 1
  and sizes that are not multiples of a tile.
- **steps**, each one family of what tilefuse compiles, on the tokens or the image so far:
  pointwise math, broadcasting with parameters and earlier values, comparisons and `where`,
  linear layers, matmuls, reductions, cumsum, softmax, norms called (layer, RMS, group) and
  written out, GELU and SiLU written out, gates (SwiGLU, GEGLU), rotary embedding, adaLN
  modulation, views (transpose, reshape, expand, slice, split, pad, cat, index), embedding,
  attention (`F.scaled_dot_product_attention` and matmul-softmax-matmul written out; causal,
  additive and boolean masks; grouped-query heads; cross-attention), convolutions (strided,
  padded, dilated, grouped), upsampling, and the moves between image and tokens a UNet makes.

Each step draws from its own generator (seeded by the case's seed and the step's index), so
leaving a step out changes no earlier step and no later step's random draws (a later step may
still see another value to work on): what the minimiser relies on. Steps work on any value of
rank 3 or 4 so far, attention's inner ones included (masked scores holding -inf too, so NaN and
infinities are checked to propagate as in eager).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from compiler.fuzz.steps import (
    CHANNELS,
    IMAGE_SIZES,
    IMAGE_STEPS,
    TOKEN_SIZES,
    TOKEN_STEPS,
    Builder,
    Shape,
    draw_size,
)

DTYPES = ("float32",) * 6 + ("bfloat16", "bfloat16", "float16", "float16")


@dataclass(frozen=True)
class Case:
    """A seed, and what the minimiser took from its module: the steps left out (by index),
    how many steps were drawn at most, and a cap on every size drawn."""

    seed: int
    drop: frozenset[int] = frozenset()
    steps: int | None = None
    size_cap: int | None = None

    def __str__(self) -> str:
        edits = [f"drop={sorted(self.drop)}"] if self.drop else []
        edits += [f"steps={self.steps}"] if self.steps is not None else []
        edits += [f"size_cap={self.size_cap}"] if self.size_cap is not None else []
        return f"seed {self.seed}" + (f" ({', '.join(edits)})" if edits else "")


@dataclass(frozen=True)
class Source:
    """A generated module: its source, and the case that wrote it."""

    case: Case
    text: str
    dtype: str
    inputs: str  # what the inputs are, in words
    steps: int  # how many steps were drawn (some may be left out)


def _inputs(
    rng: random.Random, cap: int | None, dtype: str
) -> tuple[list[str], list[str], str, Shape, int]:
    """The `example_inputs` body lines, forward's parameters, a description, the first
    value's shape, and the token ids' vocabulary (0 without ids)."""

    def size(choices: tuple[int, ...]) -> int:
        return draw_size(rng, choices, cap)

    bsz = size((1, 2))
    g = f"generator=g, dtype=torch.{dtype}"  # made in the dtype: a cast would copy a view
    if rng.random() < 0.35:
        c, h, w = size(CHANNELS), size(IMAGE_SIZES), size(IMAGE_SIZES)
        layout = rng.choice(["contiguous", "contiguous", "channels_last", "transposed"])
        make = {
            "contiguous": f"torch.randn({bsz}, {c}, {h}, {w}, {g})",
            "channels_last": f"torch.randn({bsz}, {h}, {w}, {c}, {g}).permute(0, 3, 1, 2)",
            "transposed": f"torch.randn({bsz}, {c}, {w}, {h}, {g}).transpose(2, 3)",
        }[layout]
        return (
            [f"    x = {make}"],
            ["x"],
            f"an image [{bsz}, {c}, {h}, {w}], {layout}",
            (bsz, c, h, w),
            0,
        )
    s, d = size(TOKEN_SIZES), size(TOKEN_SIZES[1:])
    layout = rng.choice(["contiguous", "contiguous", "transposed", "strided"])
    make = {
        "contiguous": f"torch.randn({bsz}, {s}, {d}, {g})",
        "transposed": f"torch.randn({bsz}, {d}, {s}, {g}).transpose(1, 2)",
        "strided": f"torch.randn({bsz}, {2 * s}, {d + 3}, {g})[:, ::2, 1:{d + 1}]",
    }[layout]
    lines, params = [f"    x = {make}"], ["x"]
    vocab = 0
    if rng.random() < 0.3:
        vocab = size((3, 11, 50))
        lines.append(f"    ids = torch.randint(0, {vocab}, ({bsz}, {s}), generator=g)")
        params.append("ids")
    what = f"tokens [{bsz}, {s}, {d}], {layout}" + (f", token ids < {vocab}" if vocab else "")
    return lines, params, what, (bsz, s, d), vocab


def generate(case: Case) -> Source:
    """The source of the random module of `case` (see the module docstring)."""
    rng = random.Random(case.seed)
    dtype = rng.choice(DTYPES)
    lines, params, what, shape, vocab = _inputs(rng, case.size_cap, dtype)
    count = case.steps if case.steps is not None else rng.randrange(3, 9)
    b = Builder(rng, case.size_cap, vocab=vocab)
    b.values.append(("x", shape))
    for i in range(count):
        if i in case.drop:
            continue
        b.rng = random.Random(f"{case.seed}/{i}")
        main = [v for v in b.values if len(v[1]) in (3, 4)]  # not masks or angles
        x, xshape = main[-1] if b.rng.random() < 0.7 else b.rng.choice(main[-4:])
        steps = IMAGE_STEPS if len(xshape) == 4 else TOKEN_STEPS
        step = b.rng.choices(list(steps), weights=list(steps.values()))[0]
        step(b, x, xshape)
    out = next(v[0] for v in reversed(b.values) if len(v[1]) in (3, 4))
    cast = [f"        self.to(torch.{dtype})"] if dtype != "float32" else []
    seeded = [f"        g = torch.Generator().manual_seed({case.seed})"] if b.params else []
    init = "".join(f"\n{line}" for line in seeded + b.params + cast)
    args = ", ".join(f"{p}: torch.Tensor" for p in params)
    body = "\n".join(b.lines) or "        pass"
    text = f'''import torch
import torch.nn.functional as F
from torch import nn


class Fuzzed(nn.Module):
    """fuzz {case}: {dtype}, {what}"""

    def __init__(self) -> None:
        super().__init__(){init}

    def forward(self, {args}) -> torch.Tensor:
{body}
        return {out}


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed({case.seed})
{chr(10).join(lines)}
    return ({", ".join(params)}{"," if len(params) == 1 else ""})


def build() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """For `tilefuse check THIS_FILE.py:build`."""
    return Fuzzed().eval(), example_inputs()
'''
    return Source(case, text, dtype, what, count)


def run_source(text: str, name: str) -> tuple[Any, tuple[Any, ...]]:
    """The module `Fuzzed` (eval mode) and `example_inputs()` of generated source."""
    namespace: dict[str, Any] = {"__name__": name}
    exec(compile(text, name, "exec"), namespace)
    return namespace["Fuzzed"]().eval(), namespace["example_inputs"]()


def build(case: Case | int) -> tuple[Any, tuple[Any, ...], Source]:
    """The module of `generate(case)` (eval mode), its inputs, and its source."""
    case = Case(case) if isinstance(case, int) else case
    source = generate(case)
    model, inputs = run_source(source.text, f"<fuzz {case}>")
    return model, inputs, source
