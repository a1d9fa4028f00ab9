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

Every value is generated lazily at a symbolic index (`backends.llvm_index`): views, broadcasts,
pads, concatenations and gathers are index arithmetic, never copies. Floats compute in the
program's float type (f32, or f64 on request) and bf16/f16 values are rounded only where the IR
casts, exactly as the NumPy reference does.

The module exports `<symbol>(ptr args, i64 nthreads)`: `args` holds one data pointer per
parameter (`KernelModule.params`). Large kernels fork through `GOMP_parallel` (the OpenMP
runtime torch ships); stages are separated by `GOMP_barrier`.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from llvmlite import ir

from backends import llvm_math
from backends.decompose import decompose
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
from compiler.errors import UnsupportedOpError
from compiler.ir import ConstArray, DType, Node, TensorType
from compiler.schedule import KernelSpec

REDUCE_OPS = frozenset({"sum", "mean", "amax", "amin"})
EXTERN_OPS = frozenset({"matmul", "conv2d", "sdpa"})
PARALLEL_MIN_ELEMENTS = 1 << 15  # below this, a fork/join costs more than it saves
BLOCK = 1024  # long float sums accumulate blocks of this many in the float type, then in f64

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()
Index = tuple[Lin, ...]


@dataclass(frozen=True)
class Param:
    """One pointer argument: a kernel input, a constant table, an output, or scratch."""

    name: str
    role: str  # "in" | "const" | "out" | "scratch"
    type: TensorType | None = None
    const: ConstArray | None = None


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


def render_kernel(spec: KernelSpec, float_dtype: str = "float32") -> KernelModule:
    """The LLVM module computing `spec` (which must have no matmul/conv2d/sdpa)."""
    return _Codegen(spec, float_dtype).module()


@contextmanager
def counted_loop(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, name: str) -> Iterator[ir.Value]:
    """`for i in range(start, stop)`: yields the induction variable; the body is emitted at
    the builder's position inside the `with`, and the builder ends after the loop."""
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    end = b.append_basic_block(f"{name}.end")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, end)
    b.position_at_end(body)
    yield i
    i.add_incoming(b.add(i, I64(1), name=f"{name}.next", flags=("nsw",)), b.block)
    b.branch(head)
    b.position_at_end(end)


def _broadcast(index: Index, shape: tuple[int, ...]) -> Index:
    """The index into an operand of `shape` broadcast against `index` (aligned right)."""
    lead = len(index) - len(shape)
    return tuple(Lin(0) if n == 1 else index[lead + k] for k, n in enumerate(shape))


