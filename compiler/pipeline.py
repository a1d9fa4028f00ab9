"""The pipeline: from a model to a runnable program, one stage after another.

    PROGRAM = [tune, lay_out, plan_memory, render]
    STAGES = [capture, lower, optimize, fuse, tile, *PROGRAM, load]

    stage        what it makes                                    where the work is
    capture      the model traced by torch.export (`Exported`)    compiler/frontend/capture.py
    lower        our IR, and how its inputs bind (`Captured`)     compiler/frontend/lowering.py,
                                                                  aten_ops.py, aten_nn.py
    optimize     the graph after the graph passes, in order       passes/pipeline.py
    fuse         the schedule: the fewest kernels fusion allows   passes/fusion.py
    tile         a TileConfig per kernel for the GPU (gpu=)       passes/tiling.py, cost.py
    tune         the backend's choices measured on this host      backends/llvm/tuning.py
                 (the GEMM per shape), from its tuning file or
                 timed (`RenderOptions.tuning`)
    lay_out      the backend's program up to its memory, and      backends/<name>/
                 what it asks the planner to place (`Layout`)
    plan_memory  every planned value and scratch block at an      passes/memory.py
                 offset of one arena, by liveness (`Arena`)
    render       the backend's program over that arena            backends/<name>/
    load         the program loaded, ready to call (`Compiled`)   backends/<name>/
    read_back    (loading an artifact, instead of `PROGRAM`) the  backends/<name>/
                 program it saved, read back by its backend

Each stage is a function of the `Build` so far that returns it with what the stage made.
`run` (not the stages) times them into `Compiled.stats["stage_timings"]`, prints each under
TILEFUSE_DEBUG=1, and writes what each made to TILEFUSE_DUMP (`_dump`: the exported program,
the graph, the schedule, the memory request and the arena, the generated source; `load`
makes nothing to write).
`compiler.compile` runs every stage; `compiler.load` runs `AFTER_SCHEDULE` on what an artifact
saved (the `Captured` bindings and the schedule), with the program its backend reads back
(`Build.load_program`).

`PROGRAM` (tune, lay_out, plan_memory, render) is how every program is made, so memory is planned
by one planner, once for each program, with the storage policy its backend declares: the compiled
program here, and the others a `Compiled` asks for later (`program`, neither timed nor
dumped): another backend's, or the per-kernel program bisection compares kernel by kernel
(`RenderOptions.per_kernel`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

import backends
from backends.protocol import Layout, Program, RenderOptions
from compiler.compiled import Compiled, float_dtype
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
    per_kernel: bool = False  # the program bisection runs (`RenderOptions.per_kernel`)
    tuning: Any = None  # what the backend's `tune` measured (None: nothing)
    layout: Layout | None = None
    arena: memory.Arena | None = None
    program: Program | None = None
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


def tune(b: Build) -> Build:
    """The backend's choices with more than one good answer on this host (which GEMM for
    each shape on the llvm backend), read from its tuning file or timed now: before
    `lay_out`, whose compiling would disturb the timing (Note [Measured choices] in
    backends/llvm/tuning.py)."""
    assert b.schedule is not None
    return replace(b, tuning=backends.get(b.backend).tune(b.schedule, _options(b)))


def lay_out(b: Build) -> Build:
    assert b.schedule is not None
    options = replace(_options(b), tuning=b.tuning)
    return replace(b, layout=backends.get(b.backend).lay_out(b.schedule, options))


def _options(b: Build) -> RenderOptions:
    assert b.schedule is not None
    weights = b.captured.weight_names() if b.captured is not None else frozenset()
    return RenderOptions(float_dtype(b.schedule.graph, b.compute_dtype), weights, b.per_kernel)


def plan_memory(b: Build) -> Build:
    """The one memory planner, on the storage policy the backend declared in its layout."""
    assert b.schedule is not None and b.layout is not None
    return replace(b, arena=memory.plan_memory(b.schedule, b.layout.request))


def render(b: Build) -> Build:
    assert b.layout is not None and b.arena is not None
    return replace(b, program=backends.get(b.backend).render(b.layout, b.arena))


def read_back(b: Build) -> Build:
    """The program an artifact saved, read back by its backend (made by `PROGRAM` afresh
    where it cannot be: saved for another backend, or for another CPU)."""
    assert b.load_program is not None
    return replace(b, program=b.load_program(lambda: program(b)))


def load(b: Build) -> Build:
    """The program loaded now, in a `Compiled`: compile time is paid here, not on the first
    call."""
    assert b.captured is not None and b.schedule is not None and b.program is not None
    # what a later program is made from: not the model, its trace nor this program's layout
    base = Build(b.backend, b.gpu, b.compute_dtype, captured=b.captured, schedule=b.schedule)
    compiled = Compiled(
        b.captured,
        b.schedule,
        b.backend,
        b.gpu,
        b.compute_dtype,
        b.program,
        lambda backend, per_kernel: program(base, backend, per_kernel),
    )
    compiled._runner(b.backend)
    return replace(b, compiled=compiled)


PROGRAM: list[Stage] = [tune, lay_out, plan_memory, render]  # how every program is made
STAGES: list[Stage] = [capture, lower, optimize, fuse, tile, *PROGRAM, load]
AFTER_SCHEDULE: list[Stage] = [read_back, load]  # what loading an artifact runs


def program(b: Build, backend: str | None = None, per_kernel: bool = False) -> Program:
    """`backend`'s program (default: `b`'s) for `b`'s schedule, made by `PROGRAM`; with
    `per_kernel`, the one whose kernel functions each compute a whole kernel as the reference
    does."""
    b = replace(b, backend=backend or b.backend, per_kernel=per_kernel, load_program=None)
    for stage in PROGRAM:
        b = stage(b)
    assert b.program is not None
    return b.program


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
        eager_peak_bytes=memory.eager_peak_bytes(b.captured.graph),
    )
    if b.arena is not None:  # the program's arena (an artifact's program was planned before)
        compiled.stats["planned_bytes"] = b.arena.size
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
    elif stage in ("fuse", "tile") and b.schedule is not None:
        name, ext, text = b.schedule.graph.name, "txt", str(b.schedule)
    elif stage == "tune" and b.schedule is not None and b.tuning is not None:
        name, ext, text = b.schedule.graph.name, "txt", str(b.tuning)
    elif stage == "lay_out" and b.schedule is not None and b.layout is not None:
        name, ext, text = b.schedule.graph.name, "txt", str(b.layout.request)
    elif stage == "plan_memory" and b.schedule is not None and b.arena is not None:
        name, ext, text = b.schedule.graph.name, "txt", str(b.arena)
    elif stage in ("render", "read_back") and b.schedule is not None and b.program is not None:
        name, ext, text = b.schedule.graph.name, "py", b.program.source
    else:
        return
    cfg.dump_dir.mkdir(parents=True, exist_ok=True)
    (cfg.dump_dir / f"{name}.stage{index}.{stage}.{ext}").write_text(text)
