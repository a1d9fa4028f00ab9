"""Reductions and scans inside a kernel: loops over the reduced dims around an accumulator.

`Reductions` is the part of the kernel generator (`backends.llvm.kernel._Codegen`) that emits
`sum`/`mean`/`amax`/`amin` at an output index as a loop nest over the reduced dims, and
`cumsum` as a sequential scan into scratch. Float sums use `reassoc` so they vectorize; sums
over more than BLOCK elements add float partials of BLOCK elements into a float64 total. Max
and min propagate NaN (`llvm.maximum`/`llvm.minimum`), as NumPy does.
"""

from __future__ import annotations

import math

from llvmlite import ir

from backends.index import Lin, Var
from backends.index_maps import Index
from backends.llvm.ops import intrinsic
from backends.llvm.values import I64
from compiler.core.ir import Node
from compiler.core.types import DType

BLOCK = 1024  # long float sums accumulate blocks of this many in the float type, then in f64
"""Note [Blocks LLVM does not unroll]
A sum over 10240 elements (a GroupNorm group of 10 channels at 32x32) is 10 blocks of 1024.
With both trip counts constant, -O3 unrolled the block loop in full around the vectorized
inner loop: the `unet` example's two GroupNorm modules became 2000-3300-line basic blocks and
took 0.37-0.47 s each to compile, half of its LLVM time. The block count is therefore passed
through an empty inline asm (`"=r,0"`: the value unchanged, opaque to the optimizer): the block
loop stays a loop, the inner loop is still vectorized and unrolled."""


class Reductions:
    def _reduce(self, node: Node, idx: Index) -> ir.Value:
        """The reduction `node` at output index `idx`, as loops over its reduced dims."""
        b = self.b
        fresh: list[Var] = []
        xidx = self._reduce_input_index(node, idx, fresh)
        xt = self.types[node.inputs[0]]
        op = "sum" if node.op == "mean" else node.op
        ty = self._compute(node.out.type.dtype)
        if op == "sum" and not xt.dtype.is_float:
            ty = I64
        wide = op == "sum" and ty == self.F and math.prod(v.extent for v in fresh) > BLOCK
        acc_ty = ir.DoubleType() if wide else ty
        acc = self.alloca_builder.alloca(acc_ty, name=f"{node.out.name}.acc")
        b.store(self._identity(op, acc_ty), acc)
        self._reduce_loops(node, op, fresh, xidx, acc, acc_ty, wide)
        result = b.load(acc, typ=acc_ty)
        if wide and ty != acc_ty:
            result = b.fptrunc(result, ty)
        if node.op == "mean":
            count = math.prod(v.extent for v in fresh)
            result = b.fdiv(result, ir.Constant(ty, float(count)), name=node.out.name)
        return result

    def _reduce_loops(
        self,
        node: Node,
        op: str,
        fresh: list[Var],
        xidx: Index,
        acc: ir.Value,
        acc_ty: ir.Type,
        wide: bool,
    ) -> None:
        b = self.b
        if not fresh:
            b.store(
                self._combine(op, b.load(acc, typ=acc_ty), self._acc_value(node, xidx, acc_ty)), acc
            )
            return
        var, rest = fresh[0], fresh[1:]
        if wide and not rest:  # innermost dim: float partials of <= BLOCK, added in f64
            # the block count through an empty asm: LLVM cannot see it, so it does not unroll
            # the block loop in full (Note [Blocks LLVM does not unroll])
            blocks = b.asm(
                ir.FunctionType(I64, [I64]), "", "=r,0", [I64(-(-var.extent // BLOCK))], False,
                name=f"{var.name}.blocks",
            )  # fmt: skip
            with self._loop(I64(0), blocks, f"{var.name}.blk") as blk:
                start = b.mul(blk, I64(BLOCK))
                stop_raw = b.add(start, I64(BLOCK))
                stop = b.select(
                    b.icmp_signed("<", stop_raw, I64(var.extent)), stop_raw, I64(var.extent)
                )
                part = self.alloca_builder.alloca(self.F, name=f"{node.out.name}.part")
                b.store(self._identity(op, self.F), part)
                with self._loop(start, stop, var.name) as i:
                    self.env[var.name] = i
                    x = self._acc_value(node, xidx, self.F)
                    b.store(self._combine(op, b.load(part, typ=self.F), x), part)
                total = b.fadd(b.load(acc, typ=acc_ty), b.fpext(b.load(part, typ=self.F), acc_ty))
                b.store(total, acc)
            return
        with self._loop(I64(0), I64(var.extent), var.name) as i:
            self.env[var.name] = i
            self._reduce_loops(node, op, rest, xidx, acc, acc_ty, wide)

    def _acc_value(self, node: Node, xidx: Index, ty: ir.Type) -> ir.Value:
        x = self.value(node.inputs[0], xidx)
        src = self.types[node.inputs[0]].dtype
        if ty == x.type:
            return x
        if isinstance(ty, ir.IntType):
            return self.b.zext(x, ty) if src is DType.bool else self.b.sext(x, ty)
        return self.b.fpext(x, ty)

    def _out_index(self, node: Node, kept: Index) -> Index:
        """A reduction\x27s output index from the indices of its kept dims."""
        if not node.attr("keepdim"):
            return kept
        x = self.types[node.inputs[0]]
        dims = {d % x.rank for d in node.attr("dims")}
        it = iter(kept)
        return tuple(Lin(0) if d in dims else next(it) for d in range(x.rank))

    def _identity(self, op: str, ty: ir.Type) -> ir.Constant:
        if isinstance(ty, ir.IntType):
            big = (1 << (ty.width - 1)) - 1 if ty.width > 1 else 1
            return ir.Constant(ty, {"sum": 0, "amax": -big - 1, "amin": big}[op])
        return ir.Constant(ty, {"sum": 0.0, "amax": -math.inf, "amin": math.inf}[op])

    def _combine(self, op: str, acc: ir.Value, x: ir.Value) -> ir.Value:
        b = self.b
        if isinstance(acc.type, ir.IntType):
            if op == "sum":
                return b.add(acc, x)
            pred = ">" if op == "amax" else "<"
            return b.select(b.icmp_signed(pred, x, acc), x, acc)
        if op == "sum":
            return b.fadd(acc, x, flags=("reassoc", "nsz"))

        name = "llvm.maximum" if op == "amax" else "llvm.minimum"
        return b.call(intrinsic(self, name, acc.type, 2), [acc, x])

    def _emit_scan(self, node: Node, idx: Index) -> None:
        b = self.b
        x = self.types[node.inputs[0]]
        d = node.attr("dim") % x.rank
        ty = self._compute(node.out.type.dtype)
        acc = self.alloca_builder.alloca(ty, name=f"{node.out.name}.acc")
        b.store(self._identity("sum", ty), acc)
        full, it = [], iter(idx)
        v = self.fresh("s", x.shape[d])
        for k in range(x.rank):
            full.append(v.lin if k == d else next(it))
        with self._loop(I64(0), I64(x.shape[d]), v.name) as i:
            self.env[v.name] = i
            xv = self._acc_value(node, tuple(full), ty)
            total = (
                b.fadd(b.load(acc, typ=ty), xv) if ty == self.F else b.add(b.load(acc, typ=ty), xv)
            )
            b.store(total, acc)
            self._store(node.out.name, self._scratch_ptr(node.out.name), tuple(full), total)


__all__ = ["BLOCK", "Reductions"]