class _Codegen:
    def __init__(self, spec: KernelSpec, float_dtype: str) -> None:
        for n in spec.body:
            if n.op in EXTERN_OPS:
                raise ValueError(f"{spec.name}: {n.op} is an extern call, not a native kernel")
        self.spec = spec
        self.fdtype = float_dtype
        self.F = ir.DoubleType() if float_dtype == "float64" else ir.FloatType()
        self.nodes = decompose(spec.inputs, spec.body)
        self.producers = {n.out.name: n for n in self.nodes}
        self.types: dict[str, TensorType] = {v.name: v.type for v in spec.inputs}
        self.types.update((n.out.name, n.out.type) for n in self.nodes)
        self.order = {n.out.name: i for i, n in enumerate(self.nodes)}
        self._uid = 0
        params = [Param(v.name, "in", v.type) for v in spec.inputs]
        for n in self.nodes:
            if n.op == "constant":
                params.append(Param(n.out.name, "const", n.out.type, n.attr("value")))
        params += [Param(o, "out", self.types[o]) for o in spec.outputs]
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
            return [(ins[0], _broadcast(idx, t[0].shape))]
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
                at = _broadcast(lead, t[k + 1].shape)
                rows.append(self._clamp(Lin.of(Load(name, at, t[0].shape[k])), t[0].shape[k]))
                reads.append((name, at))
            return [*reads, (ins[0], tuple(rows) + tuple(rest))]
        if op == "upsample_nearest2d":
            return [(ins[0], self._upsample_index(node, idx))]
        if op in ("full", "arange", "constant"):
            return []
        if op in REDUCE_OPS or op == "cumsum":
            raise AssertionError("reductions are handled by their stage")
        return [(i, _broadcast(idx, ti.shape)) for i, ti in zip(ins, t, strict=True)]

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

    # ------------------------------------------------------------------ module

    def module(self) -> KernelModule:
        digest = hashlib.sha256(self._structure().encode()).hexdigest()
        base = re.sub(r"^k?\d+_", "", self.spec.name.rsplit(".", 1)[-1])  # not the position
        base = re.sub(r"\W", "_", base)
        symbol = f"tf_{base}_{digest[:10]}"
        self.m = ir.Module(name=symbol)
        work = sum(math.prod(st.shape) for st in self.stages)
        parallel = work >= PARALLEL_MIN_ELEMENTS and any(
            math.prod(st.shape[: st.n_outer]) > 1 for st in self.stages
        )
        body = self._body(symbol)
        self._entry(symbol, body, parallel)
        lines = [f"; tilefuse kernel {self.spec.name} ({self.fdtype} compute)"]
        lines += [f"; {line}" for line in str(self.spec).splitlines()]
        stage_lines = [self._describe(st) for st in self.stages]
        lines += ["; stages:"] + [f";   {s}" for s in stage_lines]
        lines += [f"; args: {', '.join(f'{p.role} {p.name}' for p in self.params)}"]
        text = "\n".join(lines) + "\n" + str(self.m)
        return KernelModule(
            symbol, text, self.params, self.scratch_bytes, parallel, tuple(stage_lines)
        )

    def _structure(self) -> str:
        """The kernel with its values numbered by position: identical layers of a model get
        the same text, hence the same module (compiled once, cached once)."""
        pos = {p.name: f"%{i}" for i, p in enumerate(self.params)}
        lines = [f"{self.fdtype} {[(p.role, str(p.type)) for p in self.params]}"]
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

    def _entry(self, symbol: str, body: ir.Function, parallel: bool) -> None:
        m = self.m
        entry = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, I64]), symbol)
        args_ptr, nthreads = entry.args
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        if not parallel:
            b.call(body, [I64(0), I64(1), *self._unpack(b, args_ptr)])
            b.ret_void()
            return
        omp = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR]), f"{symbol}_omp")
        omp.linkage = "internal"
        ob = ir.IRBuilder(omp.append_basic_block("entry"))
        i32fn = ir.FunctionType(I32, [])
        tid = ob.call(self._declare("omp_get_thread_num", i32fn), [], name="tid")
        nth = ob.call(self._declare("omp_get_num_threads", i32fn), [], name="nth")
        args = ob.load(omp.args[0], typ=PTR, name="args")
        ob.call(body, [ob.sext(tid, I64), ob.sext(nth, I64), *self._unpack(ob, args)])
        ob.ret_void()
        gomp = self._declare("GOMP_parallel", ir.FunctionType(ir.VoidType(), [PTR, PTR, I32, I32]))
        slot = b.alloca(PTR, name="data")
        b.store(args_ptr, slot)
        b.call(gomp, [omp, slot, b.trunc(nthreads, I32), I32(0)])
        b.ret_void()

    def _declare(self, name: str, fnty: ir.FunctionType) -> ir.Function:
        existing = self.m.globals.get(name)
        return existing if existing is not None else ir.Function(self.m, fnty, name)

    def _unpack(self, b: ir.IRBuilder, args: ir.Value) -> list[ir.Value]:
        out = []
        for i, p in enumerate(self.params):
            slot = b.gep(args, [I64(i)], source_etype=PTR)
            out.append(b.load(slot, typ=PTR, name=p.name))
        return out

    # ------------------------------------------------------------------ body

    def _body(self, symbol: str) -> ir.Function:
        fnty = ir.FunctionType(ir.VoidType(), [I64, I64] + [PTR] * len(self.params))
        fn = ir.Function(self.m, fnty, f"{symbol}_body")
        fn.linkage = "internal"
        fn.args[0].name, fn.args[1].name = "tid", "nth"
        self.ptrs: dict[str, ir.Value] = {}
        for p, a in zip(self.params, fn.args[2:], strict=True):
            a.name = f"p_{p.name}"
            a.add_attribute("noalias")
            self.ptrs[p.name] = a
        self.entry_block = fn.append_basic_block("entry")
        start = fn.append_basic_block("start")
        self.b = ir.IRBuilder(start)
        self.alloca_builder = ir.IRBuilder(self.entry_block)
        self.scopes: list[dict] = [{}]
        self.env: dict[str, ir.Value] = {}
        tid, nth = fn.args[0], fn.args[1]
        barrier = self._declare("GOMP_barrier", ir.FunctionType(ir.VoidType(), []))
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

    def _emit_store(self, st: Stage, idx: Index) -> None:
        inner_shape = st.shape[st.n_outer :]
        if not inner_shape:
            for o in st.sinks:
                self._store(o, self.ptrs[o], idx, self.value(o, idx))
            return
        v = self.fresh("j", inner_shape[0])
        with self._loop(I64(0), I64(inner_shape[0]), v.name) as j:
            self.env[v.name] = j
            full = idx + (v.lin,)
            for o in st.sinks:
                self._store(o, self.ptrs[o], full, self.value(o, full))

    def _store(self, name: str, ptr: ir.Value, idx: Index, value: ir.Value) -> None:
        t = self.types[name]
        ety = self._storage(t.dtype)
        if t.dtype is DType.bool:
            value = self.b.zext(value, I8)
        at = self.b.gep(ptr, [self.lin(linearize(idx, t.shape))], source_etype=ety)
        self.b.store(value, at)

    def _scratch_ptr(self, name: str) -> ir.Value:
        return self.b.gep(self.ptrs["scratch"], [I64(self.offsets[name])], source_etype=I8)

    def _storage(self, d: DType) -> ir.Type:
        if d.is_float:
            return self.F
        return {DType.i64: I64, DType.i32: I32, DType.bool: I8}[d]

    def _compute(self, d: DType) -> ir.Type:
        if d.is_float:
            return self.F
        return {DType.i64: I64, DType.i32: I32, DType.bool: I1}[d]

    # ------------------------------------------------------------------ reductions

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
        if wide and not rest and var.extent > BLOCK:  # blocked: float partials, f64 total
            blocks = -(-var.extent // BLOCK)
            with self._loop(I64(0), I64(blocks), f"{var.name}.blk") as blk:
                part = self.alloca_builder.alloca(self.F, name=f"{node.out.name}.part")
                b.store(self._identity(op, self.F), part)
                start = b.mul(blk, I64(BLOCK))
                stop_raw = b.add(start, I64(BLOCK))
                stop = b.select(
                    b.icmp_signed("<", stop_raw, I64(var.extent)), stop_raw, I64(var.extent)
                )
                with self._loop(start, stop, var.name) as i:
                    self.env[var.name] = i
                    x = self._acc_value(node, xidx, self.F)
                    b.store(self._combine(op, b.load(part, typ=self.F), x), part)
                total = b.fadd(b.load(acc, typ=acc_ty), b.fpext(b.load(part, typ=self.F), acc_ty))
                b.store(total, acc)
            return
        if wide and len(rest) == 0:  # the innermost of several dims: a float partial per row
            part = self.alloca_builder.alloca(self.F, name=f"{node.out.name}.part")
            b.store(self._identity(op, self.F), part)
            with self._loop(I64(0), I64(var.extent), var.name) as i:
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
        from backends.llvm_ops import intrinsic

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
        elif name not in self.producers or self.producers[name].op == "constant":
            out = self._load(self.ptrs[name], t, idx)
        elif self.producers[name].op in REDUCE_OPS:  # a row phase of an outer loop: here
            out = self._reduce(self.producers[name], idx)
        else:
            out = self._node(self.producers[name], idx)
        return self._cache(key, out)

    def _load(self, ptr: ir.Value, t: TensorType, idx: Index) -> ir.Value:
        ety = self._storage(t.dtype)
        at = self.b.gep(ptr, [self.lin(linearize(idx, t.shape))], source_etype=ety)
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
                f"llvm backend: no native code for {op} in kernel {self.spec.name} "
                f"(node {node.out.name}{', ' + node.source if node.source else ''})"
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


__all__ = ["KernelModule", "Param", "counted_loop", "render_kernel"]
