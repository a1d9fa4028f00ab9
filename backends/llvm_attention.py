"""Attention as one native kernel: MKL GEMMs per head block, softmax fused between them.

For every (batch, head, block of query rows) the kernel computes the scores block
`S = scale * Q_blk K^T` with MKL's `sgemm_` into a per-thread buffer sized to stay in cache,
applies the causal and explicit masks and a safe softmax (a fully masked row gives zeros, as
`compiler.ops.ref.sdpa` says) in vectorized native loops, then `O_blk = E V` with `sgemm_`
straight into the output, E the unnormalized exponentials; each output row is then scaled by
its 1 / sum (Dv values a row, not S). Blocks are shared among threads with `GOMP_parallel`; MKL runs
single-threaded inside the region, so the two thread pools never compete.

Q, K, V (and the mask) are read where they lie: each is a view chain over a contiguous buffer
(`compiler.schedule.index_map`), e.g. GPT-2's heads are strided slices of the fused QKV
product. Eligible: float32, views with a unit-stride last dim (a BLAS leading dimension),
mask broadcastable by strides. Otherwise the backend calls torch's attention instead. A bf16 or
f16 model's attention is eligible too: the driver stores every float an extern call reads or
writes in float32 (Note [16-bit storage] in `backends.llvm_storage`), and the reference computes
sdpa in float32.

Note [Scores blocks]
A block's two GEMMs are most of the kernel, and MKL runs them faster the more query rows a
call has; the softmax between them wants the block in L2. Measured on an AMD EPYC (Zen 4,
1 MiB L2 a core) at the unet's self-attention (8 heads, S = 1024, D = 40), one process,
interleaved, medians of 30, ms: eager's flash attention 11.83, ours with blocks of at most
256 KiB (64 rows) 14.18, 512 KiB 12.87, 1 MiB (256 rows) 12.27, 2 MiB 12.10, 4 MiB 12.39.
So SCORES_BYTES is 1 MiB (256 KiB before, chosen on an Intel Xeon). Scaling the output rows
by 1 / sum after `E V` instead of normalizing E saves a pass over the scores: 12.27 -> 10.2
against eager's 10.0 in a later run. With no softmax at all the kernel ran 11.95 against
eager's 12.03: what is left is the exponentials.

Row-major to BLAS (column-major): a row-major X[r, c] with row stride ld is the column-major
matrix X^T with leading dimension ld, so
    S^T (S x rows) = op(K)^T ... : sgemm_('T', 'N', S, rows, D, scale, K, ldk, Q, ldq, 0, S, S)
    O^T (Dv x rows)            : sgemm_('N', 'N', Dv, rows, S, 1, V, ldv, P, S, 0, O, Dv)
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from llvmlite import ir

from backends import llvm_math
from backends.llvm_kernel import I8, I32, I64, PTR, KernelModule, Param, counted_loop
from compiler.ir import DType, Node
from compiler.schedule import ExternCall, index_map

F32 = ir.FloatType()
STORED_F32 = (DType.f32, DType.bf16, DType.f16)  # float32 in memory in a float32 program
SCORES_BYTES = 1 << 20
"""A thread's scores block at most (Note [Scores blocks])."""
CAUSAL_ROWS = 32  # causal blocks skip the keys after their last row


@dataclass(frozen=True)
class Operand:
    root: str
    shape: tuple[int, ...]  # broadcast to 4-d
    strides: tuple[int, ...]
    offset: int
    dtype: DType


def plan(e: ExternCall) -> list[Operand] | None:
    """The strided operands of an sdpa extern call, or None when the native kernel cannot
    take it (not stored in float32, or a view the BLAS cannot read in place). Call it for a
    float32 program only (bf16/f16 operands are float32 in memory there)."""
    n = e.node
    if n.op != "sdpa" or n.out.type.dtype not in STORED_F32:
        return None
    producers = {v.out.name: v for v in e.views}
    types = {v.name: v.type for v in e.inputs}
    out = []
    for i, name in enumerate(n.inputs):
        chain: list[Node] = []
        while name in producers:
            chain.append(producers[name])
            name = producers[name].inputs[0]
        mapped = index_map(chain[::-1], types[name])
        if mapped is None:
            return None
        shape, strides, offset = mapped
        dtype = types[name].dtype
        dtype = DType.f32 if dtype in STORED_F32 else dtype
        if i < 3 and (strides[-1] != 1 or dtype is not DType.f32 or len(shape) != 4):
            return None
        if i == 3:  # the mask broadcasts against [B, H, L, S]
            if dtype not in (DType.f32, DType.bool):
                return None
            lead = 4 - len(shape)
            shape, strides = (1,) * lead + shape, (0,) * lead + strides
            strides = tuple(0 if s == 1 else st for s, st in zip(shape, strides, strict=True))
        out.append(Operand(name, shape, strides, offset, dtype))
    return out


