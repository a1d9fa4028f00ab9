"""3x3 convolutions as Winograd F(2x2, 3x3): 2.25x fewer multiplications than direct.

    Y = A^T [ (G g G^T) . (B^T d B) ] A      per 4x4 input tile d, 2x2 output tile Y

The weight transform `U = G g G^T` ([16, OC, C]) is computed once per weight version in
float64 (`PackedWeights.winograd`, `runtime.winograd_weights`: on the load path, which
imports no LLVM). Per call, a native kernel writes the 16 transformed input
planes `V[k] = (B^T d B)[k]` ([C, tiles]), a second computes the 16 products
`M[k] = U[k] @ V[k]` (Note [Winograd's products]), and a third (`backends.llvm.winograd_out`)
applies `A^T M A` and writes the 2x2 outputs into the NCHW result with the bias and the
convolution's epilogue when that is adds (a time embedding, a residual). The input transform
is a small IR graph rendered by the ordinary kernel generator, so the tiles' overlap is index
arithmetic. Error against float64: ~3x direct convolution's in float32, far inside the parity
budget.

Note [Winograd in groups of rows]
V and M hold 16 floats per tile and channel: for 320 channels at 32x32, 5 MiB each, 4x the
convolution's input, growing with the image. They are the largest memory a UNet's step needs
at once, the peak of the llvm program's arena (the feed-forwards' wide intermediates run in
row blocks, Note [Row blocks]): so V and M together may take `config.WINOGRAD_SCRATCH_INPUTS`
times the convolution's input at most (and `config.WINOGRAD_SCRATCH_BYTES`). Over it the
convolution first runs in 2 or 4 *groups of rows* of B^T: the group of rows xi computes only
V[4 xi .. 4 xi + 3] (a row of B^T combines two of a tile's four rows, so the input pass reads
half the input), the products multiply them by their U, and the output transform adds the group's
share `A^T[:, xi] (M[xi, :] A)` into the output (the first group writes it, with the bias and
the addends). The GEMMs are exactly the ungrouped ones, so only the transforms' extra passes
cost: in the `unet` example 2 groups took the time of whole convolutions and cut its loaded
peak RSS by 5 MiB (figures in docs/llvm_backend.md, Measurements).

Note [Winograd's products]
The 16 products are most of a convolution's time. They are one batched `backends.llvm.matmul`
(A = U[k], B = V[k]) in the register tiles of `backends.llvm.tiles`, which read U and V where
they lie (V[k] is [C, tiles]: 32 tiles are two vectors of a row): faster than a library's
batched GEMM, and than oneDNN's packed GEMM, which would also need both transforms to change
layout (192 against 135-150 GFLOP/s on 2 cores; figures in docs/llvm_backend.md,
Measurements). Their sums run in order over C, so their error is about twice a blocked sum's,
far inside the budget.

Note [Winograd in chunks of tiles]
When even one group of rows over all tiles is over the budget, the tiles run in *chunks*
(whole images, or a band of whole tile rows of one image), each in 4 groups of rows. Each
chunk's kernels get pointers at the chunk's first element and index with the whole tensors'
strides, so one module serves every chunk of a size (a ragged last band has its own). Chunks
cost more than groups (4 chunks ran 1.8x one; figures in docs/llvm_backend.md, Measurements):
each chunk is three more fork/joins, one more pass over U, and smaller GEMMs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backends.llvm import matmul as llvm_matmul
from backends.llvm import winograd_out as llvm_winograd_out
from backends.llvm.kernel import KernelModule, render_kernel
from backends.llvm.winograd_out import Band
from compiler.core import config
from compiler.core.ir import GraphBuilder, Value
from compiler.core.schedule import ExternCall, KernelSpec, Step
from compiler.core.types import DType, TensorType


def eligible(x: TensorType, w: TensorType, attrs: dict, weight: bool) -> bool:
    """Stride 1, dilation 1, 3x3, no groups, float32, enough channels and tiles to pay off."""
    return (
        weight
        and x.dtype is DType.f32
        and w.shape[2:] == (3, 3)
        and tuple(attrs["stride"]) == (1, 1)
        and tuple(attrs["dilation"]) == (1, 1)
        and attrs["groups"] == 1
        and min(x.shape[1], w.shape[0]) >= 32
        and x.shape[2] * x.shape[3] >= 64
    )


def tiles(x: TensorType, padding: tuple[int, int]) -> tuple[int, int, int, int]:
    """(Ho, Wo, tiles down, tiles across)."""
    ho, wo = x.shape[2] + 2 * padding[0] - 2, x.shape[3] + 2 * padding[1] - 2
    return ho, wo, -(-ho // 2), -(-wo // 2)


B_T_READS = ((0, 2), (1, 2), (1, 2), (1, 3))
"""The two of a tile's 4 values each row of B^T combines: (z0 - z2), (z1 + z2), (z2 - z1),
(z1 - z3)."""


def _combine(b: GraphBuilder, z: list[str], row: int, at: tuple[int, ...] = (0, 1, 2, 3)) -> str:
    """Row `row` of B^T applied to the values z, which are a tile's values at `at`."""
    v = dict(zip(at, z, strict=True))
    if row == 0:
        return b.add("sub", [v[0], v[2]])
    if row == 1:
        return b.add("add", [v[1], v[2]])
    if row == 2:
        return b.add("sub", [v[2], v[1]])
    return b.add("sub", [v[1], v[3]])


