"""IR-building pieces every LLVM kernel generator shares: integer and pointer types, counted
loops (rolled when asked), the OpenMP entry and a thread's share of tasks, and the
per-program memo of emitted modules.

    with counted_loop(b, I64(0), n, "i", rolled=True) as i: ...
    parallel_entry(m, symbol, body, params)   # symbol(args, nthreads) forks body(tid, nth, ...)
    lo, hi = thread_share(b, tid, nth, tasks)
    with one_program():                       # while a program renders
        text = module_text(symbol, emit)      # emit() only the first time for `symbol`
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from llvmlite import ir

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()

_RENDERING = threading.local()  # .bodies: the IR of the program being rendered, by symbol


@contextmanager
def one_program(bodies: dict[str, str] | None = None) -> Iterator[dict[str, str]]:
    """While a program renders: a module whose symbol this thread emitted already reuses that
    IR (`module_text`), instead of emitting and printing it again for every identical layer.
    A symbol names its module's IR within a program (the renderer keeps one module per
    symbol), not across programs, so the memo lives only this long, or is handed on within
    one program (`bodies`: what the `tune` stage emitted for its candidates). Yields it."""
    outer = getattr(_RENDERING, "bodies", None)
    _RENDERING.bodies = {} if bodies is None else bodies
    try:
        yield _RENDERING.bodies
    finally:
        _RENDERING.bodies = outer


def module_text(symbol: str, emit: Callable[[], ir.Module]) -> str:
    """`str(emit())`, or the text this program already has for `symbol` (`one_program`)."""
    bodies = getattr(_RENDERING, "bodies", None)
    if bodies is None:
        return str(emit())
    if symbol not in bodies:
        bodies[symbol] = str(emit())
    return bodies[symbol]


@contextmanager
def counted_loop(
    b: ir.IRBuilder, start: ir.Value, stop: ir.Value, name: str, rolled: bool = False
) -> Iterator[ir.Value]:
    """`for i in range(start, stop)`: yields the induction variable; the body is emitted at
    the builder's position inside the `with`, and the builder ends after the loop.

    `rolled` asks LLVM not to unroll it (`llvm.loop.unroll.disable`): for loops whose body is
    already a register tile, where unrolling only multiplies the code (Note [Rolled loops])."""
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
    back = b.branch(head)
    if rolled:
        back.set_metadata("llvm.loop", _loop_id(b.module))
    b.position_at_end(end)


def _loop_id(module: ir.Module) -> ir.MDValue:
    """A fresh loop ID `!n = !{!n, !{"llvm.loop.unroll.disable"}}` (its first operand must be
    itself, and each loop needs its own: the tag string keeps llvmlite from merging them)."""
    disable = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    tag = ir.MetaDataString(module, f"tilefuse.loop.{len(module.metadata)}")
    loop = module.add_metadata([tag, disable])
    loop.operands = (loop, disable)
    return loop


__all__ = ["I1", "I8", "I32", "I64", "PTR", "counted_loop", "module_text", "one_program"]


def declare(m: ir.Module, name: str, fnty: ir.FunctionType) -> ir.Function:
    """The function `name` of module `m`, declared now unless it already is."""
    existing = m.globals.get(name)
    return existing if existing is not None else ir.Function(m, fnty, name)


def parallel_entry(
    m: ir.Module,
    symbol: str,
    body: ir.Function,
    params: Sequence[str],
    *,
    max_threads: int | None = None,
    parallel: bool = True,
) -> None:
    """`symbol(args, nthreads)`, the function a kernel module exports: `args` holds one data
    pointer per name in `params`. It forks `nthreads` OpenMP threads (at most `max_threads`)
    through `GOMP_parallel`, each calling `body(tid, nth, *pointers)`; without `parallel` it
    calls `body(0, 1, *pointers)` on the caller's thread."""
    entry = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, I64]), symbol)
    args_ptr, nthreads = entry.args
    b = ir.IRBuilder(entry.append_basic_block("entry"))
    if not parallel:
        b.call(body, [I64(0), I64(1), *_unpack(b, args_ptr, params)])
        b.ret_void()
        return
    omp = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR]), f"{symbol}_omp")
    omp.linkage = "internal"
    ob = ir.IRBuilder(omp.append_basic_block("entry"))
    i32fn = ir.FunctionType(I32, [])
    tid = ob.call(declare(m, "omp_get_thread_num", i32fn), [], name="tid")
    nth = ob.call(declare(m, "omp_get_num_threads", i32fn), [], name="nth")
    args = ob.load(omp.args[0], typ=PTR, name="args")
    ob.call(body, [ob.sext(tid, I64), ob.sext(nth, I64), *_unpack(ob, args, params)])
    ob.ret_void()
    n = nthreads
    if max_threads is not None:
        n = b.select(b.icmp_signed("<", n, I64(max_threads)), n, I64(max_threads))
    gomp = declare(m, "GOMP_parallel", ir.FunctionType(ir.VoidType(), [PTR, PTR, I32, I32]))
    slot = b.alloca(PTR, name="data")
    b.store(args_ptr, slot)
    b.call(gomp, [omp, slot, b.trunc(n, I32), I32(0)])
    b.ret_void()


def _unpack(b: ir.IRBuilder, args: ir.Value, params: Sequence[str]) -> list[ir.Value]:
    return [
        b.load(b.gep(args, [I64(i)], source_etype=PTR), typ=PTR, name=name)
        for i, name in enumerate(params)
    ]


def thread_share(
    b: ir.IRBuilder, tid: ir.Value, nth: ir.Value, tasks: int
) -> tuple[ir.Value, ir.Value]:
    """[lo, hi): thread `tid` of `nth`'s contiguous share of `tasks` tasks (the last may have
    fewer, or none)."""
    chunk = b.sdiv(b.add(I64(tasks), b.sub(nth, I64(1))), nth)
    lo = b.mul(tid, chunk)
    lo = b.select(b.icmp_signed("<", lo, I64(tasks)), lo, I64(tasks))
    hi = b.add(lo, chunk)
    return lo, b.select(b.icmp_signed("<", hi, I64(tasks)), hi, I64(tasks))
