"""Values at symbolic indices: how a kernel's IR values become LLVM values inside its loops.

`IndexedValues` is the half of the kernel generator (`backends.llvm.kernel._Codegen`) that
emits a value at a symbolic index (`value`) as LLVM IR, reading its inputs at the indices the
shared index maps give (`backends.index_maps.IndexMaps`), memoized per loop scope so a value
read twice at one index is computed once. It expects the generator's state: `b` (the
builder), `m` (the module), `F` (the float type), `types`, `producers`, `ptrs`, `const_ptrs`
(the constants' arrays), `scratch`, `env` (loop variables), `scopes`, `narrow` (parameters
stored in 16 bits), and the generator's `_reduce` and `_scratch_ptr`.
"""

from __future__ import annotations

from llvmlite import ir

from backends.index import (
    Clamp,
    FloorDiv,
    Lin,
    Load,
    Mod,
    ScaleFloor,
    Var,
    linearize,
)
from backends.index_maps import REDUCE_OPS, Index, IndexMaps, broadcast
from backends.llvm import math as llvm_math
from backends.llvm import ops as llvm_ops
from backends.llvm.ops import intrinsic, load_narrow, narrow_type
from compiler.core.errors import UnsupportedOpError
from compiler.core.ir import Node
from compiler.core.types import DType, TensorType

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)


class IndexedValues(IndexMaps):
    # ------------------------------------------------------------------ types

    def _storage(self, d: DType) -> ir.Type:
        if d.is_float:
            return self.F
        return {DType.i64: I64, DType.i32: I32, DType.bool: I8}[d]

    def _compute(self, d: DType) -> ir.Type:
        if d.is_float:
            return self.F
        return {DType.i64: I64, DType.i32: I32, DType.bool: I1}[d]

    # ------------------------------------------------------------------ values

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
        ety = narrow_type(t.dtype) if narrow else self._storage(t.dtype)
        at = self.b.gep(ptr, [self.lin(linearize(idx, t.shape))], source_etype=ety)
        if narrow:
            return load_narrow(self, at, t.dtype)
        x = self.b.load(at, typ=ety)
        return self.b.trunc(x, I1) if t.dtype is DType.bool else x

    def _node(self, node: Node, idx: Index) -> ir.Value:
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
                hint="compile with backend='numpy', or add the op to backends/llvm/ops.py",
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