def pads(x: TensorType, padding: tuple[int, int]) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) making the input exactly (2 th + 2) x (2 tw + 2)."""
    _, _, th, tw = tiles(x, padding)
    ph, pw = padding
    return (pw, 2 * tw + 2 - x.shape[3] - pw, ph, 2 * th + 2 - x.shape[2] - ph)


def input_transform(
    x: TensorType,
    padding: tuple[int, int],
    name: str,
    band: Band | None = None,
    rows: range = range(4),
) -> KernelSpec:
    """The padded input xp [N, C, 2 th + 2, 2 tw + 2] -> the outputs v{4 xi + nu} of the
    transform rows xi in `rows` (default: all 16, v0..v15), each [C, images, rows, tw] (the
    GEMM reads them as [C, tiles]: the same memory), for the tiles of `band` (default: all):
    the input pointer is at the band's first padded row, read with the whole padded image's
    strides. Padding first (in torch) keeps every load affine, so the stride-2 tile loads
    vectorize as shuffles; the tile rows a group's rows of B^T do not read are never loaded."""
    n, c, _, _ = x.shape
    ho, _, th, tw = tiles(x, padding)
    band = band or Band(n, th, ho)
    padded = TensorType((band.images, c, 2 * th + 2, 2 * tw + 2), x.dtype)
    b = GraphBuilder(name, [Value("xp", padded)], prefix="w")
    xp, count = "xp", band.rows
    d: dict[tuple[int, int], str] = {}

    def tile(i: int, j: int) -> str:  # element (i, j) of every tile, loaded once
        if (i, j) not in d:
            h = b.add("slice", [xp], {"dim": 2, "start": i, "end": i + 2 * count - 1, "step": 2})
            d[i, j] = b.add("slice", [h], {"dim": 3, "start": j, "end": j + 2 * tw - 1, "step": 2})
        return d[i, j]

    outs = []
    for xi in rows:
        t = [_combine(b, [tile(a, j) for a in B_T_READS[xi]], xi, B_T_READS[xi]) for j in range(4)]
        for nu in range(4):
            v = _combine(b, t, nu)
            outs.append(b.add("permute", [v], {"dims": (1, 0, 2, 3)}, name=f"v{4 * xi + nu}"))
    g = b.build(outs)
    return KernelSpec(
        name, "pointwise", g.inputs, g.nodes, tuple(outs), (c, band.images, count, tw)
    )


