"""Winograd F(2x2, 3x3)'s output transform as one native kernel, with the convolution's
epilogue fused: `Y = A^T M A + bias + addends`, written straight into the NCHW output.

    for each (n, oc, tile row i), in parallel:           # tiles of 2x2 outputs
        for each tile column j:                          # vectorized: 16 loads per plane row
            m[k] = M[k, oc, (n, i, j)]   k = 0..15       # the 16 GEMM products of the tile
            s = A^T m (per column), y = s A (per row)    # 2x2 outputs
            out[n, oc, 2i + a, 2j + b] = y[a][b] + bias[oc] + sum(addend[n, oc, 2i + a, 2j + b])

The two output columns of a tile are interleaved stores, which LLVM vectorizes with shuffles;
an odd output width or height ends with a half tile. The kernel may cover a *chunk* of the
tiles only (`Band`: some images, or some tile rows of one image; `backends.llvm.winograd`):
its output and addend pointers then point at the chunk's first element, and it indexes them
with the whole output's strides. It may also cover one *group of transform rows* only (Note
[Winograd in groups of rows]): the group with row 0 writes the output, later groups add their
share into it. *Addends* are the convolution's epilogue
when it is a chain of adds of tensors read through strided views (a time embedding broadcast
over the pixels, a residual): `epilogue` recognizes them, so the epilogue costs no pass over
the output of its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from llvmlite import ir

from backends.llvm.emit import I64, PTR, counted_loop, parallel_entry, thread_share
from backends.llvm.kernel import KernelModule, Param
from compiler.core.schedule import VIEW_OPS, ExternCall, KernelSpec, Step, index_map
from compiler.core.types import DType, TensorType

F32 = ir.FloatType()
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))  # F(2x2, 3x3)'s output transform matrix


@dataclass(frozen=True)
class Band:
    """The tiles one call of the kernel covers: `images` images of `rows` tile rows each, of
    which `out_rows` output rows are written (`2 rows`, or one less where an odd output height
    ends in a half tile row)."""

    images: int
    rows: int
    out_rows: int


@dataclass(frozen=True)
class Addend:
    """A tensor added to the output, read at (n, oc, h, w) with these element strides (0 where
    it broadcasts) from `offset` in its root."""

    root: str
    type: TensorType  # the root's type
    strides: tuple[int, int, int, int]
    offset: int


def epilogue(
    e: ExternCall, part: Step | None, later: list[Step], outputs: tuple[str, ...]
) -> tuple[str, list[Addend]] | None:
    """(output, addends) when `part`, the native step right after the convolution `e`, is
    `out = conv + a1 + a2 ...` with each `a` a float32 tensor read through strided views and
    broadcastable by strides (unit or zero stride along the width), and nothing else reads the
    convolution's result; else None."""
    y = e.node.out.name
    if not isinstance(part, KernelSpec) or y in outputs or len(part.outputs) != 1:
        return None
    for st in later:
        if y in {v.name for v in st.inputs}:
            return None
    shape = e.node.out.type.shape
    types = {v.name: v.type for v in part.inputs} | {n.out.name: n.out.type for n in part.body}
    producers = {n.out.name: n for n in part.body}
    acc, addends = y, []
    for n in part.body:
        if n.op in VIEW_OPS:
            continue
        if n.op != "add" or len(n.inputs) != 2 or acc not in n.inputs or n.inputs[0] == n.inputs[1]:
            return None
        if n.out.type != e.node.out.type:
            return None
        other = n.inputs[1] if n.inputs[0] == acc else n.inputs[0]
        chain = []
        while other in producers and producers[other].op in VIEW_OPS:
            chain.append(producers[other])
            other = producers[other].inputs[0]
        if other in producers or other == y or types[other].dtype is not DType.f32:
            return None
        mapped = index_map(chain[::-1], types[other])
        if mapped is None:
            return None
        a_shape, a_strides, offset = mapped
        lead = len(shape) - len(a_shape)
        if lead < 0:
            return None
        a_shape, a_strides = (1,) * lead + a_shape, (0,) * lead + a_strides
        strides = []
        for want, have, st in zip(shape, a_shape, a_strides, strict=True):
            if have not in (1, want):
                return None
            strides.append(0 if have == 1 else st)
        if strides[3] not in (0, 1):
            return None
        addends.append(Addend(other, types[other], tuple(strides), offset))  # type: ignore[arg-type]
        acc = n.out.name
    if acc != part.outputs[0]:
        return None
    return acc, addends


