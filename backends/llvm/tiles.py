"""Register-tiled GEMMs in LLVM IR: attention's products, Winograd's, matmuls into their
destination.

A tile keeps a block of the result in vector registers and streams the shared dimension through
them, one broadcast scalar of A times one or two vectors of B per step:

    product tile (R rows x 16 C columns): for d < K:  b_c = B[d, s0+16c:s0+16c+16], c < C
                                                       acc[r][c] += A[r0+r, d] * b_c  (R x C FMAs)
    output tile (R rows x Dv):           for s < keys: v_c = V[s, 16c:16c+16]
                                                      acc[r][c] += E[r0+r, s] * v_c  (R x NV FMAs)

`product` serves attention's scores (`S = scale * Q K^T`: B is K^T, packed once per key head
by `pack_transposed`, rows padded to a multiple of 32 keys with zeros), the Winograd products
(`backends.llvm.winograd`) and the matmuls of `backends.llvm.matmul`; a partial last tile of
columns is read and written under masks. `output` is attention's `O = E V`, each row scaled by
its 1 / sum as it is stored. R and C, and the accumulators an output tile may hold, follow
the vector registers of the target (Note [Register tiles per instruction set]); rows past the
last whole tile run as 1-row tiles. The accumulators are allocas in the function's entry block,
which LLVM promotes to registers; `llvm.fmuladd` becomes FMA. On one AVX-512 core a product
tile runs at about the core's peak (110 GFLOP/s; figures in docs/llvm_backend.md,
Measurements). Whole kernels: Note [Attention's products] (backends.llvm.attention), Note
[Winograd's products] (backends.llvm.winograd), Note [Matmuls into their destination]
(backends.llvm.matmul).

Note [Register tiles per instruction set]
A tile's accumulators, the B vectors of one step and the broadcast A scalar must all stay in
vector registers, or every FMA also spills. Vectors here are 16 floats (`LANES`): one register
with AVX-512 (32 of them), two with AVX2 (16 of 256 bits), which LLVM splits them into.
- AVX-512: 8 rows x 2 vectors (16 accumulators, 2 B vectors, 1 broadcast: the count that ran
  fastest), and up to 24 accumulators for an output tile.
- AVX2: 6 rows x 1 vector (12 registers of accumulators, 2 of B, 1 broadcast: 15 of 16, the
  6 x 16 shape of the usual AVX2 SGEMM kernels), and up to 6 vectors (12 registers) for an
  output tile.
`register_tiles()` picks by the width the llvm backend compiles for (`llvm_jit.host()`, so
TILEFUSE_CPU=x86-64-v3 gives AVX2's tiles on any host). Products tile their columns by
`RegisterTiles.keys`, so attention's packed K^T and the matmul panels follow too.

Note [Rolled loops]
A tile's depth loop and the row loop of `pack_padded` are `counted_loop(..., rolled=True)`:
their trip counts are constants (D = 40, 48 padded columns), so -O3 unrolled them in full and
multiplied the code without making it faster; `pack_padded` is whole-vector masked loads, not
a select per float. Rolled, the unet's self-attention module is a third of the IR and of the
LLVM time, and its kernels as fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from backends.llvm import jit as llvm_jit
from backends.llvm.emit import I64, PTR, counted_loop

F32 = ir.FloatType()
LANES = 16
V16 = ir.VectorType(F32, LANES)
I1 = ir.IntType(1)
I32 = ir.IntType(32)


@dataclass(frozen=True)
class RegisterTiles:
    """The register tiles of one vector width (Note [Register tiles per instruction set])."""

    rows: int  # rows of a product tile
    cols: int  # vectors of LANES floats in a product tile's row
    output_accumulators: int  # vectors of LANES floats an output tile may hold

    @property
    def keys(self) -> int:
        """Columns of a product tile (keys of a scores tile)."""
        return self.cols * LANES


AVX512_TILES = RegisterTiles(rows=8, cols=2, output_accumulators=24)
AVX2_TILES = RegisterTiles(rows=6, cols=1, output_accumulators=6)


def register_tiles() -> RegisterTiles:
    """The tiles for the vector width the llvm backend compiles for."""
    return AVX512_TILES if llvm_jit.host().vector_bits >= 512 else AVX2_TILES


def vectors(width: int) -> int:
    """Vectors of LANES floats covering `width` columns."""
    return -(-width // LANES)


def padded_keys(keys: int) -> int:
    """`keys` rounded up to whole scores tiles: the row length of KT and of the scores."""
    tile = register_tiles().keys
    return -(-keys // tile) * tile


def output_rows(width: int) -> int:
    """Rows per output tile of `width` columns: as many as the target's output accumulators
    allow, <= 8."""
    return max(1, min(8, register_tiles().output_accumulators // vectors(width)))


class Accumulators:
    """`rows x cols` vector accumulators: allocas emitted where `entry` stands (the function's
    entry block, so LLVM promotes them to registers)."""

    def __init__(self, entry: ir.IRBuilder, rows: int, cols: int, name: str) -> None:
        self.slots = [
            [entry.alloca(V16, name=f"{name}{r}_{c}") for c in range(cols)] for r in range(rows)
        ]

    def zero(self, b: ir.IRBuilder, rows: int, cols: int) -> None:
        for r in range(rows):
            for c in range(cols):
                b.store(ir.Constant(V16, [0.0] * LANES), self.slots[r][c])

    def fma(self, b: ir.IRBuilder, r: int, c: int, x: ir.Value, y: ir.Value) -> None:
        slot = self.slots[r][c]
        b.store(_fmuladd(b, x, y, b.load(slot, typ=V16)), slot)

    def get(self, b: ir.IRBuilder, r: int, c: int) -> ir.Value:
        return b.load(self.slots[r][c], typ=V16)


def pack_transposed(
    b: ir.IRBuilder, src: ir.Value, ld: int, rows: int, cols: int, dst: ir.Value, ld_dst: int
) -> None:
    """dst[c, r] = src[r, c] for r < `rows`, c < `cols` (src rows `ld` floats apart), and
    zeros for `rows` <= r < `ld_dst`: K [keys, D] -> KT [D, padded keys]."""
    with counted_loop(b, I64(0), I64(rows), "pk") as r:
        row = b.gep(src, [b.mul(r, I64(ld))], source_etype=F32)
        with counted_loop(b, I64(0), I64(cols), "pc") as c:
            x = b.load(b.gep(row, [c], source_etype=F32), typ=F32)
            b.store(x, b.gep(dst, [b.add(b.mul(c, I64(ld_dst)), r)], source_etype=F32))
    with (
        counted_loop(b, I64(0), I64(cols), "zc") as c,
        counted_loop(b, I64(rows), I64(ld_dst), "zk") as r,
    ):
        b.store(
            ir.Constant(F32, 0.0), b.gep(dst, [b.add(b.mul(c, I64(ld_dst)), r)], source_etype=F32)
        )


def pack_padded(
    b: ir.IRBuilder, src: ir.Value, ld: int, rows: int, cols: int, dst: ir.Value
) -> None:
    """dst[r, :] = src[r, :cols] then zeros to a whole number of vectors: V [keys, Dv] ->
    [keys, 16 NV], so every output tile's load is a whole vector."""
    width = vectors(cols) * LANES
    with counted_loop(b, I64(0), I64(rows), "pv", rolled=True) as r:
        row, out = b.mul(r, I64(ld)), b.mul(r, I64(width))
        for c in range(vectors(cols)):
            x = _load(b, src, b.add(row, I64(LANES * c)), min(LANES, cols - LANES * c))
            _store(b, x, dst, b.add(out, I64(LANES * c)))


