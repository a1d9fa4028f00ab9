"""Native matmuls straight into their destination, in the register tiles of `backends.llvm.tiles`.

    out[i] = A[i] @ B[i] (+ bias)      A [M, K] any strides, B [K, N] row-major, out [M, N]

The driver uses them where a library GEMM would need a copy: the product is a kernel output
(the packed GEMMs return a fresh tensor), or A is a strided view such as a UNet's NCHW map read
as [pixels, channels], or a 1x1 convolution (`W[OC, C] @ x[C, H*W]` per image, the bias per
row). B is the weight: `x @ w` reads `w` [K, N] in place, `x @ w.T` reads a transposed copy
made once per weight version (`PackedWeights.transposed`).

Note [Matmuls into their destination]
Native rather than a library's `mm(..., out=)` / `addmm`: at these shapes the tiles ran as fast
or faster (a cross-attention's K/V projection, 16 x 768 x 320: 198 against 94 GFLOP/s on 2
cores; figures in docs/llvm_backend.md, Measurements) and need no copy. The work is split into
tasks of (image, column panel, a tile's rows), a panel being as many tiles' columns as keep
K x columns of B within PANEL_BYTES (in L2 while the thread's rows stream past it), the tasks
shared among threads in order. The tiles follow the instruction set (Note [Register tiles per
instruction set] in backends.llvm.tiles).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from llvmlite import ir

from backends.llvm import tiles as llvm_tiles
from backends.llvm.emit import I64, PTR, counted_loop, module_text, parallel_entry, thread_share
from backends.llvm.kernel import KernelModule, Param
from compiler.core.types import DType, TensorType

F32 = ir.FloatType()
PANEL_BYTES = 256 << 10
"""B's columns a task's rows multiply at most (Note [Matmuls into their destination])."""


@dataclass(frozen=True)
class Matmul:
    """`batch` products [m, k] @ [k, n]: A's (batch, row, column) element strides, whether
    each product has its own B (`b_batch` 1: B is [batch, k, n]) or all share one (0), and
    the bias: None, "row" (one value per output row, a 1x1 convolution's) or "col" (one per
    column, a linear layer's)."""

    batch: int
    m: int
    n: int
    k: int
    a_strides: tuple[int, int, int]
    b_batch: int = 0
    bias: str | None = None

    def panels(self) -> tuple[int, int]:
        """(tiles per panel, panels)."""
        keys = llvm_tiles.register_tiles().keys
        tiles = -(-self.n // keys)
        per = max(1, min(tiles, PANEL_BYTES // (self.k * keys * 4)))
        return per, -(-tiles // per)

    def tasks(self) -> tuple[int, int, int, int]:
        """(blocks of a product tile's rows, tiles per panel, panels, tasks): a task is one
        block of one panel of one product."""
        blocks = -(-self.m // llvm_tiles.register_tiles().rows)
        per, panels = self.panels()
        return blocks, per, panels, self.batch * panels * blocks


def module(name: str, mm: Matmul) -> KernelModule:
    """The native kernel of `mm`, named after the extern call `name` it computes.
    Parameters: a (its root, read with `mm.a_strides`), b, the bias when `mm.bias`, out."""
    tiles = llvm_tiles.register_tiles()
    symbol = f"tf_matmul_{hashlib.sha256(repr((mm, tiles)).encode()).hexdigest()[:10]}"
    a_size = 1 + sum((d - 1) * s for d, s in zip((mm.batch, mm.m, mm.k), mm.a_strides, strict=True))
    params = [
        Param("a", "in", TensorType((a_size,), DType.f32)),
        Param("b", "in", TensorType((mm.batch if mm.b_batch else 1, mm.k, mm.n), DType.f32)),
    ]
    if mm.bias:
        params.append(
            Param("bias", "in", TensorType((mm.m if mm.bias == "row" else mm.n,), DType.f32))
        )
    params.append(Param("out", "out", TensorType((mm.batch, mm.m, mm.n), DType.f32)))
    rows = tiles.rows
    blocks, per, panels, tasks = mm.tasks()
    bias_text = {None: "", "row": " + bias[row]", "col": " + bias[col]"}[mm.bias]
    head = [
        f"; tilefuse native matmul for {name}: {mm.batch} x [{mm.m}, {mm.k}] @ [{mm.k}, {mm.n}]"
        f"{bias_text}, A strides {mm.a_strides}, in register tiles (backends.llvm.tiles); "
        f"{panels} panel(s) of {per} tiles x {blocks} blocks of {rows} rows",
        f"; args: {', '.join(f'{q.role} {q.name}' for q in params)}",
    ]
    stages = (f"matmul: {tasks} tasks of {rows} rows x {per} tiles of {tiles.keys} columns",)
    text = (
        "\n".join(head) + "\n" + module_text(symbol, functools.partial(_emit, symbol, mm, params))
    )
    return KernelModule(symbol, text, tuple(params), 0, True, stages)


def _emit(symbol: str, mm: Matmul, params: list[Param]) -> ir.Module:
    """The IR of `module`: tasks of (image, column panel, a tile's rows) shared among the
    threads."""
    tiles = llvm_tiles.register_tiles()
    rows = tiles.rows
    blocks, per, panels, tasks = mm.tasks()
    m = ir.Module(name=symbol)
    fnty = ir.FunctionType(ir.VoidType(), [I64, I64] + [PTR] * len(params))
    fn = ir.Function(m, fnty, f"{symbol}_body")
    fn.linkage = "internal"
    tid, nth, *ptrs = fn.args
    p = dict(zip((q.name for q in params), ptrs, strict=True))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    acc = llvm_tiles.Accumulators(b, rows, tiles.cols, "acc")
    lo, hi = thread_share(b, tid, nth, tasks)
    width = per * tiles.keys
    last_cols = mm.n - (panels - 1) * width  # the last panel's columns
    with counted_loop(b, lo, hi, "task") as t:
        i = b.udiv(t, I64(panels * blocks))
        panel = b.urem(b.udiv(t, I64(blocks)), I64(panels))
        r0 = b.mul(b.urem(t, I64(blocks)), I64(rows))
        left = b.sub(I64(mm.m), r0)
        height = b.select(b.icmp_signed("<", left, I64(rows)), left, I64(rows))
        s0 = b.mul(panel, I64(width))
        sa_i, sa_m, sa_k = mm.a_strides
        a = b.gep(p["a"], [b.add(b.mul(i, I64(sa_i)), b.mul(r0, I64(sa_m)))], source_etype=F32)
        bb = b.gep(p["b"], [b.add(b.mul(i, I64(mm.b_batch * mm.k * mm.n)), s0)], source_etype=F32)
        o = b.add(b.mul(i, I64(mm.m * mm.n)), b.add(b.mul(r0, I64(mm.n)), s0))
        out = b.gep(p["out"], [o], source_etype=F32)
        bias = None
        if mm.bias:  # at the origin of `out`: the task's row r0 or column s0
            bias = (
                b.gep(p["bias"], [r0 if mm.bias == "row" else s0], source_etype=F32),
                mm.bias,
            )
        operands = ((a, sa_m, sa_k), (bb, mm.n), (out, mm.n))
        with b.if_else(b.icmp_signed("<", panel, I64(panels - 1))) as (inner, last):
            with inner:
                cols = (I64(per), None)
                llvm_tiles.product(b, acc, *operands, height, cols, mm.k, bias=bias)
            with last:
                cols = (
                    I64(last_cols // tiles.keys),
                    last_cols % tiles.keys or None,
                )
                llvm_tiles.product(b, acc, *operands, height, cols, mm.k, bias=bias)
    b.ret_void()
    parallel_entry(m, symbol, fn, [p.name for p in params])
    return m


__all__ = ["PANEL_BYTES", "Matmul", "module"]
