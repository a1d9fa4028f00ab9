"""Row-reduction Triton kernels: one reduction anchor with its prologue and epilogue.

The anchor's input domain is split into rows (the kept axes; for group_norm (batch, group))
and a row of `RLEN` elements (the reduced axes). Each program takes XBLOCK rows as an
[XBLOCK, RBLOCK] tile, accumulates in fp32 (int64 for integer sums), and then:

- `sum`/`mean`/`amax`/`amin`: the epilogue runs on the [XBLOCK, 1] row results;
- `softmax`, `log_softmax`, `layer_norm`, `rms_norm`, `group_norm`, `cumsum`: the row
  statistics are computed first, then an output pass computes the anchor elementwise from
  them and runs the epilogue (GroupNorm -> SiLU, residual adds) over the row.

Persistent (the TileConfig says so and RBLOCK covers the row): the row is loaded once and
every pass reuses it in registers. Looped: each pass is a `for r0 in range(0, RLEN, RBLOCK)`
loop that recomputes the prologue (softmax keeps an online max and sum in one pass; norms
take a mean pass and a centred variance pass, as the reference does). Prologue values that
are kernel outputs (residual add -> layer_norm writes both) are stored by the first pass.

Note [Split rows are not split]
A looped TileConfig with split_k > 1 (rows split over programs) is launched with one program
per row block: the second launch that would combine partial statistics does not exist yet.
"""

from __future__ import annotations

import math

from backends.index import Lin, Var, linearize, unravel
from backends.triton.ops import TritonUnsupportedError, compute_type, identity
from backends.triton.pointwise import (
    RenderedKernel,
    Storage,
    frame,
    header,
    index_in,
    rounding,
    signature_line,
)
from backends.triton.template import fill
from backends.triton.values import Index, Pointer, TritonValues
from compiler.core.ir import Node
from compiler.core.schedule import KernelSpec
from compiler.core.tile_config import TileConfig, pow2
from compiler.core.types import DType

REDUCING = frozenset({"sum", "mean", "amax", "amin"})
# amax/amin as torch's: a NaN in the row is the result (`amax_`, `amin_` in ops.HELPERS)
TL_REDUCE = {"sum": "tl.sum", "mean": "tl.sum", "amax": "amax_", "amin": "amin_"}

REDUCTION = """
${header}
@triton.jit
def ${name}(${params}):
    ${note}
    xindex = tl.program_id(0) * XBLOCK + tl.arange(0, XBLOCK)[:, None]
    xmask = xindex < ${rows}
    ${body}
"""


# the index variables along each axis of a reduction kernel's masks: an address that does not
# span them (a single row, or a size-1 dimension left out of it) is broadcast to the mask
ROW_MASK_AXES = {"xmask": (frozenset({"xindex"}),),
                 "mask": (frozenset({"xindex"}), frozenset({"rindex"}))}  # fmt: skip


class RowValues(TritonValues):
    """Values of a reduction kernel: the anchor's value is computed from the row statistics
    of the current row (`stats`), which the renderer emits before the output pass."""

    anchor: Node
    current: Index  # the index of the anchor's output at the current tile
    stats: dict[str, str]
    cumsum_input: str = ""

    def block_address(self, address: str, idx: Index, p: Pointer) -> str:
        used = [i for i, n in zip(idx, p.type.shape, strict=True) if n != 1]
        free = frozenset().union(*(i.free() for i in used)) if used else frozenset()
        axes = ROW_MASK_AXES.get(self.mask)
        if axes is None or all(free & axis for axis in axes):
            return super().block_address(address, idx, p)
        return f"{address} + tl.zeros_like({self.mask}).to(tl.int32)"

    def anchor_value(self, node: Node, idx: Index) -> str:
        if node is not self.anchor:
            return super().anchor_value(node, idx)
        shape = node.out.type.shape
        if linearize(idx, shape) != linearize(self.current, shape):
            raise TritonUnsupportedError(
                f"triton backend: kernel {self.spec.name} reads {node.op} ({node.out.name}) at "
                "another row than the one it reduces"
            )
        op, s = node.op, self.stats
        if op in REDUCING:
            return s["row"]
        x = self.value(node.inputs[0], idx)
        if op == "softmax":
            return self.emit(f"tl.exp({x} - {s['max']}) / {s['sum']}")
        if op == "log_softmax":
            return self.emit(f"{x} - {s['max']} - tl.log({s['sum']})")
        if op == "cumsum":
            self.cumsum_input = self.emit(self.masked(x, node))
            return self.emit(f"tl.cumsum({self.cumsum_input}, axis=1) + {s['carry']}")
        y = f"({x} - {s['mean']}) * {s['rstd']}" if op != "rms_norm" else f"{x} * {s['rstd']}"
        params = node.inputs[1:]
        at = (
            (idx[1],)
            if op == "group_norm"
            else idx[len(idx) - len(node.attr("normalized_shape")) :]
        )
        if params:
            y = f"{y} * {self.value(params[0], at)}"
        if len(params) == 2:
            y = f"{y} + {self.value(params[1], at)}"
        return self.emit(y)

    def masked(self, x: str, node: Node) -> str:
        """`x` with masked-off lanes set to the identity of `node`'s reduction."""
        src = self.types[node.inputs[0]].dtype
        fill_value = identity(node.op, src, self.compute)
        if not node.out.type.dtype.is_float and src is not node.out.type.dtype:
            x = f"{self.tensor(x, src)}.to(tl.int64)"
        return f"tl.where({self.mask}, {x}, {fill_value})"


