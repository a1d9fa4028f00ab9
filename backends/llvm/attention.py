"""Attention as one native kernel: register-tiled products per head block, softmax between.

For every (batch, head, block of query rows) the kernel computes the scores block
`S = scale * Q_blk K^T` into a per-thread buffer sized to stay in cache, applies the causal and
explicit masks and a safe softmax (a fully masked row gives zeros, as `compiler.core.ops.ref.sdpa`
says) in vectorized native loops, then `O_blk = E V` straight into the output, E the
unnormalized exponentials, each output row scaled by its 1 / sum as it is stored (Dv values a
row, not S). Both products are the register tiles of `backends.llvm.tiles`: K^T (and V, padded
to whole vectors when Dv is not a multiple of 16) is packed into the thread's scratch once per
key head, the thread's next blocks of that head reuse it. Blocks are shared among threads with
`GOMP_parallel`.

Q, K, V (and the mask) are read where they lie: each is a view chain over a contiguous buffer
(`compiler.core.schedule.index_map`), e.g. GPT-2's heads are strided slices of the fused QKV
product. Eligible: float32, views with a unit-stride last dim, mask broadcastable by strides.
Otherwise the backend calls torch's attention instead. A bf16 or f16 model's attention is
eligible too: the driver stores every float an extern call reads or writes in float32 (Note
[16-bit storage] in `backends.llvm.storage`), and the reference computes sdpa in float32.

Note [Attention's products]
Both products are register tiles, not a library GEMM per block: their short side (D or Dv of
40-64) is the worst case for a library GEMM, which ran them well below a core's peak. With the
tiles the unet's self-attention (8 heads, S = 1024, D = 40) runs faster than eager's flash
attention (9.5 against 11.7 ms on 2 cores; figures in docs/llvm_backend.md, Measurements).

Note [Scores blocks]
The softmax between the products wants the block in L2: SCORES_BYTES (1 MiB, 256 query rows at
S = 1024) is the size that ran fastest with a 1 MiB L2 a core; with the register tiles the size
hardly matters between 256 KiB and 2 MiB. Scaling the output rows by 1 / sum instead of
normalizing E saves a pass over the scores.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass

import torch
from llvmlite import ir

from backends.llvm import math as llvm_math
from backends.llvm import tiles as llvm_tiles
from backends.llvm import tuning
from backends.llvm.emit import (
    I8,
    I64,
    PTR,
    counted_loop,
    module_text,
    parallel_entry,
    thread_share,
)
from backends.llvm.kernel import KernelModule, Param
from backends.llvm.runtime import native_runner
from backends.llvm.tuning import Choice
from compiler.core.config import num_threads
from compiler.core.ir import Node
from compiler.core.schedule import ExternCall, index_map
from compiler.core.types import DType

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


def key(e: ExternCall, ops: list[Operand], into_output: bool) -> str:
    """The attention of `e` as the tuning file keys it: each operand's shape and strides, the
    mask's dtype, causal, and where the result goes."""
    n = e.node
    parts = [f"{x}={list(o.shape)}/{list(o.strides)}" for x, o in zip("qkvm", ops, strict=False)]
    if len(ops) > 3:
        parts.append(f"mask={ops[3].dtype.name}")
    parts.append(f"causal={int(bool(n.attr('is_causal')))}")
    parts.append(f"into={'output' if into_output else 'slot'}")
    return " ".join(parts)


def choose(
    e: ExternCall, ops: list[Operand], into_output: bool, measure: bool
) -> tuple[str, Choice]:
    """ "native" (this kernel) or "torch" (`F.scaled_dot_product_attention` on the operands
    where they lie), whichever is faster on this host for the shape (Note [Measured choices]
    in backends.llvm.tuning); the native kernel by default. Without `measure`, the tuning
    file's choice or the default: nothing is timed. With AVX-512 the two run alike on the
    examples' attentions; with AVX2 torch's is faster on long sequences (figures in
    benchmarks/RESULTS.md)."""
    candidates = {
        "native": functools.partial(_time_native, e, ops),
        "torch": functools.partial(_time_torch, e, ops, into_output),
    }
    made = tuning.decide(
        "attention", key(e, ops, into_output), candidates, "native", measure=measure
    )
    return made.choice, made


def candidate_modules(attentions: list[tuple[ExternCall, list[Operand], bool]]) -> list[str]:
    """The IR of the native kernels `choose` is about to time (each the module the program
    would call), for the caller to compile at once with the rest."""
    return [
        render_attention(e, ops, num_threads()).ir
        for e, ops, into in attentions
        if tuning.pending("attention", key(e, ops, into))
    ]


def _roots(e: ExternCall, ops: list[Operand]) -> dict[str, torch.Tensor]:
    """Random tensors for the operands' roots as a float32 program stores them; a mask that
    is only a mask keeps every key (true, or 0 added)."""
    types = {v.name: v.type for v in e.inputs}
    gen = torch.Generator().manual_seed(0)
    qkv = {o.root for o in ops[:3]}
    roots: dict[str, torch.Tensor] = {}
    for o in ops:
        shape = types[o.root].shape
        if o.root in roots:
            continue
        if o.dtype is DType.bool:
            roots[o.root] = torch.ones(shape, dtype=torch.bool)
        elif o.root in qkv:
            roots[o.root] = torch.randn(shape, generator=gen)
        else:
            roots[o.root] = torch.zeros(shape)
    return roots


def _time_native(e: ExternCall, ops: list[Operand]) -> tuning.Runner:
    mod = render_attention(e, ops, num_threads())
    roots = _roots(e, ops)
    args = [roots[p.name] for p in mod.params if p.role == "in"]
    return native_runner(mod, [*args, torch.empty(e.node.out.type.shape)])


