"""The table of contents: which graph passes run, in order.

`run_pipeline` (not each pass) verifies the graph between passes, times them, and writes the
IR after each pass to TILEFUSE_DUMP when set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compiler.core.ir import Graph, print_graph
from compiler.core.verify import verify
from passes.canonicalize import canonicalize
from passes.cleanup import eliminate_common_subexpressions, eliminate_dead_code, fold_constants
from passes.recognize import recognize_composites
from passes.recognize_attention import recognize_attention

log = logging.getLogger("tilefuse.passes")

GraphPass = Callable[[Graph], Graph]

PIPELINE: list[GraphPass] = [
    canonicalize,
    fold_constants,
    eliminate_common_subexpressions,
    eliminate_dead_code,
    canonicalize,
    recognize_composites,
    recognize_attention,
    eliminate_dead_code,
]


@dataclass
class PassContext:
    """What the runner needs besides the passes: whether to verify and where to dump."""

    verify: bool = True
    dump_dir: Path | None = None
    print_ir: bool = False
    timings: list[tuple[str, float, int]] = field(default_factory=list)  # (pass, seconds, nodes)


def run_pipeline(
    g: Graph, passes: Sequence[GraphPass] = PIPELINE, ctx: PassContext | None = None
) -> Graph:
    ctx = ctx or PassContext()
    if ctx.verify:
        verify(g)
    _dump(ctx, 0, "captured", g)
    for i, p in enumerate(passes, start=1):
        start = time.perf_counter()
        new = p(g)
        seconds = time.perf_counter() - start
        if ctx.verify and new is not g:
            verify(new)
        ctx.timings.append((p.__name__, seconds, len(new)))
        log.debug("%-36s %7.2f ms  %4d -> %4d nodes", p.__name__, seconds * 1e3, len(g), len(new))
        if new is not g:
            _dump(ctx, i, p.__name__, new)
        g = new
    return g


def _dump(ctx: PassContext, index: int, name: str, g: Graph) -> None:
    if ctx.print_ir:
        print(f"# ---- after {name}\n{print_graph(g)}")
    if ctx.dump_dir is None:
        return
    ctx.dump_dir.mkdir(parents=True, exist_ok=True)
    (ctx.dump_dir / f"{g.name}.{index:02d}.{name}.py").write_text(print_graph(g))