def render(
    n: int,
    oc: int,
    size: tuple[int, int],
    bias: bool,
    addends: list[Addend],
    out: tuple[str, TensorType],
    name: str,
    band: Band | None = None,
    rows: range = range(4),
) -> KernelModule:
    """The output transform of a convolution with `n` images, `oc` output channels and output
    size (Ho, Wo) (see the module docstring), for the tiles of `band` (default: all of them)
    and the GEMM products of the transform rows `rows` (default: all 4; Note [Winograd in
    groups of rows] in `backends.llvm.winograd`): the group with row 0 writes the output with
    the bias and the addends, every later group adds its share into it. Parameters: `m`
    [4 len(rows), OC, band's tiles], then `bias` [OC] and one pointer per addend (into its
    root, at the band's first element) in row 0's group, then the output (at the band's first
    element)."""
    ho = size[0]
    band = band or Band(n, -(-ho // 2), ho)
    if rows.step != 1 or not 0 <= rows.start < rows.stop <= 4:
        raise ValueError(f"winograd output transform: rows {rows} are not a run within 0..3")
    return _OutputTransform(oc, size, bias, addends, out, name, band, rows).module()


class _OutputTransform:
    def __init__(
        self,
        oc: int,
        size: tuple[int, int],
        bias: bool,
        addends: list[Addend],
        out: tuple[str, TensorType],
        name: str,
        band: Band,
        rows: range,
    ) -> None:
        self.band, self.rows, self.first = band, rows, rows.start == 0
        self.n, self.oc = band.images, oc
        self.ho, self.wo = size  # the whole output's: its strides
        self.th, self.tw = band.rows, -(-self.wo // 2)
        self.count = self.n * self.th * self.tw
        if not self.first:  # a later group adds into the output: no bias, no addends
            bias, addends = False, []
        self.bias, self.addends, self.name = bias, addends, name
        params = [Param("m", "in", TensorType((4 * len(rows), oc, self.count), DType.f32))]
        if bias:
            params.append(Param("bias", "in", TensorType((oc,), DType.f32)))
        params += [Param(f"addend{i}", "in", a.type) for i, a in enumerate(addends)]
        params.append(Param(out[0], "out" if self.first else "inout", out[1]))
        self.params = tuple(params)

    def module(self) -> KernelModule:
        shapes = [(a.strides, a.offset) for a in self.addends]
        key = repr((self.band, self.oc, self.ho, self.wo, self.bias, shapes, self.rows))
        symbol = f"tf_winograd_out_{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        self.m = ir.Module(name=symbol)
        body = self._body(symbol)
        parallel_entry(self.m, symbol, body, [p.name for p in self.params])
        part = "" if self.rows == range(4) else f"[rows {self.rows.start}..{self.rows.stop - 1}]"
        terms = [f"A^T M{part} A"] + (["bias"] if self.bias else [])
        terms += [f"{a.root}{list(a.strides)}" for a in self.addends]
        head = [
            f"; tilefuse Winograd F(2x2,3x3) output transform for {self.name}: "
            f"out[{self.n}, {self.oc}, {self.ho}, {self.wo}] {'=' if self.first else '+='} "
            f"{' + '.join(terms)}; per call "
            f"{self.n} image(s) x {self.th} tile rows ({self.band.out_rows} output rows)",
            f"; args: {', '.join(f'{p.role} {p.name}' for p in self.params)}",
        ]
        stages = (f"winograd output: {self.n * self.oc * self.th} tile rows x {self.tw} tiles",)
        text = "\n".join(head) + "\n" + str(self.m)
        return KernelModule(symbol, text, self.params, 0, True, stages)

    def _body(self, symbol: str) -> ir.Function:
        fnty = ir.FunctionType(ir.VoidType(), [I64, I64] + [PTR] * len(self.params))
        fn = ir.Function(self.m, fnty, f"{symbol}_body")
        fn.linkage = "internal"
        tid, nth, *ptrs = fn.args
        for p, a in zip(self.params, ptrs, strict=True):
            a.name = f"p_{p.name}"
            a.add_attribute("noalias")
        self.ptr = {p.name: a for p, a in zip(self.params, ptrs, strict=True)}
        b = self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        rows = self.n * self.oc * self.th
        lo, hi = thread_share(b, tid, nth, rows)
        with counted_loop(b, lo, hi, "row") as r:
            i = b.urem(r, I64(self.th), name="i")
            q = b.udiv(r, I64(self.th))
            oc = b.urem(q, I64(self.oc), name="oc")
            n = b.udiv(q, I64(self.oc), name="n")
            plane = b.add(
                b.mul(oc, I64(self.count)), b.mul(b.add(b.mul(n, I64(self.th)), i), I64(self.tw))
            )
            h0 = b.mul(i, I64(2))
            base: ir.Value = ir.Constant(F32, 0.0)
            if self.bias:
                base = b.load(b.gep(self.ptr["bias"], [oc], source_etype=F32), typ=F32)
            for k, a in enumerate(self.addends):  # broadcast over the pixels: once per row
                if a.strides[2] == 0 and a.strides[3] == 0:
                    base = b.fadd(base, b.load(self._addend_at(k, n, oc, h0, I64(0)), typ=F32))
            self.row = (n, oc, h0, plane, base)
            full = self.wo // 2
            if self.band.out_rows % 2 == 0:
                self._tiles(full, 2)
            else:
                two = b.icmp_signed("<", b.add(h0, I64(1)), I64(self.band.out_rows))
                with b.if_else(two) as (then, otherwise):
                    with then:
                        self._tiles(full, 2)
                    with otherwise:
                        self._tiles(full, 1)
        b.ret_void()
        return fn

    def _tiles(self, full: int, rows: int) -> None:
        """The tile columns of one tile row, `rows` output rows of them: a loop over the whole
        tiles, then the half tile of an odd width."""
        if full:
            with counted_loop(self.b, I64(0), I64(full), "j") as j:
                self._tile(j, rows, 2)
        if self.wo % 2:
            self._tile(I64(full), rows, 1)

    def _tile(self, j: ir.Value, rows: int, cols: int) -> None:
        b = self.b
        n, oc, h0, plane, base = self.row
        at = b.add(plane, j)
        m = {
            (xi, nu): b.load(
                b.gep(
                    self.ptr["m"],
                    [b.add(at, I64((4 * (xi - self.rows.start) + nu) * self.oc * self.count))],
                    source_etype=F32,
                ),
                typ=F32,
            )
            for xi in self.rows
            for nu in range(4)
        }

        def a_t(z: dict[int, ir.Value], row: int) -> ir.Value | None:
            """Row `row` of A^T applied to the z present (None: no term)."""
            acc: ir.Value | None = None
            for i, coef in enumerate(A_T[row]):
                if coef and i in z:
                    if acc is None:
                        acc = z[i] if coef > 0 else b.fneg(z[i])
                    else:
                        acc = b.fadd(acc, z[i]) if coef > 0 else b.fsub(acc, z[i])
            return acc

        out = self.ptr[self.params[-1].name]
        w0 = b.mul(j, I64(2))
        for a in range(rows):
            s = {nu: a_t({xi: m[xi, nu] for xi in self.rows}, a) for nu in range(4)}
            h = b.add(h0, I64(a))
            row = b.mul(
                b.add(b.mul(b.add(b.mul(n, I64(self.oc)), oc), I64(self.ho)), h), I64(self.wo)
            )
            for bb in range(cols):
                w = b.add(w0, I64(bb))
                share = a_t({nu: v for nu, v in s.items() if v is not None}, bb)
                at_out = b.gep(out, [b.add(row, w)], source_etype=F32)
                if not self.first:
                    if share is not None:
                        b.store(b.fadd(b.load(at_out, typ=F32), share), at_out)
                    continue
                value = base if share is None else b.fadd(share, base)
                for k, ad in enumerate(self.addends):
                    if ad.strides[2] or ad.strides[3]:
                        value = b.fadd(value, b.load(self._addend_at(k, n, oc, h, w), typ=F32))
                b.store(value, at_out)

    def _addend_at(self, k: int, n: ir.Value, oc: ir.Value, h: ir.Value, w: ir.Value) -> ir.Value:
        """Addend `k` at (n, oc, h, w) of the band."""
        b, a = self.b, self.addends[k]
        offset: ir.Value = I64(0)  # the pointer is at the addend's element of the band's start
        for idx, stride in zip((n, oc, h, w), a.strides, strict=True):
            if stride:
                offset = b.add(offset, b.mul(idx, I64(stride)))
        return b.gep(self.ptr[f"addend{k}"], [offset], source_etype=F32)


__all__ = ["Addend", "Band", "epilogue", "render"]
