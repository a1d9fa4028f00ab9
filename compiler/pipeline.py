"""The pipeline: from a model to a runnable program, one stage after another.

    STAGES = [capture, lower, optimize, fuse, tile, plan_memory, render, load]

    stage        what it makes                                    where the work is
    capture      the model traced by torch.export (`Exported`)    compiler/frontend/capture.py
    lower        our IR, and how its inputs bind (`Captured`)     compiler/frontend/lowering.py,
                                                                  aten_ops.py, aten_nn.py
    optimize     the graph after the graph passes, in order       passes/pipeline.py
    fuse         the schedule: the fewest kernels fusion allows   passes/fusion.py
    tile         a TileConfig per kernel for the GPU (gpu=)       passes/tiling.py, cost.py
    plan_memory  the intermediate buffers, by liveness            passes/memory.py
    render       the backend's program (in a `Compiled`)          backends/<name>/
    load         the program loaded, ready to call                backends/<name>/

Each stage is a function of the `Build` so far that returns it with what the stage made.
`run` (not the stages) times them into `Compiled.stats["stage_timings"]`, prints each under
TILEFUSE_DEBUG=1, and writes what each made to TILEFUSE_DUMP (`_dump`: the exported program,
the graph, the schedule, the generated source; loading makes nothing to write).
`compiler.compile` runs every stage; `compiler.load` runs `AFTER_SCHEDULE` on what an artifact
saved (the `Captured` bindings and the schedule), with the program its backend reads back
(`Build.load_program`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from backends.protocol import Program
from compiler.compiled import Compiled
from compiler.core import config
from compiler.core.gpu import get_profile
from compiler.core.ir import Graph, print_graph
from compiler.core.schedule import Schedule
from compiler.frontend import capture as frontend
from passes import memory

log = logging.getLogger("tilefuse.pipeline")


@dataclass(frozen=True)
class Build:
    """What a compile was asked for, and what its stages have made so far."""

    backend: str  # a concrete backend name (`backends.resolve`)
    gpu: str | None = None  # the GPU profile to tile for
    compute_dtype: torch.dtype | None = None
    model: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    exported: frontend.Exported | None = None
    captured: frontend.Captured | None = None
    graph: Graph | None = None  # the optimized graph
    schedule: Schedule | None = None
    compiled: Compiled | None = None
    # the program an artifact saved, read back by its backend given how to render it instead
    load_program: Callable[[Callable[[], Program]], Program] | None = None
    timings: tuple[tuple[str, float], ...] = ()  # (stage, seconds)
    pass_timings: tuple[tuple[str, float, int], ...] = ()  # (graph pass, seconds, nodes)


Stage = Callable[[Build], Build]


def capture(b: Build) -> Build:
    assert b.model is not None
    return replace(b, exported=frontend.export(b.model, b.args, b.kwargs))


def lower(b: Build) -> Build:
    assert b.exported is not None
    return replace(b, captured=frontend.lower(b.exported))


def optimize(b: Build) -> Build:
    assert b.captured is not None
    from passes.pipeline import PassContext, run_pipeline  # passes: not needed to load

    cfg = config.load()
    ctx = PassContext(dump_dir=cfg.dump_dir, print_ir=cfg.debug >= 2)
    graph = run_pipeline(b.captured.graph, ctx=ctx)
    return replace(b, graph=graph, pass_timings=tuple(ctx.timings))


def fuse(b: Build) -> Build:
    assert b.graph is not None
    from passes.fusion import fuse_kernels  # networkx: not imported to load an artifact

    return replace(b, schedule=fuse_kernels(b.graph))


def tile(b: Build) -> Build:
    """Without a GPU profile the schedule stays untiled: `explain` tiles on demand."""
    assert b.schedule is not None
    if b.gpu is None:
        return b
    from passes.tiling import tile_kernels

    return replace(b, schedule=tile_kernels(b.schedule, get_profile(b.gpu)))


def plan_memory(b: Build) -> Build:
    assert b.schedule is not None
    return replace(b, schedule=memory.plan_memory(b.schedule))


def render(b: Build) -> Build:
    assert b.captured is not None and b.schedule is not None
    compiled = Compiled(b.captured, b.schedule, b.backend, b.gpu, b.compute_dtype)
    if b.load_program is not None:
        compiled.adopt_program(b.backend, b.load_program(lambda: compiled._render(b.backend)))
    else:
        compiled._program(b.backend)  # rendered now; Compiled keeps it
    return replace(b, compiled=compiled)


def load(b: Build) -> Build:
    """The program loaded now: compile time is paid here, not on the first call."""
    assert b.compiled is not None
    b.compiled._runner(b.backend)
    return b


STAGES: list[Stage] = [capture, lower, optimize, fuse, tile, plan_memory, render, load]
AFTER_SCHEDULE: list[Stage] = [render, load]  # what loading an artifact runs


def run(b: Build, stages: Sequence[Stage] = STAGES) -> Compiled:
    """Run `stages` in order on `b`; the `Compiled` the last of them made, with its stats."""
    cfg = config.load()
    config.configure_logging(cfg)
    for i, stage in enumerate(stages):
        start = time.perf_counter()
        b = stage(b)
        seconds = time.perf_counter() - start
        b = replace(b, timings=b.timings + ((stage.__name__, seconds),))
        log.debug("%-12s %8.3f s", stage.__name__, seconds)
        if cfg.debug >= 1:
            print(f"[tilefuse] {stage.__name__:<12} {seconds:8.3f} s")
        if cfg.dump_dir is not None:
            _dump(cfg, i, stage.__name__, b)
    compiled = b.compiled
    assert compiled is not None and b.captured is not None and b.schedule is not None
    timings = dict(b.timings)
    after_lower = sum(s for name, s in b.timings if name not in ("capture", "lower"))
    compiled.stats.update(
        capture_s=b.captured.capture_seconds,
        compile_s=after_lower,
        stage_timings=timings,
        pass_timings=list(b.pass_timings),
        nodes_captured=len(b.captured.graph),
        nodes=len(compiled.graph),
        kernels=len(b.schedule),
        planned_bytes=b.schedule.plan.total_bytes if b.schedule.plan else 0,
        eager_peak_bytes=memory.eager_peak_bytes(b.captured.graph),
    )
    if cfg.debug >= 3:
        print(compiled.source())
    if cfg.debug >= 1:
        print(
            f"[tilefuse] compiled {compiled.graph.name}: {len(b.captured.graph)} -> "
            f"{len(compiled.graph)} nodes, {len(b.schedule)} kernels, capture "
            f"{b.captured.capture_seconds:.2f} s, ours {compiled.stats['compile_s']:.3f} s"
        )
    return compiled


def _dump(cfg: config.Config, index: int, stage: str, b: Build) -> None:
    """What `stage` made, as text, in TILEFUSE_DUMP: `<graph>.stage<i>.<stage>.<ext>`."""
    assert cfg.dump_dir is not None
    if stage == "capture" and b.exported is not None:
        name, ext, text = frontend.graph_name(b.exported.module), "txt", str(b.exported.program)
    elif stage in ("lower", "optimize"):
        graph = b.graph if stage == "optimize" else b.captured.graph if b.captured else None
        if graph is None:
            return
        name, ext, text = graph.name, "py", print_graph(graph)
    elif stage in ("fuse", "tile", "plan_memory") and b.schedule is not None:
        name, ext, text = b.schedule.graph.name, "txt", str(b.schedule)
    elif stage == "render" and b.compiled is not None:
        name, ext, text = b.compiled.graph.name, "py", b.compiled.source(b.backend)
    else:
        return
    cfg.dump_dir.mkdir(parents=True, exist_ok=True)
    (cfg.dump_dir / f"{name}.stage{index}.{stage}.{ext}").write_text(text)