def _time_torch(e: ExternCall, ops: list[Operand], into_output: bool) -> tuning.Runner:
    n = e.node
    roots = _roots(e, ops)
    views = [torch.as_strided(roots[o.root], o.shape, o.strides, o.offset) for o in ops]
    mask = views[3] if len(views) > 3 else None
    out = torch.empty(n.out.type.shape)
    scale, causal, gqa = n.attr("scale"), n.attr("is_causal"), n.attr("enable_gqa")
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def run() -> None:
        y = sdpa(*views[:3], attn_mask=mask, scale=scale, is_causal=causal, enable_gqa=gqa)
        if into_output:
            out.copy_(y)
        else:
            y.contiguous()

    return run


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
        # per thread, each to a 64-byte line: the scores block (rows of whole scores tiles),
        # each row's 1 / sum, K^T packed, and V padded to whole vectors when Dv needs it
        self.ld = llvm_tiles.padded_keys(self.S)
        self.pad_v = self.Dv % llvm_tiles.LANES != 0
        self.vw = llvm_tiles.vectors(self.Dv) * llvm_tiles.LANES  # padded V's row
        sections = [self.rows * self.ld, self.rows, self.D * self.ld]
        sections += [self.S * self.vw] if self.pad_v else []
        self.offsets = [0]
        for floats in sections:
            self.offsets.append(self.offsets[-1] + -(-floats * 4 // 64) * 64)
        self.thread_bytes = self.offsets[-1]
        self.scratch_bytes = self.threads * self.thread_bytes

    def module(self) -> KernelModule:
        roots = list(dict.fromkeys(o.root for o in self.ops))  # names only by position
        shapes = [(roots.index(o.root), o.shape, o.strides, o.offset, o.dtype) for o in self.ops]
        tiles = llvm_tiles.register_tiles()
        key = repr(
            (shapes, self.rows, self.threads, self.scale, self.causal, self.Dv, self.H, tiles)
        )
        symbol = f"tf_attention_{hashlib.sha256(key.encode()).hexdigest()[:10]}"

        def emit() -> ir.Module:
            self.m = ir.Module(name=symbol)
            params = [p.name for p in self.params]
            parallel_entry(self.m, symbol, self._body(symbol), params, max_threads=self.threads)
            return self.m

        head = [
            f"; tilefuse native attention for {self.e.name}: B={self.B} H={self.H} "
            f"(kv heads {self.Hk}) L={self.L} S={self.S} D={self.D} Dv={self.Dv} "
            f"scale={self.scale:g} causal={self.causal} mask={self.mask is not None}",
            f"; {self.blocks} blocks of {self.rows} query rows per head; scores per thread "
            f"{self.rows * self.ld * 4} bytes; Q K^T and E V in register tiles "
            f"(backends.llvm.tiles), K^T packed per key head",
        ]
        head += [f"; {line}" for line in str(self.e).splitlines()]
        stages = (f"attention: {self.B * self.H * self.blocks} blocks x {self.rows} rows",)
        text = "\n".join(head) + "\n" + module_text(symbol, emit)
        return KernelModule(symbol, text, self.params, self.scratch_bytes, True, stages)

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
        shape = llvm_tiles.register_tiles()  # a product tile, or an output tile of <= 8 rows
        cols = max(shape.cols, self.vw // llvm_tiles.LANES)
        self.acc = llvm_tiles.Accumulators(b, max(shape.rows, 8), cols, "acc")
        packed = b.alloca(I64, name="packed_head")  # the key head whose K^T (and V) is packed
        b.store(I64(-1), packed)
        self.peak = b.alloca(F32, name="max")
        self.total = b.alloca(F32, name="sum")
        tasks = self.B * self.H * self.blocks
        lo, hi = thread_share(b, tid, nth, tasks)
        scores = b.gep(base["scratch"], [b.mul(tid, I64(self.thread_bytes))], source_etype=I8)
        inverses, kt, vp = (b.gep(scores, [I64(at)], source_etype=I8) for at in self.offsets[1:4])
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
            head = b.add(b.mul(bi, I64(self.Hk)), hk)
            with b.if_then(b.icmp_signed("!=", b.load(packed, typ=I64), head)):
                llvm_tiles.pack_transposed(b, k, self.k.strides[2], self.S, self.D, kt, self.ld)
                if self.pad_v:
                    llvm_tiles.pack_padded(b, v, self.v.strides[2], self.S, self.Dv, vp)
                b.store(head, packed)
            llvm_tiles.scores(
                b, self.acc, (q, self.q.strides[2]), (kt, self.ld), (scores, self.ld), rows, keys,
                self.D, self.scale,
            )  # fmt: skip
            self._softmax(base, scores, inverses, rows, keys, r0, bi, hi_)
            values = (vp, self.vw) if self.pad_v else (v, self.v.strides[2])
            llvm_tiles.output(
                b, self.acc, (scores, self.ld), values, (out, self.Dv), rows, keys, self.Dv,
                inverses,
            )  # fmt: skip
        b.ret_void()
        return fn

    def _at(self, base: dict, op: Operand, index: list[ir.Value]) -> ir.Value:
        b = self.b
        offset: ir.Value = I64(op.offset)
        for i, s in zip(index, op.strides[:3], strict=True):
            if s:
                offset = b.add(offset, b.mul(i, I64(s)))
        return b.gep(base[op.root], [offset], source_etype=F32)

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
        with counted_loop(b, I64(0), rows, "i") as i:
            gi = b.add(r0, i)
            row = b.gep(scores, [b.mul(i, I64(self.ld))], source_etype=F32)
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