@dataclass(frozen=True)
class Chunk:
    """One chunk of a convolution's tiles: `band` from tile row `row` of image `image` on."""

    image: int
    row: int
    band: Band


def scratch_budget(x: TensorType) -> int:
    """The bytes V and M may take together for a convolution of `x` (float32): at most
    `config.WINOGRAD_SCRATCH_INPUTS` times the input, and `config.WINOGRAD_SCRATCH_BYTES`."""
    return min(config.WINOGRAD_SCRATCH_BYTES, config.WINOGRAD_SCRATCH_INPUTS * x.numel * 4)


def row_groups(x: TensorType, oc: int, padding: tuple[int, int], budget: int) -> tuple[range, ...]:
    """The groups of transform rows the convolution of `x` to `oc` channels runs in (Note
    [Winograd in groups of rows]): the fewest of 1, 2 or 4 groups whose V and M for all the
    tiles ([4 rows, C, tiles] and [4 rows, OC, tiles] float32) fit in `budget` bytes, else 4."""
    n, c = x.shape[0], x.shape[1]
    _, _, th, tw = tiles(x, padding)
    per = 1
    for per in (4, 2, 1):
        if 4 * per * (c + oc) * 4 * n * th * tw <= budget:
            break
    return tuple(range(i, i + per) for i in range(0, 4, per))


