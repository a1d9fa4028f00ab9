"""Values at symbolic indices, as Triton statements: how a kernel's IR values are computed.

`TritonValues.value(name, index)` emits the statements computing IR value `name` at a
multi-index of symbolic `Lin` expressions (backends/index.py) over the kernel's index
variables (`offs` in pointwise kernels, `xindex`/`rindex` in reductions) and returns the
Triton variable holding it. Views, pads, concatenations, gathers and nearest upsampling map
the index to their input's (the index maps the llvm backend uses too:
`backends.index_maps.IndexMaps.input_indices`), so every input is read through index
arithmetic, never a copy:

    v2 = tl.load(a_x_ptr + (offs // 5) * a_x_s0 + (offs % 5) * a_x_s1, mask=mask, other=0)
    v3 = (tl.exp(v2.to(tl.float32)))

Values are memoized per scope (a loop body is a scope), so a value read twice at one index is
computed once. Floats are computed in `compute` (fp32, or fp64 for f64 models).

`TileValues` is the same for the heavy kernels (backends/triton/heavy.py): operand tiles of
a matmul, conv2d or attention kernel (raw loads of views, or prologues computed, rounded and
masked) and its epilogue over the accumulator tile. `render_epilogue` is the small hook for
the templates' own tests: the elementwise nodes after an anchor on an accumulator tile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backends.index import Clamp, FloorDiv, Lin, Load, Mod, ScaleFloor, Var, linearize
from backends.index_maps import Index, IndexMaps
from backends.triton.ops import (
    ELEMENTWISE,
    TL_STORAGE,
    TritonUnsupportedError,
    cast_expr,
    compute_type,
    elementwise_expr,
    literal,
    narrow,
)
from compiler.core.ir import Node
from compiler.core.ops.structural import index_reads
from compiler.core.schedule import KernelSpec
from compiler.core.types import DType, TensorType

VIEWS = frozenset({"reshape", "permute", "expand", "slice", "upsample_nearest2d"})


@dataclass(frozen=True)
class Pointer:
    """How a kernel reads one tensor: its pointer parameter and strides in elements (runtime
    stride parameters for graph inputs, which may be non-contiguous; None: contiguous)."""

    param: str
    type: TensorType
    strides: tuple[str, ...] | None = None


class TritonValues(IndexMaps):
    """Emits Triton statements for values of `spec` at symbolic indices (see module doc).
    The reduction renderer subclasses it to give its anchor's value (`anchor_value`)."""

    def __init__(self, spec: KernelSpec, pointers: dict[str, Pointer], compute: str) -> None:
        self.spec = spec
        self.types = {v.name: v.type for v in spec.inputs} | {
            n.out.name: n.out.type for n in spec.body
        }
        self.producers = {n.out.name: n for n in spec.body}
        self.pointers = pointers
        self.compute = compute
        self.mask = "mask"
        self.scopes: list[dict] = [{}]
        self.blocks: list[list[str]] = [[]]
        self.literals: set[str] = set()
        self.count = 0
        self.status = pointers.get("status")  # where index checks write (None: no checks)
        self.checks: list[tuple[str, str, str, int, int]] = []  # `RenderedKernel.checks`

    # ------------------------------------------------------------------ statements

    @property
    def lines(self) -> list[str]:
        return self.blocks[-1]

    def line(self, text: str) -> None:
        self.lines.append(text)

    def emit(self, expr: str, prefix: str = "v") -> str:
        name = f"{prefix}{self.count}"
        self.count += 1
        self.line(f"{name} = {expr}")
        return name

    def push(self) -> None:
        self.scopes.append({})
        self.blocks.append([])

    def pop(self) -> list[str]:
        self.scopes.pop()
        return self.blocks.pop()

    # ------------------------------------------------------------------ indices

    def lin(self, e: Lin) -> str:
        """An index expression as Triton integer arithmetic."""
        parts = []
        for atom, coeff in e.terms:
            term = self._atom(atom)
            parts.append(term if coeff == 1 else f"{term} * {coeff}")
        if e.const or not parts:
            parts.append(str(e.const))
        return parts[0] if len(parts) == 1 else "(" + " + ".join(parts) + ")"

    def _atom(self, a: object) -> str:
        if isinstance(a, Var):
            return a.name
        key = ("atom", a)
        hit = self._lookup(key)
        if hit is not None:
            return hit
        if isinstance(a, FloorDiv | Mod):
            x, lo = self.lin(a.x), a.x.bounds()[0]
            shift = 0 if lo >= 0 else -int(lo // a.k)  # Triton divides toward zero: shift up
            x = f"({x} + {shift * a.k})" if shift else x
            expr = f"{x} // {a.k} - {shift}" if isinstance(a, FloorDiv) and shift else None
            op = "//" if isinstance(a, FloorDiv) else "%"
            expr = expr or f"{x} {op} {a.k}"
        elif isinstance(a, Clamp):
            expr = f"tl.minimum(tl.maximum({self.lin(a.x)}, {a.lo}), {a.hi})"
        elif isinstance(a, Load):
            v = self.value(a.name, a.index)
            expr = f"{v}.to(tl.int64)"
            if a.wrap:
                expr = f"tl.where({v} < 0, {v} + {a.wrap}, {v}).to(tl.int64)"
        elif isinstance(a, ScaleFloor):  # x >= 0: truncation is floor
            x = self.lin(a.x)
            expr = f"tl.minimum(({x}.to(tl.float64) * {a.step!r}).to(tl.int64), {a.hi})"
        else:
            raise TypeError(a)
        return self._cache(key, self.emit(expr, "i"))

    def address(self, p: Pointer, idx: Index) -> str:
        if p.strides is None:
            return self.lin(linearize(idx, p.type.shape))
        terms = [
            f"{self.lin(i)} * {s}"
            for i, s, n in zip(idx, p.strides, p.type.shape, strict=True)
            if n != 1 and i.constant() != 0
        ]
        return " + ".join(terms) or "0"

    # ------------------------------------------------------------------ values

    def value(self, name: str, idx: Index) -> str:
        """The variable holding IR value `name` at `idx` (in its compute type)."""
        key = ("v", name, idx)
        hit = self._lookup(key)
        if hit is not None:
            return hit
        node = self.producers.get(name)
        if node is None or node.op == "constant":
            out = self.load(name, idx)
        elif node.op in ELEMENTWISE or node.op in ("cast", "rope"):
            out = self._compute_node(node, idx)
        elif node.op in VIEWS:
            ((src, sidx),) = self.input_indices(node, idx)
            out = self.value(src, sidx)
        elif node.op in ("embedding", "index"):
            reads = self.input_indices(node, idx)
            self.check_indices(node, dict(reads[:-1]))
            src, sidx = reads[-1]
            out = self.value(src, sidx)
        elif node.op == "pad":
            out = self._pad(node, idx)
        elif node.op == "cat":
            out = self._cat(node, idx)
        elif node.op == "full":
            out = literal(node.attr("value"), node.out.type.dtype)
            self.literals.add(out)
        elif node.op == "arange":
            out = self._arange(node, idx[0])
        else:
            out = self.anchor_value(node, idx)
        return self._cache(key, out)

    def check_indices(self, node: Node, reads: dict[str, Index]) -> None:
        """Check each index tensor `node` reads (at its index in `reads`) where it is read: an
        index out of range writes (which check + 1, the index) into `status`, as the llvm
        backend's kernels do (Note [Index checks] in backends/index_maps.py); the gather
        itself clamps. A kernel without a `status` parameter cannot check: refused."""
        for pos, size, lowest in index_reads(node.op, [self.types[i] for i in node.inputs]):
            if self.status is None:
                raise TritonUnsupportedError(
                    f"triton backend: {node.op} ({node.out.name}) reads indices inside "
                    f"{self.spec.kind} kernel {self.spec.name}, which cannot check them"
                )
            name = node.inputs[pos]
            v = self.tensor(self.value(name, reads[name]), self.types[name].dtype)
            self.checks.append((node.op, node.out.name, node.source, size, lowest))
            bad = self.emit(f"(({v} < {lowest}) | ({v} >= {size})) & {self.mask}", "bad")
            # pointer and values blocks of the mask's shape: an index may span fewer axes
            zero = self.emit(f"tl.zeros_like({bad}).to(tl.int32)", "at")
            wide = f"{zero}.to(tl.int64)"
            status = self.status.param
            self.line(f"tl.atomic_xchg({status} + 1 + {zero}, {v} + {wide}, mask={bad})")
            self.line(f"tl.atomic_xchg({status} + {zero}, {wide} + {len(self.checks)}, mask={bad})")

    def anchor_value(self, node: Node, idx: Index) -> str:
        raise TritonUnsupportedError(
            f"triton backend: {node.op} ({node.out.name}) cannot be computed inside "
            f"{self.spec.kind} kernel {self.spec.name}"
        )

    def load(self, name: str, idx: Index) -> str:
        p = self.pointers[name]
        address = self.block_address(self.address(p, idx), idx, p)
        expr = f"tl.load({p.param} + {address}, mask={self.mask}, other=0)"
        if p.type.dtype.is_float:
            expr += f".to({self.compute})"
        return self.emit(expr)

    def block_address(self, address: str, idx: Index, p: Pointer) -> str:
        """`address` (of `p` at `idx`) as a block of the mask's shape where it could be
        smaller (Triton broadcasts a load's mask to its pointer, not the pointer to the
        mask): here only an address of one element (no index of a dimension longer than 1
        depends on a kernel variable, an index read from a constant included), as every
        other index spans the kernel's one axis."""
        if not any(i.free() for i, n in zip(idx, p.type.shape, strict=True) if n != 1):
            return f"{address} + tl.zeros_like({self.mask}).to(tl.int32)"
        return address

    def tensor(self, v: str, dtype: DType) -> str:
        """`v` as a Triton tensor (a literal becomes a one-element block)."""
        if v not in self.literals:
            return v
        return f"tl.full([1], {v}, {compute_type(dtype, self.compute)})"

    def _compute_node(self, node: Node, idx: Index) -> str:
        reads = self.input_indices(node, idx)
        args = [self.value(i, j) for i, j in reads]
        if node.op == "cast":
            src = self.types[node.inputs[0]].dtype
            expr = cast_expr(self.tensor(args[0], src), src, node.attr("dtype"), self.compute)
            return self.emit(expr)
        if node.op == "rope":
            return self._rope(node, idx, args)
        if node.op == "pow" and args[1] in self.literals:
            return self._pow(args[0], float(eval(args[1], {"float": float})), node)
        if args and all(a in self.literals for a in args):
            args[0] = self.tensor(args[0], self.types[node.inputs[0]].dtype)
        return self.emit(elementwise_expr(node.op, args, dict(node.attrs)))

    def _pow(self, x: str, y: float, node: Node) -> str:
        """x ** y for a constant y: products and roots where exact, else the helper."""
        x = self.tensor(x, self.types[node.inputs[0]].dtype)
        exact = {1.0: "{0}", 2.0: "{0} * {0}", 3.0: "{0} * {0} * {0}", 0.5: "tl.sqrt({0})",
                 -1.0: "1.0 / {0}", -0.5: "1.0 / tl.sqrt({0})", 0.0: "{0} * 0.0 + 1.0"}  # fmt: skip
        if y in exact:
            return self.emit("(" + exact[y].format(x) + ")")
        return self.emit(f"pow_({x}, tl.full([1], {y!r}, {self.compute}))")

    def _rope(self, node: Node, idx: Index, args: list[str]) -> str:
        """x * cos + rotate_half(x) * sin: the rotated half is x at the partner index."""
        x, cos, sin = args
        d = self.types[node.inputs[0]].shape[-1]
        half = d // 2
        partner = self.value(node.inputs[0], (*idx[:-1], (idx[-1] + half) % d))
        j = self.lin(idx[-1])
        rotated = f"tl.where({j} < {half}, -{partner}, {partner})"
        return self.emit(f"{x} * {cos} + {rotated} * {sin}")

    def _pad(self, node: Node, idx: Index) -> str:
        x = self.types[node.inputs[0]]
        inside = []
        for i, (lo, _), n in zip(idx, node.attr("pads"), x.shape, strict=True):
            j = i - lo
            if not j.within(0, n - 1):
                jv = self.lin(j)
                inside.append(f"({jv} >= 0) & ({jv} < {n})")
        ((src, sidx),) = self.input_indices(node, idx)
        inner = self.value(src, sidx)
        if not inside:
            return inner
        fill_value = literal(node.attr("value"), node.out.type.dtype)
        return self.emit(f"tl.where({' & '.join(inside)}, {inner}, {fill_value})")

    def _cat(self, node: Node, idx: Index) -> str:
        d = node.attr("dim") % len(idx)
        pieces = self._cat_pieces(node, idx)
        ends, off = [], 0
        for name in node.inputs:
            off += self.types[name].shape[d]
            ends.append(off)
        p, j = pieces[-1]
        result = self.value(node.inputs[p], j)
        at = self.lin(idx[d]) if len(pieces) > 1 else ""
        for p, j in reversed(pieces[:-1]):
            piece = self.value(node.inputs[p], j)
            result = self.emit(f"tl.where({at} < {ends[p]}, {piece}, {result})")
        return result

    def _arange(self, node: Node, i: Lin) -> str:
        start, step, dtype = node.attr("start"), node.attr("step"), node.out.type.dtype
        if not i.terms:  # one element read (a dim of size 1): a number, not an expression
            out = literal(start + step * i.const, dtype)
            self.literals.add(out)
            return out
        at = self.lin(i)
        if dtype.is_float:
            f64 = f"{at}.to(tl.float64) * {float(step)!r} + {float(start)!r}"
            return self.emit(f"({f64}).to({self.compute})")
        expr = f"{at}" + (f" * {step}" if step != 1 else "") + (f" + {start}" if start else "")
        return self.emit(f"({expr}).to({TL_STORAGE[dtype]})")

    def store(self, p: Pointer, idx: Index, v: str) -> None:
        v = self.tensor(v, p.type.dtype)
        d = p.type.dtype
        value = narrow(f"({v})", d) if d is not DType.bool else f"{v} != 0"
        address = self.block_address(self.address(p, idx), idx, p)
        self.line(f"tl.store({p.param} + {address}, {value}, mask={self.mask})")


# program-id scalars of the heavy kernels: free in any row or column mask
TILE_SCALARS = frozenset({"pid_b", "pid_g", "b", "h", "kv_h"})


class TileValues(TritonValues):
    """Values of a heavy kernel: an anchor's value is its accumulator tile (`anchor_tiles`:
    anchor -> (the tile's index, the expression)), valid only at that index. `narrow_masks`
    lists (index variables, mask) pairs: a load whose index uses only those variables takes
    that (row or column) mask, and so loads one row or column instead of a tile. Loads and
    stores whose index does not span the mask's axes (a GEMM with M = 1, a scalar
    timestep) get a pointer block of the mask's shape."""

    def __init__(self, spec: KernelSpec, pointers: dict[str, Pointer], compute: str) -> None:
        super().__init__(spec, pointers, compute)
        self.anchor_tiles: dict[str, tuple[Index, str]] = {}
        self.narrow_masks: list[tuple[frozenset[str], str]] = []
        self.mask_axes: dict[str, tuple[frozenset[str], ...]] = {}

    def block_address(self, address: str, idx: Index, p: Pointer) -> str:
        """Broadcast to the mask unless the index spans each of its axes (`mask_axes`: the
        index variables along each axis of a mask; an unknown mask is always broadcast).
        Size-1 dims of `p` are not in its address, so their indices span nothing."""
        used = [i for i, n in zip(idx, p.type.shape, strict=True) if n != 1]
        free = frozenset().union(*(i.free() for i in used)) if used else frozenset()
        axes = self.mask_axes.get(self.mask)
        if axes is not None and all(free & axis for axis in axes):
            return address
        return f"{address} + tl.zeros_like({self.mask}).to(tl.int32)"

    def anchor_value(self, node: Node, idx: Index) -> str:
        hit = self.anchor_tiles.get(node.out.name)
        if hit is None:
            return super().anchor_value(node, idx)
        want, expr = hit
        shape = node.out.type.shape
        if linearize(idx, shape) != linearize(want, shape):
            raise TritonUnsupportedError(
                f"triton backend: kernel {self.spec.name} reads {node.op} ({node.out.name}) "
                "at another index than its own tile (a shifted or gathered epilogue)"
            )
        return expr

    def load(self, name: str, idx: Index) -> str:
        free = frozenset().union(*(i.free() for i in idx)) if idx else frozenset()
        for allowed, mask in self.narrow_masks:
            if free <= allowed | TILE_SCALARS:
                outer, self.mask = self.mask, mask
                try:
                    return super().load(name, idx)
                finally:
                    self.mask = outer
        return super().load(name, idx)

    def raw(self, name: str, idx: Index) -> str | None:
        """`name` at `idx` loaded in its storage dtype when it is a view of a kernel input
        (or constant); None when the kernel computes it. (Graph inputs may arrive wider than
        they are stored: `Compiled` passes floats in the compute type.)"""
        while name in self.producers and self.producers[name].op in VIEWS:
            ((name, idx),) = self.input_indices(self.producers[name], idx)
        node = self.producers.get(name)
        if node is not None and node.op != "constant":
            return None
        p = self.pointers[name]
        address = self.block_address(self.address(p, idx), idx, p)
        load = f"tl.load({p.param} + {address}, mask={self.mask}, other=0.0)"
        if p.type.dtype in (DType.f16, DType.bf16):  # exact; a no-op unless passed wider
            load += f".to({TL_STORAGE[p.type.dtype]})"
        return self.emit(load)

    def operand(self, name: str, idx: Index, dtype: DType, shape: str) -> str:
        """The dot operand tile of `name` at `idx` ([shape], in `dtype`): raw for a view
        of an input; a computed one rounded to `dtype` and zero outside the mask. Its values
        are its own: laid out along its mask's axes (a value read at a constant index too,
        broadcast to the mask), they are not another operand's."""
        self.scopes.append({})
        try:
            v = self.raw(name, idx)
            if v is None:
                x = self.tensor(self.value(name, idx), self.types[name].dtype)
                zeroed = f"tl.where({self.mask}, {x}, 0.0)"
                narrowed = narrow(zeroed, dtype) if dtype in (DType.f16, DType.bf16) else zeroed
                v = self.emit(narrowed)
            return self.emit(f"tl.broadcast_to({v}, {shape})")
        finally:
            self.scopes.pop()


def render_epilogue(
    nodes: Sequence[Node],
    acc: str,
    anchor: str,
    outputs: Sequence[str],
    load: Callable[[str], str],
    *,
    compute: str = "tl.float32",
) -> tuple[list[str], dict[str, str]]:
    """The Triton statements of an anchor's epilogue, for the matmul/conv/attention templates.

    `nodes` are the KernelSpec body nodes after the anchor (`anchor` is its IR name), `acc` the
    Triton variable holding the anchor's result tile (fp32, e.g. [BLOCK_M, BLOCK_N]), and
    `load(name)` returns a Triton expression that loads kernel input `name` at the tile's
    indices (the caller knows its strides and masks, and broadcasts size-1 dims). Returns the
    statements (no stores) and, per name in `outputs`, the variable holding its tile:

        # body: v0 = matmul(x, w); v1 = add(v0, b); v2 = silu(v1)
        lines, final = render_epilogue(body[1:], "acc", "v0", ("v2",), lambda x: f"{x}_tile")
        # lines: ["e0 = b_tile", "e1 = (acc + e0)", "e2 = (e1 * tl.sigmoid(e1))"]
        # final: {"v2": "e2"}

    Elementwise ops come from the op table (fp32 math; a `cast` rounds as the reference
    does); `reshape`/`expand` of a value are the value itself (the tile is the [M, N] view,
    and the loader broadcasts inputs); `full` is a literal. Any other op (a permute, slice,
    pad or gather inside the epilogue) raises TritonUnsupportedError: the caller should not fuse
    it. The statements may call the helpers of `backends.triton.ops.HELPERS` (`tanh_`, `pow_`,
    and `to_bf16_(x, BF16_BITS)` for a cast to bf16, which needs a `BF16_BITS` constexpr in
    scope): the module holding them must include those helpers."""
    env: dict[str, str] = {anchor: acc}
    literals: set[str] = set()
    types = {n.out.name: n.out.type for n in nodes}
    lines: list[str] = []

    def get(name: str) -> str:
        if name not in env:
            env[name] = f"e{len(lines)}"
            lines.append(f"{env[name]} = {load(name)}")
        return env[name]

    for n in nodes:
        if n.op in ("reshape", "expand"):
            env[n.out.name] = get(n.inputs[0])
            continue
        if n.op == "full":
            env[n.out.name] = literal(n.attr("value"), n.out.type.dtype)
            literals.add(env[n.out.name])
            continue
        args = [get(i) for i in n.inputs]
        if n.op == "cast":
            src = types[n.inputs[0]].dtype if n.inputs[0] in types else DType.f32
            expr = cast_expr(args[0], src, n.attr("dtype"), compute)
        elif n.op in ELEMENTWISE:
            expr = elementwise_expr(n.op, args, dict(n.attrs))
        else:
            raise TritonUnsupportedError(
                f"triton epilogue: {n.op} ({n.out.name}) is not elementwise on the tile"
            )
        env[n.out.name] = f"e{len(lines)}"
        lines.append(f"{env[n.out.name]} = {expr}")
    return lines, {o: env[o] for o in outputs}