def scores(
    b: ir.IRBuilder,
    acc: Accumulators,
    q: tuple[ir.Value, int],
    kt: tuple[ir.Value, int],
    out: tuple[ir.Value, int],
    rows: ir.Value,
    keys: ir.Value,
    depth: int,
    scale: float,
) -> None:
    """out[r, s] = scale * sum_d q[r, d] kt[d, s] for r < `rows` and s below `keys` rounded up
    to whole tiles (columns past `keys` are left with what the padded KT gives). Each operand
    is (pointer, row stride in floats)."""
    tile = register_tiles().keys
    tiles = b.udiv(b.add(keys, I64(tile - 1)), I64(tile))
    product(b, acc, q, kt, out, rows, (tiles, None), depth, scale)


Operand = tuple[ir.Value, int] | tuple[ir.Value, int, int]
"""(pointer, row stride) of a row-major matrix, or (pointer, row stride, column stride)."""
Bias = tuple[ir.Value, str]
"""(pointer, "row" or "col"): a vector added to every column (one value a row) or every row."""


def product(
    b: ir.IRBuilder,
    acc: Accumulators,
    a: Operand,
    bm: tuple[ir.Value, int],
    out: tuple[ir.Value, int],
    rows: ir.Value,
    cols: tuple[ir.Value, int | None],
    depth: int,
    scale: float = 1.0,
    bias: Bias | None = None,
) -> None:
    """out[r, j] = scale * sum_d a[r, d] bm[d, j] (+ bias[r] or bias[j]) for r < `rows`:
    `cols` is (whole tiles of `register_tiles().keys` columns, then the columns of a last
    partial tile, None for none), the partial tile read and written under masks. `a` may be
    any strided matrix (one scalar of it is broadcast at a time); `bm` and `out` are (pointer,
    row stride) with unit column stride; the bias pointer is at the same origin as `out`."""
    tiles, tail = cols
    shape = register_tiles()
    whole = b.mul(b.udiv(rows, I64(shape.rows)), I64(shape.rows))
    for lo, hi, height in ((I64(0), whole, shape.rows), (whole, rows, 1)):
        count = b.udiv(b.sub(hi, lo), I64(height)) if height > 1 else b.sub(hi, lo)
        with counted_loop(b, I64(0), count, f"pg{height}") as g:
            r0 = b.add(lo, b.mul(g, I64(height)) if height > 1 else g)
            with counted_loop(b, I64(0), tiles, "pt") as t:
                s0 = b.mul(t, I64(shape.keys))
                _tile(b, acc, a, bm, out, (r0, height), (s0, None), depth, scale, bias)
            if tail:
                s0 = b.mul(tiles, I64(shape.keys))
                _tile(b, acc, a, bm, out, (r0, height), (s0, tail), depth, scale, bias)