def chunks(
    x: TensorType, oc: int, padding: tuple[int, int], budget: int, positions: int = 16
) -> list[Chunk]:
    """The chunks the convolution of `x` to `oc` channels runs in (Note [Winograd in chunks of
    tiles]): the most tiles whose V and M ([positions, C, tiles] and [positions, OC, tiles]
    float32: one group of transform rows) fit in `budget` bytes, as whole images, or else as
    bands of whole tile rows (at least one)."""
    n, c = x.shape[0], x.shape[1]
    ho, _, th, tw = tiles(x, padding)
    fit = max(1, budget // (positions * (c + oc) * 4))  # tiles
    if fit >= th * tw:
        k = min(n, fit // (th * tw))
        return [Chunk(i, 0, Band(min(k, n - i), th, ho)) for i in range(0, n, k)]
    rows = max(1, fit // tw)
    return [
        Chunk(i, r, Band(1, min(rows, th - r), min(2 * rows, ho - 2 * r)))
        for i in range(n)
        for r in range(0, th, rows)
    ]


def products(name: str, positions: int, oc: int, c: int, count: int) -> KernelModule:
    """The native kernel `M[k] = U[k] @ V[k]` for k < `positions`: U [positions, OC, C] (the
    rows of the transformed weight the group multiplies), V [positions, C, count], M
    [positions, OC, count]; a batched `backends.llvm.matmul` (Note [Winograd's products])."""
    return llvm_matmul.module(name, llvm_matmul.Matmul(positions, oc, count, c, (oc * c, c, 1), 1))


def driver_call(
    e: ExternCall,
    ops: list[str],
    names: dict[str, str],
    after: tuple[tuple[str, ...], list[Step]],
    weights: frozenset[str],
    slot: Callable[[str, TensorType], str],
) -> tuple[list[str], list[KernelModule], Step | None] | None:
    """The llvm driver's lines for the convolution `e` as Winograd F(2x2, 3x3), the native
    modules they call and the native part after `e` they compute (its epilogue of adds), or
    None when `e` is not eligible. `ops`: the operands' torch expressions; `names`: values to
    driver names (updated); `after`: the kernel's outputs and the steps after `e`; `slot`
    gives a value slot memory."""
    n = e.node
    types = {v.name: v.type for v in e.inputs} | {v.out.name: v.out.type for v in e.views}
    x, w = types[n.inputs[0]], types[n.inputs[1]]
    if not eligible(x, w, n.attr_dict, n.inputs[1] in weights):
        return None
    padding = tuple(n.attr("padding"))
    oc, c = w.shape[0], w.shape[1]
    ho, wo, _, tw = tiles(x, padding)
    budget = scratch_budget(x)
    rows = row_groups(x, oc, padding, budget)
    positions = 4 * len(rows[0])
    plan = chunks(x, oc, padding, budget, positions)
    count = max(ch.band.images * ch.band.rows for ch in plan) * tw
    v = slot(f"{n.out.name}_v", TensorType((positions, c, count), DType.f32))
    m = slot(f"{n.out.name}_m", TensorType((positions, oc, count), DType.f32))
    outputs, rest = after
    fused = llvm_winograd_out.epilogue(e, rest[0] if rest else None, rest[1:], outputs)
    out, addends = fused if fused is not None else (n.out.name, [])
    if out not in names:  # handed to a later part: a slot
        names[out] = slot(out, n.out.type)
    pre = f"wg_{n.out.name}"
    epilogue = f" + {len(addends)} addends" if addends else ""
    in_groups = f", {len(rows)} groups of {positions} products" if len(rows) > 1 else ""
    lines = [
        f"    {pre}_u = W.winograd({ops[1]})  # extern {e.name}: Winograd F(2x2,3x3) in "
        f"{len(plan)} chunk(s) of <= {count} tiles{in_groups}, the products native",
        f"    {pre}_xp = F.pad({ops[0]}, {pads(x, padding)})",
    ]
    groups: dict[Band, list[Chunk]] = {}
    for ch in plan:
        groups.setdefault(ch.band, []).append(ch)
    modules = []
    for j, (band, group) in enumerate(groups.items()):
        vb, mb, size = v, m, band.images * band.rows * tw
        if size != count:  # a ragged chunk: the first bytes of the slots
            vb, mb = f"{pre}_v{j}", f"{pre}_m{j}"
            lines.append(
                f"    {vb} = {v}.view(-1)[: {positions * c * size}].view({positions}, {c}, {size})"
            )
            lines.append(
                f"    {mb} = {m}.view(-1)[: {positions * oc * size}]"
                f".view({positions}, {oc}, {size})"
            )
        single = group == [Chunk(0, 0, band)]
        indent = "    " if single else "        "
        if not single:
            starts = tuple((ch.image, ch.row) for ch in group)
            lines.append(f"    for i, r in {starts}:  # chunks of {band}")
        xp = f"{pre}_xp" if single else f"{pre}_xp[i, :, 2 * r :]"
        dest = names[out] if single else f"{names[out]}[i, :, 2 * r :]"
        for part in rows:
            fin = render_kernel(input_transform(x, padding, f"{e.name}_in", band, part))
            fout = llvm_winograd_out.render(
                x.shape[0], oc, (ho, wo), bool(ops[2:3]), addends, (out, n.out.type), e.name,
                band, part,
            )  # fmt: skip
            fprod = products(e.name, positions, oc, c, size)
            modules += [fin, fprod, fout]
            args = [mb]
            if part.start == 0:  # the first group writes the output: bias and addends
                args += ops[2:3]
                for a in addends:
                    shift = [str(a.offset)] if a.offset else []
                    if not single:
                        shift += [f"i * {a.strides[0]}"] if a.strides[0] else []
                        shift += [f"r * {2 * a.strides[2]}"] if a.strides[2] else []
                    root = names[a.root]
                    args.append(f"{root}.view(-1)[{' + '.join(shift)} :]" if shift else root)
            u = f"{pre}_u" if len(rows) == 1 else f"{pre}_u[{4 * part.start}:{4 * part.stop}]"
            what = epilogue if part.start == 0 else ", added"
            lines += [
                f"{indent}{fin.symbol}(NTHREADS, {xp}, *{vb}.unbind(0))",
                f"{indent}{fprod.symbol}(NTHREADS, {u}, {vb}, {mb})  # native products",
                f"{indent}{fout.symbol}(NTHREADS, {', '.join(args + [dest])})"
                f"  # native output transform{what}",
            ]
    return lines, modules, rest[0] if fused is not None else None