def render_attention(e: ExternCall, ops: list[Operand], max_threads: int) -> KernelModule:
    """The native attention kernel for `e` (see the module docstring)."""
    return _Attention(e, ops, max_threads).module()


class _Attention:
    def __init__(self, e: ExternCall, ops: list[Operand], max_threads: int) -> None:
        self.e, self.ops = e, ops
        self.q, self.k, self.v = ops[:3]
        self.mask = ops[3] if len(ops) > 3 else None
        b, h, length, d = self.q.shape
        self.B, self.H, self.L, self.D = b, h, length, d
        self.Hk, self.S, self.Dv = self.k.shape[1], self.k.shape[2], self.v.shape[3]
        scale = e.node.attr("scale")
        self.scale = 1 / math.sqrt(d) if scale is None else scale
        self.causal = e.node.attr("is_causal")
        fit = 2 ** int(math.log2(max(1, SCORES_BYTES // (4 * self.S))))  # rows whose scores fit
        cap = CAUSAL_ROWS if self.causal else length  # smaller causal blocks skip more keys
        self.rows = max(1, min(length, fit, cap))
        self.blocks = -(-length // self.rows)
        self.threads = max(1, max_threads)
        roots = list(dict.fromkeys(o.root for o in ops))
        types = {v.name: v.type for v in e.inputs}
        self.params = tuple(
            [Param(r, "in", types[r]) for r in roots]
            + [Param(e.output, "out", e.node.out.type), Param("scratch", "scratch")]
        )
        # per thread: the scores block, then each row's 1 / sum, to a 64-byte line
        self.thread_bytes = self.rows * self.S * 4 + -(-self.rows * 4 // 64) * 64
        self.scratch_bytes = self.threads * self.thread_bytes

    def module(self) -> KernelModule:
        roots = list(dict.fromkeys(o.root for o in self.ops))  # names only by position
        shapes = [(roots.index(o.root), o.shape, o.strides, o.offset, o.dtype) for o in self.ops]
        key = repr((shapes, self.rows, self.threads, self.scale, self.causal, self.Dv, self.H))
        symbol = f"tf_attention_{hashlib.sha256(key.encode()).hexdigest()[:10]}"
        self.m = ir.Module(name=symbol)
        body = self._body(symbol)
        self._entry(symbol, body)
        head = [
            f"; tilefuse native attention for {self.e.name}: B={self.B} H={self.H} "
            f"(kv heads {self.Hk}) L={self.L} S={self.S} D={self.D} Dv={self.Dv} "
            f"scale={self.scale:g} causal={self.causal} mask={self.mask is not None}",
            f"; {self.blocks} blocks of {self.rows} query rows per head; scores per thread "
            f"{self.rows * self.S * 4} bytes; MKL sgemm_ for Q K^T and P V",
        ]
        head += [f"; {line}" for line in str(self.e).splitlines()]
        stages = (f"attention: {self.B * self.H * self.blocks} blocks x {self.rows} rows",)
        text = "\n".join(head) + "\n" + str(self.m)
        return KernelModule(symbol, text, self.params, self.scratch_bytes, True, stages)

    def _entry(self, symbol: str, body: ir.Function) -> None:
        """`symbol(args, nthreads)`: fork min(nthreads, threads) threads, each running body."""
        m = self.m
        i32fn = ir.FunctionType(I32, [])
        omp = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR]), f"{symbol}_omp")
        omp.linkage = "internal"
        b = ir.IRBuilder(omp.append_basic_block("entry"))
        tid = b.call(ir.Function(m, i32fn, "omp_get_thread_num"), [])
        nth = b.call(ir.Function(m, i32fn, "omp_get_num_threads"), [])
        args = b.load(omp.args[0], typ=PTR)
        ptrs = [
            b.load(b.gep(args, [I64(i)], source_etype=PTR), typ=PTR)
            for i in range(len(self.params))
        ]
        b.call(body, [b.sext(tid, I64), b.sext(nth, I64), *ptrs])
        b.ret_void()
        entry = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, I64]), symbol)
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        args_ptr, nthreads = entry.args
        n = b.select(b.icmp_signed("<", nthreads, I64(self.threads)), nthreads, I64(self.threads))
        slot = b.alloca(PTR)
        b.store(args_ptr, slot)
        gomp = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, PTR, I32, I32]), "GOMP_parallel")
        b.call(gomp, [omp, slot, b.trunc(n, I32), I32(0)])
        b.ret_void()

    def _body(self, symbol: str) -> ir.Function:
        n_ptrs = len(self.params)
        fn = ir.Function(
            self.m, ir.FunctionType(ir.VoidType(), [I64, I64] + [PTR] * n_ptrs), f"{symbol}_body"
        )
        fn.linkage = "internal"
        tid, nth, *ptrs = fn.args
        for p, a in zip(self.params, ptrs, strict=True):
            a.name = f"p_{p.name}"
        base = {p.name: a for p, a in zip(self.params, ptrs, strict=True)}
        entry = fn.append_basic_block("entry")
        b = ir.IRBuilder(entry)
        self.b = b
        self.sgemm = ir.Function(self.m, ir.FunctionType(ir.VoidType(), [PTR] * 13), "sgemm_")
        by_ref = self.refs = {}
        for name, ty, value in [
            ("T", I8, ord("T")),
            ("N", I8, ord("N")),
            ("one", F32, 1.0),
            ("zero", F32, 0.0),
            ("scale", F32, self.scale),
        ]:
            by_ref[name] = b.alloca(ty, name=name)
            b.store(ir.Constant(ty, value), by_ref[name])
        ints = self.ints = {}
        for name in ("m", "n", "k", "lda", "ldb", "ldc"):
            ints[name] = b.alloca(I32, name=name)
        self.peak = b.alloca(F32, name="max")
        self.total = b.alloca(F32, name="sum")
        tasks = self.B * self.H * self.blocks
        chunk = b.sdiv(b.add(I64(tasks), b.sub(nth, I64(1))), nth)
        lo = b.select(
            b.icmp_signed("<", b.mul(tid, chunk), I64(tasks)), b.mul(tid, chunk), I64(tasks)
        )
        hi0 = b.add(lo, chunk)
        hi = b.select(b.icmp_signed("<", hi0, I64(tasks)), hi0, I64(tasks))
        scores = b.gep(base["scratch"], [b.mul(tid, I64(self.thread_bytes))], source_etype=I8)
        inverses = b.gep(scores, [I64(self.rows * self.S * 4)], source_etype=I8)
        with counted_loop(b, lo, hi, "task") as t:
            bh = b.udiv(t, I64(self.blocks))
            blk = b.urem(t, I64(self.blocks))
            bi, hi_ = b.udiv(bh, I64(self.H)), b.urem(bh, I64(self.H))
            hk = b.udiv(hi_, I64(self.H // self.Hk))
            r0 = b.mul(blk, I64(self.rows))
            left = b.sub(I64(self.L), r0)
            rows = b.select(b.icmp_signed("<", left, I64(self.rows)), left, I64(self.rows))
            q = self._at(base, self.q, [bi, hi_, r0])
            k = self._at(base, self.k, [bi, hk, I64(0)])
            v = self._at(base, self.v, [bi, hk, I64(0)])
            row0 = b.add(b.mul(bh, I64(self.L)), r0)
            out = b.gep(base[self.e.output], [b.mul(row0, I64(self.Dv))], source_etype=F32)
            keys: ir.Value = I64(self.S)
            if self.causal:  # keys past the block's last row are masked for every row in it
                last = b.add(r0, rows)
                keys = b.select(b.icmp_signed("<", last, keys), last, keys, name="keys")
            self._gemm(
                "T",
                keys,
                rows,
                self.D,
                "scale",
                (k, self.k.strides[2]),
                (q, self.q.strides[2]),
                (scores, self.S),
            )
            self._softmax(base, scores, inverses, rows, keys, r0, bi, hi_)
            self._gemm(
                "N",
                I64(self.Dv),
                rows,
                keys,
                "one",
                (v, self.v.strides[2]),
                (scores, self.S),
                (out, self.Dv),
            )
            # each row by its 1 / sum; the row length through an empty asm, so -O3 does not
            # unroll the row loop in full and vectorize across rows with gathers and scatters
            # (Note [Blocks LLVM does not unroll] in backends.llvm_reduce)
            width = b.asm(ir.FunctionType(I64, [I64]), "", "=r,0", [I64(self.Dv)], False)
            with counted_loop(b, I64(0), rows, "i") as i:
                inv = b.load(b.gep(inverses, [i], source_etype=F32), typ=F32)
                row = b.gep(out, [b.mul(i, I64(self.Dv))], source_etype=F32)
                with counted_loop(b, I64(0), width, "j") as j:
                    at = b.gep(row, [j], source_etype=F32)
                    b.store(b.fmul(b.load(at, typ=F32), inv), at)
        b.ret_void()
        return fn

    def _at(self, base: dict, op: Operand, index: list[ir.Value]) -> ir.Value:
        b = self.b
        offset: ir.Value = I64(op.offset)
        for i, s in zip(index, op.strides[:3], strict=True):
            if s:
                offset = b.add(offset, b.mul(i, I64(s)))
        return b.gep(base[op.root], [offset], source_etype=F32)

    def _gemm(
        self,
        transa: str,
        m: ir.Value,
        n: ir.Value,
        k: ir.Value | int,
        alpha: str,
        a: tuple[ir.Value, int],
        bm: tuple[ir.Value, int],
        c: tuple[ir.Value, int],
    ) -> None:
        """sgemm_(transa, 'N', m, n, k, alpha, A, lda, B, ldb, 0, C, ldc): Fortran takes every
        argument by reference."""
        b, ints, refs = self.b, self.ints, self.refs
        values = {
            "m": m,
            "n": n,
            "k": k if isinstance(k, ir.Value) else I64(k),
            "lda": I64(a[1]),
            "ldb": I64(bm[1]),
        }
        values["ldc"] = I64(c[1])
        for name, value in values.items():
            b.store(b.trunc(value, I32), ints[name])
        args = [refs[transa], refs["N"], ints["m"], ints["n"], ints["k"], refs[alpha], a[0]]
        args += [ints["lda"], bm[0], ints["ldb"], refs["zero"], c[0], ints["ldc"]]
        b.call(self.sgemm, args)

    def _softmax(
        self,
        base: dict,
        scores: ir.Value,
        inverses: ir.Value,
        rows: ir.Value,
        keys: ir.Value,
        r0: ir.Value,
        bi: ir.Value,
        h: ir.Value,
    ) -> None:
        b = self.b
        S = self.S
        with counted_loop(b, I64(0), rows, "i") as i:
            gi = b.add(r0, i)
            row = b.gep(scores, [b.mul(i, I64(S))], source_etype=F32)
            mask_row = None
            if self.mask is not None:
                mk = self.mask
                off = I64(mk.offset)
                for idx, s in zip((bi, h, gi), mk.strides[:3], strict=True):
                    if s:
                        off = b.add(off, b.mul(idx, I64(s)))
                ety = F32 if mk.dtype is DType.f32 else I8
                mask_row = (b.gep(base[mk.root], [off], source_etype=ety), ety, mk.strides[3])
            peak = self.peak
            b.store(ir.Constant(F32, -math.inf), peak)
            with counted_loop(b, I64(0), keys, "j") as j:
                at = b.gep(row, [j], source_etype=F32)
                x = b.load(at, typ=F32)
                if self.causal:  # tril: key j is visible from query row gi when j <= gi
                    x = b.select(b.icmp_signed("<=", j, gi), x, ir.Constant(F32, -math.inf))
                if mask_row is not None:
                    ptr, ety, stride = mask_row
                    mv = b.load(b.gep(ptr, [b.mul(j, I64(stride))], source_etype=ety), typ=ety)
                    if ety == F32:
                        x = b.fadd(x, mv)
                    else:
                        keep = b.icmp_unsigned("!=", mv, ir.Constant(I8, 0))
                        x = b.select(keep, x, ir.Constant(F32, -math.inf))
                b.store(x, at)
                cur = b.load(peak, typ=F32)
                b.store(b.call(_maximum(self.m), [cur, x]), peak)
            m = b.load(peak, typ=F32)
            finite = b.fcmp_ordered("<", b.call(_fabs(self.m), [m]), ir.Constant(F32, math.inf))
            m = b.select(finite, m, ir.Constant(F32, 0.0))
            total = self.total
            b.store(ir.Constant(F32, 0.0), total)
            with counted_loop(b, I64(0), keys, "j") as j:
                at = b.gep(row, [j], source_etype=F32)
                e = llvm_math.exp(b, b.fsub(b.load(at, typ=F32), m))
                b.store(e, at)
                b.store(b.fadd(b.load(total, typ=F32), e, flags=("reassoc", "nsz")), total)
            s = b.load(total, typ=F32)
            s = b.select(b.fcmp_ordered("==", s, ir.Constant(F32, 0.0)), ir.Constant(F32, 1.0), s)
            b.store(b.fdiv(ir.Constant(F32, 1.0), s), b.gep(inverses, [i], source_etype=F32))


def _maximum(m: ir.Module) -> ir.Function:
    fn = m.globals.get("llvm.maximum.f32")
    return fn or ir.Function(m, ir.FunctionType(F32, [F32, F32]), "llvm.maximum.f32")


def _fabs(m: ir.Module) -> ir.Function:
    fn = m.globals.get("llvm.fabs.f32")
    return fn or ir.Function(m, ir.FunctionType(F32, [F32]), "llvm.fabs.f32")


__all__ = ["Operand", "plan", "render_attention"]