def _tile(
    b: ir.IRBuilder,
    acc: Accumulators,
    a: Operand,
    bm: tuple[ir.Value, int],
    out: tuple[ir.Value, int],
    at_rows: tuple[ir.Value, int],
    at_cols: tuple[ir.Value, int | None],
    depth: int,
    scale: float,
    bias: Bias | None,
) -> None:
    """One tile of `product`: `at_rows` (first row, height), `at_cols` (first column, and the
    columns of a partial last tile or None for a whole one)."""
    (r0, height), (s0, tail) = at_rows, at_cols
    n = register_tiles().cols
    full = n * LANES if tail is None else tail
    lanes = [max(0, min(LANES, full - LANES * c)) for c in range(n)]
    cols = [c for c in range(n) if lanes[c]]
    acc.zero(b, height, n)
    with counted_loop(b, I64(0), I64(depth), "d", rolled=True) as d:
        at = b.add(b.mul(d, I64(bm[1])), s0)
        k = {c: _load(b, bm[0], b.add(at, I64(LANES * c)), lanes[c]) for c in cols}
        col = d if len(a) == 2 or a[2] == 1 else b.mul(d, I64(a[2]))
        for r in range(height):
            x = b.load(b.gep(a[0], [_at(b, r0, r, a[1], col)], source_etype=F32), typ=F32)
            x = _splat(b, x)
            for c in cols:
                acc.fma(b, r, c, x, k[c])
    factor = _splat(b, ir.Constant(F32, scale))
    add = {}
    if bias is not None and bias[1] == "col":
        add = {
            c: _load(b, bias[0], b.add(s0, I64(LANES * c)), lanes[c]) for c in cols
        }  # fmt: skip
    for r in range(height):
        if bias is not None and bias[1] == "row":
            row = b.add(r0, I64(r)) if r else r0
            add = dict.fromkeys(cols, _splat(b, _scalar(b, bias[0], row)))
        for c in cols:
            at = _at(b, r0, r, out[1], b.add(s0, I64(LANES * c)))
            value = acc.get(b, r, c)
            value = b.fmul(value, factor) if scale != 1.0 else value
            value = b.fadd(value, add[c]) if add else value
            _store(b, value, out[0], at, lanes[c])


def output(
    b: ir.IRBuilder,
    acc: Accumulators,
    e: tuple[ir.Value, int],
    v: tuple[ir.Value, int],
    out: tuple[ir.Value, int],
    rows: ir.Value,
    keys: ir.Value,
    width: int,
    inverses: ir.Value,
) -> None:
    """out[r, j] = inverses[r] * sum_{s < keys} e[r, s] v[s, j] for r < `rows`, j < `width`;
    `v` holds whole vectors per row (`pack_padded`, or a width that is a multiple of 16).
    Each operand is (pointer, row stride in floats)."""
    height = output_rows(width)
    whole = b.mul(b.udiv(rows, I64(height)), I64(height))
    with counted_loop(b, I64(0), b.udiv(whole, I64(height)), "og") as g:
        _output_tile(b, acc, e, v, out, b.mul(g, I64(height)), height, keys, width, inverses)
    with counted_loop(b, whole, rows, "or") as r:
        _output_tile(b, acc, e, v, out, r, 1, keys, width, inverses)


