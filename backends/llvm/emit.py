"""IR-building pieces every LLVM kernel generator shares: integer and pointer types, counted
loops (rolled when asked), and the per-program memo of emitted modules.

    with counted_loop(b, I64(0), n, "i", rolled=True) as i: ...
    with one_program():                       # while a program renders
        text = module_text(symbol, emit)      # emit() only the first time for `symbol`
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from llvmlite import ir

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
PTR = ir.PointerType()

_RENDERING = threading.local()  # .bodies: the IR of the program being rendered, by symbol


@contextmanager
def one_program() -> Iterator[None]:
    """While a program renders: a module whose symbol this thread emitted already reuses that
    IR (`module_text`), instead of emitting and printing it again for every identical layer.
    A symbol names its module's IR within a program (the renderer keeps one module per
    symbol), not across programs, so the memo lives only this long."""
    outer = getattr(_RENDERING, "bodies", None)
    _RENDERING.bodies = {}
    try:
        yield
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
