"""The step families of the differential fuzzer's modules (`compiler.fuzz.generator`).

A step writes one or more lines of `forward` on a value of rank 3 (tokens [B, S, D]) or 4 (an
image [B, C, H, W]) through a `Builder`, which names the new values, declares parameters and
index buffers, and keeps every value's shape. A step draws only from `Builder.rng`, which
`generate` seeds per step. `TOKEN_STEPS` and `IMAGE_STEPS` weigh the families for a value of
each rank.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

TOKEN_SIZES = (1, 2, 3, 5, 8, 13, 16)
IMAGE_SIZES = (1, 2, 3, 4, 5, 8)
CHANNELS = (1, 2, 3, 4, 8)

Shape = tuple[int, ...]


def draw_size(rng: random.Random, choices: tuple[int, ...], cap: int | None) -> int:
    """One of `choices`, at most `cap` (the minimiser's cap on every size drawn)."""
    n = rng.choice(choices)
    return n if cap is None else max(1, min(n, cap))


@dataclass
class Builder:
    rng: random.Random
    cap: int | None
    lines: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    values: list[tuple[str, Shape]] = field(default_factory=list)
    images: list[tuple[int, int]] = field(default_factory=list)  # (H, W) flattened to tokens
    vocab: int = 0  # the token ids' range, when the module has them
    count: int = 0

    def size(self, choices: tuple[int, ...]) -> int:
        return draw_size(self.rng, choices, self.cap)

    def new(self, expr: str, shape: Shape) -> str:
        name = f"v{self.count}"
        self.count += 1
        self.lines.append(f"        {name} = {expr}  # {list(shape)}")
        self.values.append((name, shape))
        return name

    def param(self, shape: Shape, scale: float = 1.0) -> str:
        name = f"p{len(self.params)}"
        self.params.append(
            f"        self.{name} = nn.Parameter(torch.randn({shape}, generator=g) * {scale:.4g})"
        )
        return f"self.{name}"

    def index_buffer(self, n: int, k: int) -> str:
        """A buffer of `k` indices into a dim of size `n`: repeats, and the last index."""
        idx = [self.rng.randrange(n) for _ in range(k - 1)] + [n - 1]
        self.rng.shuffle(idx)
        name = f"idx{len(self.params)}"
        self.params.append(f"        self.register_buffer({name!r}, torch.tensor({idx}))")
        return f"self.{name}"

    def pick(self, rank: int, like: Shape | None = None) -> tuple[str, Shape] | None:
        """One of the last four values of `rank` (of shape `like`, if given)."""
        options = [v for v in self.values if len(v[1]) == rank and (like is None or v[1] == like)][
            -4:
        ]
        return self.rng.choice(options) if options else None


# ----------------------------------------------------------------------------- any rank


def _unary(b: Builder, x: str, shape: Shape) -> None:
    expr = b.rng.choice([
        "torch.tanh({x})", "torch.sigmoid({x})", "F.gelu({x})", "F.gelu({x}, approximate='tanh')",
        "F.silu({x})", "torch.relu({x})", "-{x}", "{x}.abs()", "torch.exp({x} * 0.25)",
        "torch.sqrt({x}.abs() + 1e-3)", "torch.rsqrt({x} * {x} + 1.0)", "{x} * {x}",
        "torch.clamp({x}, -1.5, 1.5)", "torch.clamp({x}, min=0.0)", "torch.log({x}.abs() + 1.0)",
        "torch.erf({x})", "torch.reciprocal({x}.abs() + 1.0)", "torch.sin({x})", "torch.cos({x})",
        "({x}.abs() + 0.5).pow(1.5)", "{x} ** 3 * 0.1", "torch.log(torch.sigmoid({x}) + 0.5)",
    ])  # fmt: skip
    b.new(expr.format(x=x), shape)


def _binary(b: Builder, x: str, shape: Shape) -> None:
    other = b.pick(len(shape), shape)
    y = other[0] if other else x
    expr = b.rng.choice(
        ["{x} + {y}", "{x} - {y}", "{x} * {y}", "{x} / ({y}.abs() + 1.0)",
         "torch.maximum({x}, {y})", "torch.minimum({x}, {y} * 0.5)"]
    )  # fmt: skip
    b.new(expr.format(x=x, y=y), shape)


def _param(b: Builder, x: str, shape: Shape) -> None:
    """Broadcasting with a parameter: over the last dim, or per channel of an image."""
    pshape = (shape[1], 1, 1) if len(shape) == 4 and b.rng.random() < 0.7 else (shape[-1],)
    p = b.param(pshape, 0.5)
    b.new(b.rng.choice([f"{x} * {p}", f"{x} + {p}", f"{x} / ({p}.abs() + 1.0)"]), shape)


def _compare(b: Builder, x: str, shape: Shape) -> None:
    """Comparisons and `where`, each continuous where its condition flips: a value that
    rounds to the other side of a threshold in another precision moves the output by a
    rounding, not a jump (equality of floats, a jump by nature, is kept to integers: masks)."""
    expr = b.rng.choice([
        "torch.where({x} > 0, {x}, {x} * 0.1)",
        "{x}.masked_fill({x} < -1.0, -1.0)",
        "({x} >= 0.5).to({x}.dtype) * ({x} - 0.5)",
        "torch.where(~({x} <= 0.25), {x} - 0.25, 0.0)",
        "torch.where(({x} > 0.5) | ({x} < -0.5), {x}, {x} * {x} * {x} * 4.0)",
        "torch.where(({x} > -1.0) & ({x} < 1.0), {x} * {x}, {x}.abs())",
    ])  # fmt: skip
    b.new(expr.format(x=x), shape)


def _reduce(b: Builder, x: str, shape: Shape) -> None:
    """A reduction over a random dim (or an image's spatial dims), broadcast back."""
    if len(shape) == 4 and b.rng.random() < 0.5:
        pooled = b.new(f"{x}.mean((2, 3), keepdim=True)", (*shape[:2], 1, 1))
        b.new(f"{x} * torch.sigmoid({pooled})", shape)  # squeeze-and-excitation's gate
        return
    dim = b.rng.randrange(len(shape))
    op = b.rng.choice(["sum", "mean", "amax", "amin"])
    kept = tuple(1 if i == dim else n for i, n in enumerate(shape))
    reduced = b.new(f"{x}.{op}({dim}, keepdim=True)", kept)
    b.new(f"{x} - {reduced}", shape)


def _cumsum(b: Builder, x: str, shape: Shape) -> None:
    dim = b.rng.randrange(len(shape))
    b.new(f"torch.cumsum({x}, dim={dim}) * {1 / shape[dim]:.4g}", shape)


def _softmax(b: Builder, x: str, shape: Shape) -> None:
    dim = b.rng.randrange(len(shape))
    fn = b.rng.choice(["torch.softmax", "torch.log_softmax"])
    b.new(f"{fn}({x}, dim={dim})", shape)


def _written(b: Builder, x: str, shape: Shape) -> None:
    """The forms recognition looks for, written out as models write them."""
    form = b.rng.choice(["gelu_tanh", "gelu_erf", "silu", "rms", "layer"])
    if form == "gelu_tanh":
        expr = f"0.5 * {x} * (1.0 + torch.tanh(0.7978845608 * ({x} + 0.044715 * {x} ** 3)))"
    elif form == "gelu_erf":
        expr = f"0.5 * {x} * (1.0 + torch.erf({x} * 0.7071067811865476))"
    elif form == "silu":
        expr = f"{x} * torch.sigmoid({x})"
    elif form == "rms":
        w = b.param((shape[-1],), 1.0)
        expr = f"{x} * torch.rsqrt({x}.pow(2).mean(-1, keepdim=True) + 1e-6) * {w}"
    else:
        mean = b.new(f"{x}.mean(-1, keepdim=True)", (*shape[:-1], 1))
        var = b.new(f"({x} - {mean}).pow(2).mean(-1, keepdim=True)", (*shape[:-1], 1))
        expr = f"({x} - {mean}) / torch.sqrt({var} + 1e-5)"
    b.new(expr, shape)


def _residual(b: Builder, x: str, shape: Shape) -> None:
    other = b.pick(len(shape), shape)
    b.new(f"{x} + {other[0]}" if other and other[0] != x else f"{x} + 1.0", shape)


def _cat(b: Builder, x: str, shape: Shape) -> None:
    dim = b.rng.choice([1, len(shape) - 1])
    if shape[dim] > 32:  # sizes stay small
        return _unary(b, x, shape)
    out = tuple(2 * n if i == dim else n for i, n in enumerate(shape))
    b.new(f"torch.cat([{x}, torch.tanh({x})], dim={dim})", out)


def _pad(b: Builder, x: str, shape: Shape) -> None:
    """`F.pad` over the last dim, or the last two; zero or another constant."""
    left, right = b.rng.randrange(3), b.rng.randrange(1, 3)
    widths, out = [left, right], (*shape[:-1], shape[-1] + left + right)
    if len(shape) == 4 and b.rng.random() < 0.6:
        t, u = b.rng.randrange(3), b.rng.randrange(3)
        widths = [left, right, t, u]
        out = (*shape[:2], shape[2] + t + u, shape[3] + left + right)
    value = b.rng.choice(["", ", value=0.5"])
    b.new(f"F.pad({x}, {tuple(widths)}{value})", out)


def _index(b: Builder, x: str, shape: Shape) -> None:
    """Indexing with a tensor of indices: a buffer, or one computed in the graph."""
    dim = b.rng.choice([1, len(shape) - 1])
    n = shape[dim]
    lead = ":, " * dim
    if b.rng.random() < 0.3:
        b.new(f"{x}[{lead}torch.arange({n - 1}, -1, -1)]", shape)  # reversed
        return
    k = b.size(TOKEN_SIZES)
    idx = b.index_buffer(n, k)
    b.new(f"{x}[{lead}{idx}]", tuple(k if i == dim else s for i, s in enumerate(shape)))


# ----------------------------------------------------------------------------- tokens


def _linear(b: Builder, x: str, shape: Shape) -> None:
    d, out = shape[-1], b.size(TOKEN_SIZES)
    w = b.param((out, d), d**-0.5)
    bias = b.param((out,), 0.1) if b.rng.random() < 0.7 else "None"
    b.new(f"F.linear({x}, {w}, {bias})", (*shape[:-1], out))


def _matmul(b: Builder, x: str, shape: Shape) -> None:
    """x @ y^T for another value y with the same batch and last dim: scores of a kind."""
    other = [v for v in b.values if len(v[1]) == 3 and (v[1][0], v[1][2]) == (shape[0], shape[2])]
    y, yshape = b.rng.choice(other[-4:])  # x itself is one
    b.new(f"({x} @ {y}.transpose(1, 2)) * {shape[2] ** -0.5:.4g}", (shape[0], shape[1], yshape[1]))


def _norm(b: Builder, x: str, shape: Shape) -> None:
    d = shape[-1]
    kind = b.rng.choice(["layer", "layer", "rms", "group"])
    if kind == "layer":
        w, bias = b.param((d,), 1.0), b.param((d,), 0.1)
        b.new(f"F.layer_norm({x}, ({d},), {w}, {bias}, eps=1e-5)", shape)
    elif kind == "rms":
        b.new(f"F.rms_norm({x}, ({d},), {b.param((d,), 1.0)}, eps=1e-6)", shape)
    else:  # the tokens' dim 1 as channels, as a 1-d GroupNorm sees them
        _group_norm(b, x, shape)


def _gate(b: Builder, x: str, shape: Shape) -> None:
    """SwiGLU or GEGLU: one projection to twice the width, chunked, one half gating the other."""
    d, h = shape[-1], b.size(TOKEN_SIZES)
    w = b.param((2 * h, d), d**-0.5)
    bias = b.param((2 * h,), 0.1) if b.rng.random() < 0.5 else "None"
    both = b.new(f"F.linear({x}, {w}, {bias})", (*shape[:-1], 2 * h))
    up, gate = f"{both}[..., :{h}]", f"{both}[..., {h}:]"
    if b.rng.random() < 0.5:
        up, gate = f"{both}.chunk(2, dim=-1)[0]", f"{both}.chunk(2, dim=-1)[1]"
    expr = b.rng.choice(
        [f"F.silu({gate}) * {up}", f"{up} * F.gelu({gate})",
         f"F.gelu({gate}, approximate='tanh') * {up}"]
    )  # fmt: skip
    b.new(expr, (*shape[:-1], h))


def _rope(b: Builder, x: str, shape: Shape) -> None:
    """Rotary embedding as Hugging Face writes it: x * cos + rotate_half(x) * sin."""
    s, d = shape[1], shape[2]
    if d % 2:
        return _unary(b, x, shape)
    half = d // 2
    ang = b.new(
        f"torch.arange({s}, dtype=torch.float32)[:, None] "
        f"* torch.arange(1, {half + 1}, dtype=torch.float32) * 0.3",
        (s, half),
    )
    emb = b.new(f"torch.cat([{ang}, {ang}], dim=-1)", (s, d))
    cos = b.new(f"{emb}.cos().to({x}.dtype)", (s, d))
    sin = b.new(f"{emb}.sin().to({x}.dtype)", (s, d))
    rotated = f"torch.cat([-{x}[..., {half}:], {x}[..., :{half}]], dim=-1)"
    b.new(f"{x} * {cos} + {rotated} * {sin}", shape)


def _adaln(b: Builder, x: str, shape: Shape) -> None:
    """adaLN modulation: scale and shift projected from a pooled summary of the tokens."""
    d = shape[-1]
    w = b.param((2 * d, d), d**-0.5)
    cond = b.new(f"F.linear(F.silu({x}.mean(1, keepdim=True)), {w})", (shape[0], 1, 2 * d))
    b.new(f"{x} * (1 + {cond}[..., :{d}]) + {cond}[..., {d}:]", shape)


def _view(b: Builder, x: str, shape: Shape) -> None:
    bsz, s, d = shape
    choice = b.rng.choice(["transpose", "merge", "expand", "permute", "split", "heads"])
    if choice == "transpose":
        b.new(f"{x}.transpose(1, 2)", (bsz, d, s))
    elif choice == "merge":
        b.new(f"{x}.reshape({bsz}, {s * d}).reshape({bsz}, {d}, {s})", (bsz, d, s))
    elif choice == "expand":
        b.new(f"{x}[:, :1, :].expand({bsz}, {s}, {d})", shape)
    elif choice == "permute":
        b.new(f"{x}.permute(1, 0, 2).contiguous().permute(1, 0, 2)", shape)
    elif choice == "split" and d > 1:
        k = b.rng.randrange(1, d)
        part = b.rng.randrange(2)
        b.new(f"{x}.split([{k}, {d - k}], dim=-1)[{part}]", (bsz, s, k if part == 0 else d - k))
    else:
        heads = b.rng.choice([h for h in (1, 2, 4) if d % h == 0])
        b.new(
            f"{x}.reshape({bsz}, {s}, {heads}, {d // heads}).transpose(1, 2)"
            f".transpose(1, 2).reshape({bsz}, {s}, {d})",
            shape,
        )


def _slice(b: Builder, x: str, shape: Shape) -> None:
    dim = b.rng.choice([1, 2])
    n = shape[dim]
    if n == 1:
        return _unary(b, x, shape)
    start = b.rng.randrange(n - 1)
    stop = b.rng.randrange(start + 1, n + 1)
    step = b.rng.choice([1, 1, 2])
    lead = ":, " * dim
    k = len(range(start, stop, step))
    b.new(
        f"{x}[{lead}{start}:{stop}:{step}]",
        tuple(k if i == dim else m for i, m in enumerate(shape)),
    )


def _mask(b: Builder, s: int, t: int, kind: str, dtype_of: str) -> str:
    """A mask over [s queries, t keys] built in forward. Every query keeps a key (see Note
    [Fully masked rows] in passes/recognize_attention.py: a row with none differs by design)."""
    keep = b.new(
        f"torch.arange({t})[None, :] <= torch.arange({s})[:, None] + {max(t - s, 0)}", (s, t)
    )
    if kind == "bool":
        return keep
    if kind == "diagonal":  # not the newest key, unless it is the only one
        older = f"torch.arange({t})[None, :] != torch.arange({s})[:, None] + {max(t - s, 0)}"
        return b.new(f"({keep} & ({older})) | (torch.arange({t}) == 0)[None, :]", (s, t))
    if kind == "window":  # the last 3 keys a query may see (t >= s: never none)
        return b.new(
            f"{keep} & (torch.arange({t})[None, :] > torch.arange({s})[:, None] - 3)", (s, t)
        )
    fill = b.rng.choice(['float("-inf")', "-1e4"])
    return b.new(f"torch.where({keep}, 0.0, {fill}).to({dtype_of}.dtype)", (s, t))


def _attention(b: Builder, x: str, shape: Shape) -> None:
    """Multi-head attention over the tokens: self or cross (keys from another value), with
    grouped-query heads, masks of every kind, called or written out as matmul-softmax-matmul."""
    bsz, s, d = shape
    heads = b.rng.choice([h for h in (1, 2, 4) if d % h == 0])
    dh = d // heads
    kv_heads = b.rng.choice([h for h in (1, 2, 4) if heads % h == 0])
    context = [v for v in b.values if len(v[1]) == 3 and v[1][0] == bsz and v[0] != x]
    y, (_, t, e) = b.rng.choice(context) if context and b.rng.random() < 0.3 else (x, shape)
    wq = b.param((d, d), d**-0.5)
    wk, wv = b.param((kv_heads * dh, e), e**-0.5), b.param((kv_heads * dh, e), e**-0.5)
    q = b.new(
        f"F.linear({x}, {wq}).reshape({bsz}, {s}, {heads}, {dh}).transpose(1, 2)",
        (bsz, heads, s, dh),
    )
    k = b.new(
        f"F.linear({y}, {wk}).reshape({bsz}, {t}, {kv_heads}, {dh}).transpose(1, 2)",
        (bsz, kv_heads, t, dh),
    )
    v = b.new(
        f"F.linear({y}, {wv}).reshape({bsz}, {t}, {kv_heads}, {dh}).transpose(1, 2)",
        (bsz, kv_heads, t, dh),
    )
    mask_kind = b.rng.choice(["none", "none", "causal", "additive", "bool", "window", "diagonal"])
    mask_kind = "bool" if mask_kind == "window" and t < s else mask_kind
    written = b.rng.random() < 0.4
    n = heads // kv_heads
    if n > 1 and (written or b.rng.random() < 0.5):  # Hugging Face's repeat_kv
        expand = f"[:, :, None].expand({bsz}, {kv_heads}, {n}, {t}, {dh})"
        k, v = (
            b.new(f"{z}{expand}.reshape({bsz}, {heads}, {t}, {dh})", (bsz, heads, t, dh))
            for z in (k, v)
        )
        n = 1
    gqa = ", enable_gqa=True" if n > 1 else ""
    scale = dh**-0.5
    if not written:
        if mask_kind == "causal":
            mask = ", is_causal=True" if s == t or b.rng.random() < 0.5 else ""
        elif mask_kind == "none":
            mask = ""
        else:
            mask = f", attn_mask={_mask(b, s, t, mask_kind, q)}"
        attn = b.new(
            f"F.scaled_dot_product_attention({q}, {k}, {v}{mask}{gqa})", (bsz, heads, s, dh)
        )
    else:
        scores = b.new(f"({q} @ {k}.transpose(-2, -1)) * {scale:.6g}", (bsz, heads, s, t))
        if mask_kind in ("bool", "window", "diagonal", "causal"):
            keep = _mask(b, s, t, "bool" if mask_kind == "causal" else mask_kind, q)
            scores = b.new(f"{scores}.masked_fill(~{keep}, float('-inf'))", (bsz, heads, s, t))
        elif mask_kind == "additive":
            scores = b.new(f"{scores} + {_mask(b, s, t, mask_kind, q)}", (bsz, heads, s, t))
        attn = b.new(f"torch.softmax({scores}, dim=-1) @ {v}", (bsz, heads, s, dh))
    b.new(f"{attn}.transpose(1, 2).reshape({bsz}, {s}, {d})", shape)


def _embedding(b: Builder, x: str, shape: Shape) -> None:
    """Token embeddings added in; the ids used as given or computed in the graph."""
    if not b.vocab or shape[:2] != b.values[0][1][:2]:
        return _unary(b, x, shape)
    table = b.param((b.vocab + 1, shape[2]), 1.0)
    ids = b.rng.choice(["ids", "ids + 1", f"{b.vocab - 1} - ids"])  # the table has vocab + 1 rows
    b.new(f"{x} + F.embedding({ids}, {table})", shape)


def _to_image(b: Builder, x: str, shape: Shape) -> None:
    bsz, n, c = shape
    sizes = [hw for hw in b.images if hw[0] * hw[1] == n]
    if not sizes:
        return _unary(b, x, shape)
    h, w = sizes[-1]
    b.new(f"{x}.transpose(1, 2).reshape({bsz}, {c}, {h}, {w})", (bsz, c, h, w))


# ----------------------------------------------------------------------------- images


def _conv(b: Builder, x: str, shape: Shape) -> None:
    bsz, c, h, w = shape
    k = b.rng.choice([1, 3, 3])
    stride = b.rng.choice([1, 1, 2])
    dilation = 2 if k == 3 and b.rng.random() < 0.15 else 1
    padding = b.rng.choice([0, dilation]) if k == 3 else 0
    depthwise = b.rng.random() < 0.15
    out = c if depthwise else b.size(CHANNELS)
    groups = c if depthwise else 1

    def extent(n: int) -> int:
        return (n + 2 * padding - dilation * (k - 1) - 1) // stride + 1

    if extent(h) < 1 or extent(w) < 1:
        k, stride, dilation, padding = 1, 1, 1, 0
    weight = b.param((out, c // groups, k, k), (c // groups * k * k) ** -0.5)
    bias = b.param((out,), 0.1) if b.rng.random() < 0.7 else "None"
    b.new(
        f"F.conv2d({x}, {weight}, {bias}, stride={stride}, padding={padding}, "
        f"dilation={dilation}, groups={groups})",
        (bsz, out, extent(h), extent(w)),
    )


def _group_norm(b: Builder, x: str, shape: Shape) -> None:
    c, spatial = shape[1], math.prod(shape[2:])
    # torch refuses a group of one value
    options = [g for g in (1, 2, 4, 8) if c % g == 0 and c // g * spatial > 1]
    if not options:
        return _unary(b, x, shape)
    groups = b.rng.choice(options)
    w, bias = b.param((c,), 1.0), b.param((c,), 0.1)
    b.new(f"F.group_norm({x}, {groups}, {w}, {bias}, eps=1e-5)", shape)


def _upsample(b: Builder, x: str, shape: Shape) -> None:
    bsz, c, h, w = shape
    if h * w > 64:
        return _conv(b, x, shape)
    if b.rng.random() < 0.6:
        b.new(f"F.interpolate({x}, scale_factor=2, mode='nearest')", (bsz, c, 2 * h, 2 * w))
    else:
        oh, ow = b.size(IMAGE_SIZES), b.size(IMAGE_SIZES)
        b.new(f"F.interpolate({x}, size=({oh}, {ow}), mode='nearest')", (bsz, c, oh, ow))


def _image_view(b: Builder, x: str, shape: Shape) -> None:
    bsz, c, h, w = shape
    if b.rng.random() < 0.5:
        b.new(f"{x}.transpose(2, 3)", (bsz, c, w, h))
    else:
        b.new(f"{x}.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)", shape)


def _to_tokens(b: Builder, x: str, shape: Shape) -> None:
    bsz, c, h, w = shape
    b.images.append((h, w))
    b.new(f"{x}.flatten(2).transpose(1, 2)", (bsz, h * w, c))


Step = Callable[[Builder, str, Shape], None]

# each family with its weight: how often a step of that rank draws it
TOKEN_STEPS: dict[Step, int] = {
    _unary: 3, _binary: 2, _param: 2, _compare: 3, _reduce: 2, _cumsum: 1, _softmax: 2,
    _written: 3, _residual: 2, _cat: 1, _pad: 1, _index: 1, _linear: 4, _matmul: 1, _norm: 2,
    _gate: 2, _rope: 2, _adaln: 1, _view: 2, _slice: 1, _attention: 3, _embedding: 3,
    _to_image: 1,
}  # fmt: skip
IMAGE_STEPS: dict[Step, int] = {
    _unary: 2, _binary: 1, _param: 2, _compare: 1, _reduce: 1, _cumsum: 1, _softmax: 1,
    _written: 1, _residual: 2, _cat: 1, _pad: 1, _index: 1, _conv: 5, _group_norm: 2,
    _upsample: 1, _image_view: 1, _to_tokens: 2,
}  # fmt: skip