def _output_tile(
    b: ir.IRBuilder,
    acc: Accumulators,
    e: tuple[ir.Value, int],
    v: tuple[ir.Value, int],
    out: tuple[ir.Value, int],
    r0: ir.Value,
    height: int,
    keys: ir.Value,
    width: int,
    inverses: ir.Value,
) -> None:
    cols = vectors(width)
    acc.zero(b, height, cols)
    with counted_loop(b, I64(0), keys, "s", rolled=True) as s:
        at = b.mul(s, I64(v[1]))
        vs = [_load(b, v[0], b.add(at, I64(LANES * c))) for c in range(cols)]
        for r in range(height):
            x = b.load(b.gep(e[0], [_at(b, r0, r, e[1], s)], source_etype=F32), typ=F32)
            x = _splat(b, x)
            for c in range(cols):
                acc.fma(b, r, c, x, vs[c])
    tail = width - (cols - 1) * LANES
    for r in range(height):
        row = b.add(r0, I64(r)) if r else r0
        inv = _splat(b, b.load(b.gep(inverses, [row], source_etype=F32), typ=F32))
        for c in range(cols):
            value = b.fmul(acc.get(b, r, c), inv)
            at = _at(b, r0, r, out[1], I64(LANES * c))
            _store(b, value, out[0], at, tail if c == cols - 1 else LANES)


def _at(b: ir.IRBuilder, r0: ir.Value, r: int, ld: int, col: ir.Value) -> ir.Value:
    """The element index of (r0 + r, col) in rows `ld` apart."""
    row = b.add(r0, I64(r)) if r else r0
    return b.add(b.mul(row, I64(ld)), col)


def _scalar(b: ir.IRBuilder, base: ir.Value, at: ir.Value) -> ir.Value:
    return b.load(b.gep(base, [at], source_etype=F32), typ=F32)


def _splat(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    one = b.insert_element(ir.Constant(V16, ir.Undefined), x, I32(0))
    zeros = ir.Constant(ir.VectorType(I32, LANES), [0] * LANES)
    return b.shuffle_vector(one, ir.Constant(V16, ir.Undefined), zeros)


MASK = ir.VectorType(I1, LANES)


def _mask(n: int) -> ir.Constant:
    return ir.Constant(MASK, [1] * n + [0] * (LANES - n))


def _load(b: ir.IRBuilder, base: ir.Value, at: ir.Value, n: int = LANES) -> ir.Value:
    """base[at : at + 16] as a vector; only the first `n` lanes read (the rest zero) when
    n < 16 (`llvm.masked.load`)."""
    ptr = b.gep(base, [at], source_etype=F32)
    if n == LANES:
        return b.load(ptr, typ=V16, align=4)
    name = "llvm.masked.load.v16f32.p0"
    fn = b.module.globals.get(name) or ir.Function(
        b.module, ir.FunctionType(V16, [PTR, I32, MASK, V16]), name
    )
    return b.call(fn, [ptr, I32(4), _mask(n), ir.Constant(V16, [0.0] * LANES)])


def _store(b: ir.IRBuilder, value: ir.Value, base: ir.Value, at: ir.Value, n: int = LANES) -> None:
    """value to base[at : at + 16]; only its first `n` lanes when n < 16 (`llvm.masked.store`)."""
    ptr = b.gep(base, [at], source_etype=F32)
    if n == LANES:
        b.store(value, ptr, align=4)
        return
    name = "llvm.masked.store.v16f32.p0"
    fn = b.module.globals.get(name) or ir.Function(
        b.module, ir.FunctionType(ir.VoidType(), [V16, PTR, I32, MASK]), name
    )
    b.call(fn, [value, ptr, I32(4), _mask(n)])


def _fmuladd(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    name = "llvm.fmuladd.v16f32"
    fn = b.module.globals.get(name) or ir.Function(b.module, ir.FunctionType(V16, [V16] * 3), name)
    return b.call(fn, [x, y, z])


__all__ = [
    "Accumulators",
    "Bias",
    "Operand",
    "output",
    "output_rows",
    "pack_padded",
    "pack_transposed",
    "padded_keys",
    "product",
    "scores",
    "vectors",
]
