"""One KernelSpec (without compute anchors) as an LLVM module: loops that vectorize and split
across threads.

A kernel runs as *stages*, each a loop nest whose outer loops are shared among threads and whose
innermost loop walks contiguous memory so LLVM vectorizes it:

- a **store** stage writes the kernel outputs of one shape: outer loops over all dims but the
  last, an inner loop over the last;
- a **reduce** stage materializes a reduction into the kernel's scratch memory, when its result
  is needed at more positions than the stage computing it has rows (GroupNorm's statistics are
  per group, read per channel);
- a **scan** stage computes a cumulative sum into scratch.

Reductions whose result a stage needs once per outer iteration (LayerNorm's mean and variance,
softmax's max and sum) are computed inside that stage's outer loop as *row phases*: one inner
loop per reduction over the row, then the store loop, all while the row is in cache.

Every value is generated lazily at a symbolic index (`backends.index`): views, broadcasts,
pads, concatenations and gathers are index arithmetic, never copies. Floats compute in the
program's float type (f32, or f64 on request) and bf16/f16 values are rounded where the IR
casts, exactly as the NumPy reference does, and where a `narrow` parameter stores them in 16
bits (bf16 as i16, f16 as half: loads widen exactly, stores round to nearest even).

The module exports `<symbol>(ptr args, i64 nthreads)`: `args` holds one data pointer per
parameter (`KernelModule.params`). Large kernels fork through `GOMP_parallel` (the OpenMP
runtime torch ships); stages are separated by `GOMP_barrier`.

A kernel that reads index tensors checks them first (Note [Index checks] in
`backends.index_maps`): the minimum and maximum of each index tensor, a vectorizable
reduction over it computed where the kernel computes it; one out of range, it writes (which
check + 1, that index) into its `status` parameter, two words the driver gives each call site,
and the driver raises after the call (`KernelModule.checks` says what each check is). The cost
is one pass over the indices (a few hundred ids, against the rows they gather) and one read of
a word per call.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from llvmlite import ir

from backends.decompose import decompose
from backends.index import Clamp, Lin, Load, Var, linearize
from backends.index_maps import REDUCE_OPS
from backends.llvm.aot import ir_digest
from backends.llvm.emit import (
    I8,
    I64,
    PTR,
    counted_loop,
    declare,
    module_text,
    parallel_entry,
)
from backends.llvm.ops import narrow_type, store_narrow
from backends.llvm.reduce import Reductions
from backends.llvm.values import IndexedValues
from compiler.core.ir import ConstArray, Node
from compiler.core.ops.structural import index_reads
from compiler.core.schedule import KernelSpec
from compiler.core.types import DType, TensorType

EXTERN_OPS = frozenset({"matmul", "conv2d", "sdpa"})
PARALLEL_MIN_ELEMENTS = 1 << 15  # below this, a fork/join costs more than it saves

Index = tuple[Lin, ...]


@dataclass(frozen=True)
class Param:
    """One pointer argument: a kernel input, a constant table, an output, or scratch."""

    name: str
    role: str  # "in" | "const" | "out" | "inout" (read, then written) | "status" | "scratch"
    type: TensorType | None = None
    const: ConstArray | None = None
    narrow: bool = False  # stored in its own 16-bit type (bf16 as i16, f16 as half), not F


@dataclass
class Stage:
    kind: str  # "store" | "reduce" | "scan"
    shape: tuple[int, ...]
    n_outer: int
    sinks: tuple[str, ...]
    outer: tuple[Var, ...] = ()
    phases: list[tuple[str, Index]] = field(default_factory=list)


@dataclass(frozen=True)
class KernelModule:
    """The generated module of one kernel."""

    symbol: str
    ir: str
    params: tuple[Param, ...]
    scratch_bytes: int
    parallel: bool
    stages: tuple[str, ...]  # one line per stage, for the header and `explain`
    # the index checks, in the order the kernel numbers them (Note [Index checks] in
    # backends/index_maps.py):
    # (op, node, source line, size of the dimension indexed, lowest index allowed)
    checks: tuple[tuple[str, str, str, int, int], ...] = ()

    @property
    def digest(self) -> str:
        """What a linked library and a saved program know this module by (`ir_digest`)."""
        return ir_digest(self.ir)


def render_kernel(
    spec: KernelSpec, float_dtype: str = "float32", narrow: frozenset[str] = frozenset()
) -> KernelModule:
    """The LLVM module computing `spec` (which must have no matmul/conv2d/sdpa). `narrow`: the
    inputs and outputs of IR type bf16/f16 that the caller stores in that 16-bit type (Note
    [16-bit storage] in `backends.llvm.storage`); every other float is stored in the compute
    type `float_dtype`."""
    return _Codegen(spec, float_dtype, narrow).module()


class _Codegen(IndexedValues, Reductions):
    """The kernel generator: plans stages, emits loops; values and reductions come from the
    mixins in `backends.llvm.values` and `backends.llvm.reduce`."""

    def __init__(
        self, spec: KernelSpec, float_dtype: str, narrow: frozenset[str] = frozenset()
    ) -> None:
        for n in spec.body:
            if n.op in EXTERN_OPS:
                raise ValueError(f"{spec.name}: {n.op} is an extern call, not a native kernel")
        ends = {v.name: v.type for v in spec.inputs} | {o: spec.type_of(o) for o in spec.outputs}
        for name in sorted(narrow):
            if name not in ends or ends[name].dtype not in (DType.bf16, DType.f16):
                raise ValueError(
                    f"{spec.name}: only a bf16/f16 input or output can be stored in 16 bits, "
                    f"not {name}"
                )
        self.narrow = narrow
        self.spec = spec
        self.fdtype = float_dtype
        self.F = ir.DoubleType() if float_dtype == "float64" else ir.FloatType()
        self.nodes = decompose(spec.inputs, spec.body)
        self.producers = {n.out.name: n for n in self.nodes}
        self.types: dict[str, TensorType] = {v.name: v.type for v in spec.inputs}
        self.types.update((n.out.name, n.out.type) for n in self.nodes)
        self.order = {n.out.name: i for i, n in enumerate(self.nodes)}
        self._uid = 0
        params = [Param(v.name, "in", v.type, narrow=v.name in narrow) for v in spec.inputs]
        for n in self.nodes:
            if n.op == "constant":
                params.append(Param(n.out.name, "const", n.out.type, n.attr("value")))
        params += [Param(o, "out", self.types[o], narrow=o in narrow) for o in spec.outputs]
        self.checks = [
            (n, n.inputs[pos], size, lowest)
            for n in self.nodes
            for pos, size, lowest in index_reads(n.op, [self.types[i] for i in n.inputs])
        ]
        if self.checks:
            params.append(Param("status", "status"))
        self.scratch = self._plan_scratch()
        self.offsets: dict[str, int] = {}
        total = 0
        for name in sorted(self.scratch, key=self.order.__getitem__):
            self.offsets[name] = total
            total += -(-self.types[name].numel * self._itemsize(self.types[name].dtype) // 64) * 64
        self.scratch_bytes = total
        if total:
            params.append(Param("scratch", "scratch"))
        self.params = tuple(params)

    # ------------------------------------------------------------------ planning

    def fresh(self, prefix: str, extent: int) -> Var:
        self._uid += 1
        return Var(f"{prefix}{self._uid}", extent)

    def _itemsize(self, d: DType) -> int:
        return (8 if self.fdtype == "float64" else 4) if d.is_float else max(d.itemsize, 1)

    def _plan_scratch(self) -> set[str]:
        """Reductions to materialize: every cumsum, and each reduction some stage needs at
        more positions than it has rows (found as a fixed point)."""
        scratch = {n.out.name for n in self.nodes if n.op == "cumsum"}
        while True:
            self.stages = self._stages(scratch)
            more = self._misfit - scratch
            if not more:
                return scratch
            scratch |= more

    def _stages(self, scratch: set[str]) -> list[Stage]:
        self._misfit: set[str] = set()
        self._scratch = scratch
        stages = []
        for name in sorted(scratch, key=self.order.__getitem__):
            node = self.producers[name]
            x = self.types[node.inputs[0]]
            if node.op == "cumsum":
                d = node.attr("dim") % x.rank
                dims = (d,)
            else:
                dims = tuple(sorted(d % x.rank for d in node.attr("dims")))
            keep = [n for i, n in enumerate(x.shape) if i not in dims]
            shape = tuple(keep) + tuple(x.shape[d] for d in dims)
            kind = "scan" if node.op == "cumsum" else "reduce"
            stages.append(self._stage(kind, shape, len(keep), (name,)))
        by_shape: dict[tuple[int, ...], list[str]] = {}
        for o in self.spec.outputs:
            by_shape.setdefault(self.types[o].shape, []).append(o)
        for shape, outs in by_shape.items():
            stages.append(self._stage("store", shape, max(len(shape) - 1, 0), tuple(outs)))
        return stages

    def _stage(
        self, kind: str, shape: tuple[int, ...], n_outer: int, sinks: tuple[str, ...]
    ) -> Stage:
        st = Stage(kind, shape, n_outer, sinks)
        st.outer = tuple(self.fresh("o", n) for n in shape[:n_outer])
        rows = math.prod(shape[:n_outer])
        outer = {v.name for v in st.outer}
        idx = tuple(v.lin for v in st.outer)
        if kind == "store":
            inner = tuple(self.fresh("i", n).lin for n in shape[n_outer:])
            roots = [(o, idx + inner) for o in sinks]
        else:
            node = self.producers[sinks[0]]
            roots = [(node.inputs[0], self._reduce_input_index(node, idx, None))]
        seen: set[tuple[str, Index]] = set()
        self._walk(roots, st, outer, rows, seen)
        st.phases.sort(key=lambda p: self.order[p[0]])
        return st

    def _walk(
        self, roots: list[tuple[str, Index]], st: Stage, outer: set[str], rows: int, seen: set
    ) -> None:
        todo = list(roots)
        while todo:
            name, idx = todo.pop()
            if (name, idx) in seen:
                continue
            seen.add((name, idx))
            node = self.producers.get(name)
            if node is None or name in self._scratch:
                todo.extend(self._loads_in(idx))
                continue
            if node.op in REDUCE_OPS:
                fits = all(i.free() <= outer for i in idx) and (
                    math.prod(node.out.type.shape) == rows
                )
                if not fits:
                    self._misfit.add(name)
                    continue
                st.phases.append((name, idx))
                todo.append((node.inputs[0], self._reduce_input_index(node, idx, None)))
                continue
            todo.extend(self._loads_in(idx))
            for inp, iidx in self.input_indices(node, idx):
                todo.append((inp, iidx))

    def _loads_in(self, idx: Index) -> list[tuple[str, Index]]:
        out = []
        for lin in idx:
            for atom, _ in lin.terms:
                inner = atom.x if isinstance(atom, Clamp) else None
                for a in [atom] + [t for t, _ in (inner.terms if inner else ())]:
                    if isinstance(a, Load):
                        out.append((a.name, a.index))
        return out

    def _reduce_input_index(self, node: Node, idx: Index, fresh: list[Var] | None) -> Index:
        """The index of a reduction's input: `idx` on kept dims, a new variable per reduced
        dim (appended to `fresh` when given)."""
        x = self.types[node.inputs[0]]
        if node.op == "cumsum":
            dims, keepdim = (node.attr("dim") % x.rank,), True
        else:
            dims = tuple(d % x.rank for d in node.attr("dims"))
            keepdim = node.attr("keepdim")
        if (not keepdim and len(idx) == x.rank - len(dims)) or len(idx) != x.rank:
            full, it = [], iter(idx)
            for d in range(x.rank):
                full.append(Lin(0) if d in dims else next(it))
            idx = tuple(full)
        out = list(idx)
        for d in sorted(dims):
            v = self.fresh("r", x.shape[d])
            out[d] = v.lin
            if fresh is not None:
                fresh.append(v)
        return tuple(out)

    # ------------------------------------------------------------------ module

    def module(self) -> KernelModule:
        digest = hashlib.sha256(self._structure().encode()).hexdigest()
        base = re.sub(r"^k?\d+_", "", self.spec.name.rsplit(".", 1)[-1])  # not the position
        base = re.sub(r"\W", "_", base)
        symbol = f"tf_{base}_{digest[:10]}"
        work = sum(math.prod(st.shape) for st in self.stages)
        parallel = work >= PARALLEL_MIN_ELEMENTS and any(
            math.prod(st.shape[: st.n_outer]) > 1 for st in self.stages
        )

        def emit() -> ir.Module:
            self.m = ir.Module(name=symbol)
            params = [p.name for p in self.params]
            parallel_entry(self.m, symbol, self._body(symbol), params, parallel=parallel)
            return self.m

        lines = [f"; tilefuse kernel {self.spec.name} ({self.fdtype} compute)"]
        lines += [f"; {line}" for line in str(self.spec).splitlines()]
        stage_lines = [self._describe(st) for st in self.stages]
        lines += ["; stages:"] + [f";   {s}" for s in stage_lines]
        for i, (n, name, size, lo) in enumerate(self.checks):
            lines += [f"; index check {i + 1}: {name} of {n.op} {n.out.name} in [{lo}, {size})"]
        lines += [f"; args: {', '.join(f'{p.role} {p.name}' for p in self.params)}"]
        narrow = [f"{p.name} ({p.type.dtype.value})" for p in self.params if p.narrow and p.type]
        if narrow:
            lines += [f"; 16-bit storage (bf16 as i16, f16 as half): {', '.join(narrow)}"]
        text = "\n".join(lines) + "\n" + module_text(symbol, emit)
        checks = tuple((n.op, n.out.name, n.source, size, lo) for n, _, size, lo in self.checks)
        return KernelModule(
            symbol, text, self.params, self.scratch_bytes, parallel, tuple(stage_lines), checks
        )

    def _structure(self) -> str:
        """The kernel with its values numbered by position: identical layers of a model get
        the same text, hence the same module (compiled once, cached once)."""
        pos = {p.name: f"%{i}" for i, p in enumerate(self.params)}
        lines = [f"{self.fdtype} {[(p.role, str(p.type), p.narrow) for p in self.params]}"]
        for i, n in enumerate(self.nodes):
            pos.setdefault(n.out.name, f"v{i}")
            attrs = [(k, v.digest if isinstance(v, ConstArray) else v) for k, v in n.attrs]
            lines.append(
                f"{pos[n.out.name]} {n.out.type} {n.op}{[pos[i] for i in n.inputs]}{attrs}"
            )
        return "\n".join(lines)

    def _describe(self, st: Stage) -> str:
        outer = list(st.shape[: st.n_outer])
        inner = list(st.shape[st.n_outer :])
        phases = ", ".join(dict.fromkeys(self.producers[r].op for r, _ in st.phases))
        rows = f" row phases: {phases};" if phases else ""
        return f"{st.kind} {', '.join(st.sinks)}: outer {outer} x inner {inner};{rows}"

    # ------------------------------------------------------------------ body

    def _body(self, symbol: str) -> ir.Function:
        fnty = ir.FunctionType(ir.VoidType(), [I64, I64] + [PTR] * len(self.params))
        fn = ir.Function(self.m, fnty, f"{symbol}_body")
        fn.linkage = "internal"
        fn.args[0].name, fn.args[1].name = "tid", "nth"
        self.ptrs: dict[str, ir.Value] = {}
        self.const_ptrs: dict[str, ir.Value] = {}  # apart: a constant may be an output too
        for p, a in zip(self.params, fn.args[2:], strict=True):
            a.name = f"{'c' if p.role == 'const' else 'p'}_{p.name}"
            a.add_attribute("noalias")
            (self.const_ptrs if p.role == "const" else self.ptrs)[p.name] = a
        self.entry_block = fn.append_basic_block("entry")
        start = fn.append_basic_block("start")
        self.b = ir.IRBuilder(start)
        self.alloca_builder = ir.IRBuilder(self.entry_block)
        self.scopes: list[dict] = [{}]
        self.env: dict[str, ir.Value] = {}
        tid, nth = fn.args[0], fn.args[1]
        for i, (_, name, size, lowest) in enumerate(self.checks):
            self._emit_check(i, name, size, lowest)
        barrier = declare(self.m, "GOMP_barrier", ir.FunctionType(ir.VoidType(), []))
        for i, st in enumerate(self.stages):
            self._emit_stage(st, tid, nth)
            if i < len(self.stages) - 1:
                with self._if(self.b.icmp_signed(">", nth, I64(1))):
                    self.b.call(barrier, [])
        self.b.ret_void()
        self.alloca_builder.branch(start)
        return fn

    @contextmanager
    def _if(self, cond: ir.Value) -> Iterator[None]:
        with self.b.if_then(cond):
            yield

    @contextmanager
    def _loop(self, start: ir.Value, stop: ir.Value, name: str) -> Iterator[ir.Value]:
        self.scopes.append({})  # values computed inside the loop stay inside it
        with counted_loop(self.b, start, stop, name) as i:
            yield i
        self.scopes.pop()

    def _emit_stage(self, st: Stage, tid: ir.Value, nth: ir.Value) -> None:
        b = self.b
        rows = math.prod(st.shape[: st.n_outer])
        chunk = b.sdiv(b.add(I64(rows), b.sub(nth, I64(1))), nth, name="chunk")
        lo = b.select(
            b.icmp_signed("<", b.mul(tid, chunk), I64(rows)), b.mul(tid, chunk), I64(rows)
        )
        hi_raw = b.add(lo, chunk)
        hi = b.select(b.icmp_signed("<", hi_raw, I64(rows)), hi_raw, I64(rows), name="hi")
        with self._loop(lo, hi, f"{st.sinks[0]}.row") as m:
            stride = rows
            for v, n in zip(st.outer, st.shape[: st.n_outer], strict=True):
                stride //= n
                x = b.udiv(m, I64(stride)) if stride > 1 else m
                self.env[v.name] = b.urem(x, I64(n), name=v.name) if v is not st.outer[0] else x
            for r, idx in st.phases:
                self._cache(("v", r, idx), self._reduce(self.producers[r], idx))
            idx = tuple(v.lin for v in st.outer)
            if st.kind == "store":
                self._emit_store(st, idx)
            elif st.kind == "reduce":
                node = self.producers[st.sinks[0]]
                value = self._reduce(node, idx)
                self._store(
                    st.sinks[0], self._scratch_ptr(st.sinks[0]), self._out_index(node, idx), value
                )
            else:
                self._emit_scan(self.producers[st.sinks[0]], idx)

    def _emit_check(self, which: int, name: str, size: int, lowest: int) -> None:
        """Check `which` (Note [Index checks] in backends/index_maps.py): the extremes of
        index tensor `name`; one outside [lowest, size) goes to the status words, as (which
        + 1, that index)."""
        b = self.b
        t = self.types[name]
        extremes = []
        for start in (2**63 - 1, -(2**63)):
            slot = self.alloca_builder.alloca(I64, name=f"check{which}")
            b.store(I64(start), slot)
            extremes.append(slot)
        dims = [self.fresh("c", n) for n in t.shape]
        with self._loop(I64(0), I64(t.numel), f"check{which}") as m:
            stride = t.numel
            for v in dims:
                stride //= v.extent
                x = b.udiv(m, I64(stride)) if stride > 1 else m
                self.env[v.name] = b.urem(x, I64(v.extent)) if v is not dims[0] else x
            x = self.value(name, tuple(v.lin for v in dims))
            x = x if x.type == I64 else b.sext(x, I64)
            lo, hi = (b.load(p, typ=I64) for p in extremes)
            b.store(b.select(b.icmp_signed("<", x, lo), x, lo), extremes[0])
            b.store(b.select(b.icmp_signed(">", x, hi), x, hi), extremes[1])
        lo, hi = (b.load(p, typ=I64) for p in extremes)
        below = b.icmp_signed("<", lo, I64(lowest))
        with self._if(b.or_(below, b.icmp_signed(">=", hi, I64(size)))):
            status = self.ptrs["status"]
            value = b.gep(status, [I64(1)], source_etype=I64)
            # atomic: every thread runs the check and may find the same index
            b.atomic_rmw("xchg", value, b.select(below, lo, hi), "monotonic")
            b.atomic_rmw("xchg", status, I64(which + 1), "monotonic")

    def _emit_store(self, st: Stage, idx: Index) -> None:
        inner_shape = st.shape[st.n_outer :]
        if not inner_shape:
            for o in st.sinks:
                self._store(o, self.ptrs[o], idx, self.value(o, idx), o in self.narrow)
            return
        v = self.fresh("j", inner_shape[0])
        with self._loop(I64(0), I64(inner_shape[0]), v.name) as j:
            self.env[v.name] = j
            full = idx + (v.lin,)
            for o in st.sinks:
                self._store(o, self.ptrs[o], full, self.value(o, full), o in self.narrow)

    def _store(
        self, name: str, ptr: ir.Value, idx: Index, value: ir.Value, narrow: bool = False
    ) -> None:
        """Store `value` (compute type) at `idx` of `name` at `ptr`; `narrow`: in its 16-bit
        type (a `narrow` output), else in the storage type of its dtype."""
        t = self.types[name]
        ety = narrow_type(t.dtype) if narrow else self._storage(t.dtype)
        at = self.b.gep(ptr, [self.lin(linearize(idx, t.shape))], source_etype=ety)
        if narrow:
            store_narrow(self, value, at, t.dtype)
            return
        if t.dtype is DType.bool:
            value = self.b.zext(value, I8)
        self.b.store(value, at)

    def _scratch_ptr(self, name: str) -> ir.Value:
        return self.b.gep(self.ptrs["scratch"], [I64(self.offsets[name])], source_etype=I8)


__all__ = ["KernelModule", "Param", "render_kernel"]
