"""Values at symbolic indices: how a kernel's IR values become LLVM values inside its loops.

`IndexedValues` is the half of the kernel generator (`backends.llvm_kernel._Codegen`) that maps
an index of a value to the indices of its inputs (views, broadcasts, pads, concatenations,
gathers: `input_indices`) and emits the value there (`value`), memoized per loop scope so a
value read twice at one index is computed once. It expects the generator's state: `b` (the
builder), `m` (the module), `F` (the float type), `types`, `producers`, `ptrs`, `const_ptrs`
(the constants' arrays), `scratch`, `env` (loop variables), `scopes`, `narrow` (parameters
stored in 16 bits), and the generator's `_reduce` and `_scratch_ptr`.
"""

from __future__ import annotations

from llvmlite import ir

from backends import llvm_math
from backends.llvm_index import (
    Clamp,
    FloorDiv,
    Lin,
    Load,
    Mod,
    ScaleFloor,
    Var,
    linearize,
    reshape_index,
)
from compiler.core.errors import UnsupportedOpError
from compiler.core.ir import Node
from compiler.core.types import DType, TensorType

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
REDUCE_OPS = frozenset({"sum", "mean", "amax", "amin"})
Index = tuple[Lin, ...]


def broadcast(index: Index, shape: tuple[int, ...]) -> Index:
    """The index into an operand of `shape` broadcast against `index` (aligned right)."""
    lead = len(index) - len(shape)
    return tuple(Lin(0) if n == 1 else index[lead + k] for k, n in enumerate(shape))