class _Reduction:
    """The renderer's state for one kernel (see the module doc)."""

    def __init__(
        self, spec: KernelSpec, tile: TileConfig, pointers: dict[str, Pointer], compute: str
    ) -> None:
        self.spec = spec
        names = set(spec.anchors)
        self.anchor = next(n for n in spec.body if n.out.name in names)
        x = spec.type_of(self.anchor.inputs[0])
        self.domain = x.shape
        axes = spec.reduction_axes or tuple(range(x.rank))
        if self.anchor.op == "group_norm":
            g = self.anchor.attr("groups")
            self.row_shape = (x.shape[1] // g, *x.shape[2:])
            self.kept_shape = (x.shape[0], g)
        else:
            self.row_shape = tuple(x.shape[d] for d in axes)
            self.kept_shape = tuple(x.shape[d] for d in range(x.rank) if d not in axes)
        self.axes = axes
        self.rows = math.prod(self.kept_shape)
        self.rlen = math.prod(self.row_shape)
        blocks = dict(tile.blocks)
        self.xblock = blocks.get("XBLOCK", 1)
        self.rblock = blocks.get("RBLOCK", pow2(self.rlen))
        self.looped = not (tile.persistent and self.rblock >= self.rlen)
        v = RowValues(spec, pointers, compute)
        v.anchor, v.stats, v.mask = self.anchor, {}, "xmask"
        self.v = v
        self.pointers = pointers
        xs = unravel(Var("xindex", max(self.rows, 1)).lin, self.kept_shape)
        rs = unravel(Var("rindex", max(self.rlen, 1)).lin, self.row_shape)
        self.idx = self._domain_index(xs, rs)
        self.row_idx = self._output_index(xs)
        v.current = self.row_idx if self.anchor.op in REDUCING else self.idx
        self.depends = _descendants(spec, self.anchor.out.name)

    def _domain_index(self, xs: Index, rs: Index) -> Index:
        if self.anchor.op == "group_norm":
            cg = self.row_shape[0]
            return (xs[0], xs[1] * cg + rs[0], *rs[1:])
        kept, red = iter(xs), iter(rs)
        return tuple(next(red) if d in self.axes else next(kept) for d in range(len(self.domain)))

    def _output_index(self, xs: Index) -> Index:
        if self.anchor.op not in REDUCING:
            return self.idx
        out = self.anchor.out.type.shape
        if len(out) == len(self.domain):  # keepdim
            kept = iter(xs)
            return tuple(Lin(0) if d in self.axes else next(kept) for d in range(len(out)))
        return xs

    # ------------------------------------------------------------------ passes

    def open_pass(self) -> None:
        v = self.v
        if self.looped:
            v.push()
            v.line("rindex = r0 + tl.arange(0, RBLOCK)[None, :]")
        elif "rindex" in v.stats:
            v.mask = "mask"
            return
        else:
            v.stats["rindex"] = "rindex"
            v.line("rindex = tl.arange(0, RBLOCK)[None, :]")
        v.line(f"rmask = rindex < {self.rlen}")
        v.line("mask = xmask & rmask")
        v.mask = "mask"

    def close_pass(self, what: str) -> None:
        v = self.v
        if self.looped:
            body = v.pop()
            v.line(f"for r0 in range(0, {self.rlen}, RBLOCK):  # {what}")
            v.lines.extend("    " + line for line in body)
        v.mask = "xmask"

    def row_sum(self, acc: str, expr: str, name: str, reduce: str = "tl.sum") -> str:
        """In a looped pass: `acc` += expr per lane; persistent: the row's reduction."""
        if self.looped:
            self.v.line(f"{acc} += {expr}" if reduce == "tl.sum" else f"{acc} = {expr}")
            return acc
        return self.v.emit(f"{reduce}({expr}, axis=1, keep_dims=True)", name)

    def finish(self, acc: str, name: str, reduce: str = "tl.sum") -> str:
        if self.looped:
            return self.v.emit(f"{reduce}({acc}, axis=1, keep_dims=True)", name)
        return acc

    def zeros(self, name: str, value: str = "0.0", dtype: str = "") -> str:
        if not self.looped:
            return ""
        dtype = dtype or self.v.compute
        return self.v.emit(f"tl.full([XBLOCK, RBLOCK], {value}, {dtype})", name)

    def store_outputs(self, later: bool) -> None:
        """Store the outputs that do (`later`) or do not depend on the anchor, at the index
        of the pass that is open (the row index after a reducing anchor)."""
        v = self.v
        for o in self.spec.outputs:
            if (o in self.depends or o == self.anchor.out.name) != later:
                continue
            shape = self.spec.type_of(o).shape
            if later and self.anchor.op in REDUCING:
                at = index_in(shape, self.row_idx, self.anchor.out.type.shape, f"output {o}")
            else:
                at = index_in(shape, self.idx, self.domain, f"output {o}")
            v.store(self.pointers[f"out:{o}"], at, v.value(o, at))

    def x(self) -> str:
        return self.v.value(self.anchor.inputs[0], self.idx)

    def render(self) -> list[str]:
        op, v, s = self.anchor.op, self.v, self.v.stats
        n = self.rlen
        if op in REDUCING:
            out = self.anchor.out.type.dtype
            acc_type = compute_type(out, v.compute) if op != "mean" else v.compute
            acc = self.zeros(
                "acc", identity(op, self.v.types[self.anchor.inputs[0]].dtype, ""), acc_type
            )
            self.open_pass()
            # the epilogue runs on [XBLOCK, 1] rows: a value of the pass, even one that reads
            # no reduced index, has the pass's [XBLOCK, RBLOCK] shape, so the epilogue reads
            # its own (a looped pass has a scope of its own already)
            v.scopes.append({})
            self.store_outputs(later=False)
            masked = v.masked(self.x(), self.anchor)
            if self.looped and op in ("amax", "amin"):
                masked = f"{'max' if op == 'amax' else 'min'}_nan_({acc}, {masked})"
            row = self.row_sum(acc, masked, "row", TL_REDUCE[op])
            v.scopes.pop()
            self.close_pass(op)
            row = self.finish(row, "row", TL_REDUCE[op])
            s["row"] = v.emit(f"{row} / {n}", "row") if op == "mean" else row
            self.store_outputs(later=True)
            return v.pop()
        if op in ("softmax", "log_softmax"):
            self._softmax_stats()
        elif op in ("layer_norm", "group_norm"):
            acc = self.zeros("acc")
            self.open_pass()
            self.store_outputs(later=False)
            total = self.row_sum(acc, f"tl.where(mask, {self.x()}, 0.0)", "total")
            self.close_pass("mean")
            s["mean"] = v.emit(f"{self.finish(total, 'total')} / {n}", "mean")
            acc = self.zeros("acc")
            self.open_pass()
            d = v.emit(f"tl.where(mask, {self.x()} - {s['mean']}, 0.0)", "d")
            var = self.row_sum(acc, f"{d} * {d}", "var")
            self.close_pass("variance")
            var = self.finish(var, "var")
            s["rstd"] = v.emit(f"1.0 / tl.sqrt({var} / {n} + {self.anchor.attr('eps')!r})", "rstd")
        elif op == "rms_norm":
            acc = self.zeros("acc")
            self.open_pass()
            self.store_outputs(later=False)
            x = self.x()
            ms = self.finish(self.row_sum(acc, f"tl.where(mask, {x} * {x}, 0.0)", "ms"), "ms")
            self.close_pass("mean square")
            s["rstd"] = v.emit(f"1.0 / tl.sqrt({ms} / {n} + {self.anchor.attr('eps')!r})", "rstd")
        elif op == "cumsum":
            if len(self.row_shape) != 1:
                raise TritonUnsupportedError("triton backend: cumsum over more than one axis")
            dtype = compute_type(self.anchor.out.type.dtype, v.compute)
            s["carry"] = v.emit(f"tl.zeros([XBLOCK, 1], {dtype})", "carry")
            self.open_pass()
            self.store_outputs(later=False)
            self.store_outputs(later=True)
            if self.looped:
                carry = s["carry"]
                v.line(f"{carry} = {carry} + tl.sum({v.cumsum_input}, axis=1, keep_dims=True)")
            self.close_pass("prefix sums")
            return v.pop()
        self.open_pass()
        self.store_outputs(later=True)
        self.close_pass("output")
        return v.pop()

    def _softmax_stats(self) -> None:
        v, s = self.v, self.v.stats
        inf = 'float("inf")'
        if self.looped:  # online: one pass keeps the running max and the rescaled sum per lane
            m, acc = self.zeros("m", f"-{inf}"), self.zeros("acc")
            self.open_pass()
            self.store_outputs(later=False)
            xm = v.emit(f"tl.where(mask, {self.x()}, -{inf})", "xm")
            new = v.emit(f"tl.maximum({m}, {xm})", "m_new")
            safe = v.emit(f"tl.where({new} == -{inf}, 0.0, {new})", "m_safe")
            v.line(f"{acc} = {acc} * tl.exp({m} - {safe}) + tl.exp({xm} - {safe})")
            v.line(f"{m} = {new}")
            self.close_pass("max and sum")
            top = v.emit(f"tl.max({m}, axis=1, keep_dims=True)", "row_max")
            s["max"] = v.emit(f"tl.where(tl.abs({top}) < {inf}, {top}, 0.0)", "row_max")
            s["sum"] = v.emit(
                f"tl.sum({acc} * tl.exp({m} - {s['max']}), axis=1, keep_dims=True)", "row_sum"
            )
            return
        self.open_pass()
        self.store_outputs(later=False)
        xm = v.emit(f"tl.where(mask, {self.x()}, -{inf})", "xm")
        top = v.emit(f"tl.max({xm}, axis=1, keep_dims=True)", "row_max")
        s["max"] = v.emit(f"tl.where(tl.abs({top}) < {inf}, {top}, 0.0)", "row_max")
        s["sum"] = v.emit(f"tl.sum(tl.exp({xm} - {s['max']}), axis=1, keep_dims=True)", "row_sum")


def _descendants(spec: KernelSpec, name: str) -> set[str]:
    out = {name}
    for n in spec.body:
        if any(i in out for i in n.inputs):
            out.add(n.out.name)
    return out


def render_reduction(
    spec: KernelSpec, tile: TileConfig, strided: frozenset[str], storage: Storage, compute: str
) -> RenderedKernel:
    """A row-reduction kernel: XBLOCK rows per program, persistent or looped over RBLOCK."""
    params, pointers, constants = frame(spec, strided, storage, checks=True)
    r = _Reduction(spec, tile, pointers, compute)
    mode = "persistent: the row in registers" if not r.looped else "looped over the row"
    note = [f"# {r.rows} rows of {r.rlen}, {mode}"]
    if tile.split_k > 1:
        note.append(f"# split_k={tile.split_k} of the tile config: one program per row block")
    body = r.render()
    constexprs = [("XBLOCK", r.xblock), ("RBLOCK", r.rblock), *rounding(body)]
    source = fill(
        REDUCTION,
        header=header(spec),
        name=spec.name,
        params=signature_line(params, [c for c, _ in constexprs]),
        note=note,
        rows=str(r.rows),
        body=body,
    )
    source += "\n"
    return RenderedKernel(
        spec.name,
        source,
        tuple(params),
        tuple(constexprs),
        math.ceil(r.rows / r.xblock),
        tile.num_warps,
        tile.num_stages,
        constants,
        tuple(r.v.checks),
    )


__all__ = ["DType", "render_reduction"]