class IndexedValues:
    # ------------------------------------------------------------------ index maps

    def input_indices(self, node: Node, idx: Index) -> list[tuple[str, Index]]:
        """(input, index) pairs a node reads to produce its value at `idx`."""
        op, ins = node.op, node.inputs
        t = [self.types[i] for i in ins]
        if op == "reshape":
            return [(ins[0], reshape_index(idx, node.out.type.shape, t[0].shape))]
        if op == "permute":
            out = [Lin(0)] * len(idx)
            for i, d in enumerate(node.attr("dims")):
                out[d] = idx[i]
            return [(ins[0], tuple(out))]
        if op == "expand":
            return [(ins[0], broadcast(idx, t[0].shape))]
        if op == "slice":
            d = node.attr("dim") % len(idx)
            out = list(idx)
            out[d] = idx[d] * node.attr("step") + node.attr("start")
            return [(ins[0], tuple(out))]
        if op == "pad":
            clamped = tuple(
                self._clamp(i - lo, n)
                for i, (lo, _), n in zip(idx, node.attr("pads"), t[0].shape, strict=True)
            )
            return [(ins[0], clamped)]
        if op == "cat":
            return [(ins[p], j) for p, j in self._cat_pieces(node, idx)]
        if op == "embedding":
            row = self._clamp(Lin.of(Load(ins[1], idx[:-1])), t[0].shape[0])
            return [(ins[1], idx[:-1]), (ins[0], (row, idx[-1]))]
        if op == "index":
            bshape = node.out.type.shape[: len(node.out.type.shape) - (t[0].rank - len(ins) + 1)]
            lead, rest = idx[: len(bshape)], idx[len(bshape) :]
            rows, reads = [], []
            for k, name in enumerate(ins[1:]):
                at = broadcast(lead, t[k + 1].shape)
                rows.append(self._clamp(Lin.of(Load(name, at, t[0].shape[k])), t[0].shape[k]))
                reads.append((name, at))
            return [*reads, (ins[0], tuple(rows) + tuple(rest))]
        if op == "upsample_nearest2d":
            return [(ins[0], self._upsample_index(node, idx))]
        if op in ("full", "arange", "constant"):
            return []
        if op in REDUCE_OPS or op == "cumsum":
            raise AssertionError("reductions are handled by their stage")
        return [(i, broadcast(idx, ti.shape)) for i, ti in zip(ins, t, strict=True)]

    def _clamp(self, i: Lin, n: int) -> Lin:
        return i if i.within(0, n - 1) else Lin.of(Clamp(i, 0, n - 1))

    def _cat_pieces(self, node: Node, idx: Index) -> list[tuple[int, Index]]:
        d = node.attr("dim") % len(idx)
        lo, hi = idx[d].bounds()
        pieces, off = [], 0
        for p, name in enumerate(node.inputs):
            n = self.types[name].shape[d]
            if hi >= off and lo <= off + n - 1:
                j = list(idx)
                j[d] = self._clamp(idx[d] - off, n)
                pieces.append((p, tuple(j)))
            off += n
        return pieces

    def _upsample_index(self, node: Node, idx: Index) -> Index:
        x = self.types[node.inputs[0]]
        scales = node.attr("scales")
        out = list(idx)
        for axis, size in zip((2, 3), node.attr("size"), strict=True):
            n_in = x.shape[axis]
            step = n_in / size if scales is None else 1.0 / scales[axis - 2]
            k = round(1 / step) if step else 0
            if k >= 1 and k & (k - 1) == 0 and step * k == 1.0:
                out[axis] = idx[axis] // k
            elif step == 1.0:
                out[axis] = idx[axis]
            else:
                out[axis] = Lin.of(ScaleFloor(idx[axis], step, n_in - 1))
        return tuple(out)

    def _storage(self, d: DType) -> ir.Type:
        if d.is_float:
            return self.F
        return {DType.i64: I64, DType.i32: I32, DType.bool: I8}[d]

    def _compute(self, d: DType) -> ir.Type:
        if d.is_float:
            return self.F
        return {DType.i64: I64, DType.i32: I32, DType.bool: I1}[d]

    # ------------------------------------------------------------------ values

    def _lookup(self, key: tuple) -> ir.Value | None:
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        return None

    def _cache(self, key: tuple, value: ir.Value) -> ir.Value:
        self.scopes[-1][key] = value
        return value

    def lin(self, e: Lin) -> ir.Value:
        """Emit an index expression as i64 arithmetic."""
        b = self.b
        total: ir.Value | None = None
        for atom, coeff in e.terms:
            term = self._atom(atom)
            if coeff != 1:
                term = b.mul(term, I64(coeff), flags=("nsw",))
            total = term if total is None else b.add(total, term, flags=("nsw",))
        if total is None:
            return I64(e.const)
        return b.add(total, I64(e.const), flags=("nsw",)) if e.const else total

    def _atom(self, a: object) -> ir.Value:
        key = ("atom", a)
        hit = self._lookup(key)
        if hit is not None:
            return hit
        b = self.b
        if isinstance(a, Var):
            return self.env[a.name]
        if isinstance(a, FloorDiv):
            x = self.lin(a.x)
            if a.x.bounds()[0] >= 0:
                value = b.udiv(x, I64(a.k))
            else:  # floor division of a possibly negative value
                q = b.sdiv(x, I64(a.k))
                fix = b.and_(
                    b.icmp_signed("<", x, I64(0)), b.icmp_signed("!=", b.srem(x, I64(a.k)), I64(0))
                )
                value = b.sub(q, b.zext(fix, I64))
        elif isinstance(a, Mod):
            x = self.lin(a.x)
            if a.x.bounds()[0] >= 0:
                value = b.urem(x, I64(a.k))
            else:
                r = b.srem(x, I64(a.k))
                value = b.select(b.icmp_signed("<", r, I64(0)), b.add(r, I64(a.k)), r)
        elif isinstance(a, Clamp):
            x = self.lin(a.x)
            x = b.select(b.icmp_signed("<", x, I64(a.lo)), I64(a.lo), x)
            value = b.select(b.icmp_signed(">", x, I64(a.hi)), I64(a.hi), x)
        elif isinstance(a, Load):
            x = self.value(a.name, a.index)
            value = x if x.type == I64 else b.sext(x, I64)
            if a.wrap:
                value = b.select(
                    b.icmp_signed("<", value, I64(0)), b.add(value, I64(a.wrap)), value
                )
        elif isinstance(a, ScaleFloor):
            x = b.sitofp(self.lin(a.x), ir.DoubleType())
            from backends.llvm_ops import intrinsic

            floor = intrinsic(self, "llvm.floor", ir.DoubleType(), 1)
            f = b.call(floor, [b.fmul(x, ir.Constant(ir.DoubleType(), a.step))])
            v = b.fptosi(f, I64)
            value = b.select(b.icmp_signed(">", v, I64(a.hi)), I64(a.hi), v)
        else:
            raise TypeError(a)
        return self._cache(key, value)

    def value(self, name: str, idx: Index) -> ir.Value:
        """The value of IR value `name` at `idx`, in its compute type."""
        key = ("v", name, idx)
        hit = self._lookup(key)
        if hit is not None:
            return hit
        t = self.types[name]
        if name in self.scratch:
            out = self._load(self._scratch_ptr(name), t, idx)
        elif name in self.const_ptrs:  # a constant's array (even when it is also an output)
            out = self._load(self.const_ptrs[name], t, idx)
        elif name not in self.producers:
            out = self._load(self.ptrs[name], t, idx, name in self.narrow)
        elif self.producers[name].op in REDUCE_OPS:  # a row phase of an outer loop: here
            out = self._reduce(self.producers[name], idx)
        else:
            out = self._node(self.producers[name], idx)
        return self._cache(key, out)

    def _load(self, ptr: ir.Value, t: TensorType, idx: Index, narrow: bool = False) -> ir.Value:
        """The value at `idx` of a tensor of type `t` at `ptr`, in its compute type; `narrow`:
        stored in its 16-bit type (`llvm_ops.load_narrow`), else in its storage type."""
        from backends.llvm_ops import load_narrow, narrow_type

        ety = narrow_type(t.dtype) if narrow else self._storage(t.dtype)
        at = self.b.gep(ptr, [self.lin(linearize(idx, t.shape))], source_etype=ety)
        if narrow:
            return load_narrow(self, at, t.dtype)
        x = self.b.load(at, typ=ety)
        return self.b.trunc(x, I1) if t.dtype is DType.bool else x

    def _node(self, node: Node, idx: Index) -> ir.Value:
        from backends import llvm_ops

        op = node.op
        if op in ("reshape", "permute", "expand", "slice", "upsample_nearest2d"):
            ((src, sidx),) = self.input_indices(node, idx)
            return self.value(src, sidx)
        if op == "pad":
            return self._pad(node, idx)
        if op == "cat":
            return self._cat(node, idx)
        if op in ("embedding", "index"):
            src, sidx = self.input_indices(node, idx)[-1]
            return self.value(src, sidx)
        if op == "full":
            return llvm_ops.constant(self, node.attr("value"), node.out.type.dtype)
        if op == "arange":
            return llvm_ops.arange(self, node, idx[0])
        if op not in llvm_ops.ELEMENTWISE:
            raise UnsupportedOpError(
                op,
                node.out.name,
                node.source,
                f"the llvm backend has no native code for it (kernel {self.spec.name})",
                hint="compile with backend='numpy', or add the op to backends/llvm_ops.py",
            )
        args = [self.value(i, j) for i, j in self.input_indices(node, idx)]
        in_types = [self.types[i].dtype for i in node.inputs]
        return llvm_ops.ELEMENTWISE[op](self, node, args, in_types)

    def _pad(self, node: Node, idx: Index) -> ir.Value:
        b = self.b
        x = self.types[node.inputs[0]]
        ok: ir.Value | None = None
        for i, (lo, _), n in zip(idx, node.attr("pads"), x.shape, strict=True):
            j = i - lo
            if j.within(0, n - 1):
                continue
            jv = self.lin(j)
            inside = b.and_(b.icmp_signed(">=", jv, I64(0)), b.icmp_signed("<", jv, I64(n)))
            ok = inside if ok is None else b.and_(ok, inside)
        ((src, sidx),) = self.input_indices(node, idx)
        inner = self.value(src, sidx)
        if ok is None:
            return inner
        from backends import llvm_ops

        fill = llvm_ops.constant(self, node.attr("value"), node.out.type.dtype)
        return b.select(ok, inner, fill)

    def _cat(self, node: Node, idx: Index) -> ir.Value:
        d = node.attr("dim") % len(idx)
        pieces = self._cat_pieces(node, idx)
        offsets, off = [], 0
        for name in node.inputs:
            offsets.append(off)
            off += self.types[name].shape[d]
        p, j = pieces[-1]
        result = self.value(node.inputs[p], j)
        if len(pieces) == 1:
            return result
        at = self.lin(idx[d])
        for p, j in reversed(pieces[:-1]):
            end = offsets[p] + self.types[node.inputs[p]].shape[d]
            result = self.b.select(
                self.b.icmp_signed("<", at, I64(end)), self.value(node.inputs[p], j), result
            )
        return result

    # math helpers used by llvm_ops

    def fconst(self, x: float) -> ir.Constant:
        return ir.Constant(self.F, x)

    def math(self, fn: str, x: ir.Value) -> ir.Value:
        return getattr(llvm_math, fn)(self.b, x)


__all__ = ["REDUCE_OPS", "IndexedValues", "broadcast"]
