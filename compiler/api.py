"""The public entry points: `compile` and the `Compiled` object it gives (`jit`, which
compiles per input signature, is in `compiler.jit_function`)."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

import backends
from backends.protocol import Program, RenderOptions, Runner
from compiler.artifact import save
from compiler.core import config
from compiler.core import reference as numpy_ref
from compiler.core.dtypes import to_torch
from compiler.core.errors import InputMismatchError
from compiler.core.gpu import get_profile
from compiler.core.ir import Graph
from compiler.core.schedule import KernelSpec, Schedule
from compiler.core.types import DType
from compiler.frontend.capture import Captured, capture
from compiler.targets import verify_targets
from passes.memory import eager_peak_bytes, plan_memory


def _check_gpu(gpu: str | None) -> str | None:
    """A known profile name (lower case), or a ValueError that lists them."""
    return get_profile(gpu).name if gpu else None


class Compiled:
    """A compiled model: call it like the model. Holds the IR, generated sources and stats."""

    def __init__(
        self,
        captured: Captured,
        schedule: Schedule,
        backend: str,
        gpu: str | None,
        compute_dtype: torch.dtype | None = None,
    ) -> None:
        self.captured = captured
        self.schedule = schedule
        self.graph = schedule.graph
        self.backend = backend
        self.gpu = gpu
        self.stats: dict[str, Any] = {"compiles": 1, "calls": 0}
        self._programs: dict[tuple[str, bool], Program] = {}
        self._runners: dict[str, Runner] = {}
        self.compute_dtype = compute_dtype
        self.example: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # set by compile()
        self.artifact: Path | None = None  # the directory it was loaded from (compiler.load)
        self._float_dtype = _float_dtype(self.graph, compute_dtype)
        self._torch_float = getattr(torch, self._float_dtype)
        self._converted: dict[str, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._out_dtypes: list[torch.dtype] | None = None
        flat = pytree.tree_flatten(((0,) * len(captured.arg_specs), {}))[1]
        self._flat_tensor_args = (
            not captured.kwarg_names
            and captured.in_spec == flat
            and all(s.shape is not None for s in captured.arg_specs)
        )

    # --- generated code

    def source(self, backend: str | None = None) -> str:
        """The generated source for a backend (default: the one this was compiled for)."""
        return self._program(backends.resolve(backend or self.backend)).source

    @property
    def kernels(self) -> tuple[KernelSpec, ...]:
        return self.schedule.kernels

    def _program(self, backend: str, per_kernel: bool = False) -> Program:
        """The backend's program, rendered once; `per_kernel`: the program whose kernel
        functions each compute a whole kernel as the reference does (`RenderOptions`)."""
        key = (backend, per_kernel)
        if key not in self._programs:
            self._programs[key] = self._render(backend, per_kernel)
        return self._programs[key]

    def _render(self, backend: str, per_kernel: bool = False) -> Program:
        """The backend's program rendered from the schedule (`_program` keeps it; a loaded
        artifact's program is read back by its backend instead: `build(load_program=...)`)."""
        options = RenderOptions(self._float_dtype, self.captured.weight_names(), per_kernel)
        return backends.get(backend).render(self.schedule, options)

    def kernel_functions(self, backend: str | None = None) -> dict[str, Any]:
        """A backend's kernel functions by kernel name, each taking NumPy arrays (the kernel's
        inputs, then one output array per kernel output, written in place). They are those of
        the per-kernel program (`RenderOptions.per_kernel`), which take the reference's arrays
        as they are and compute exactly its values."""
        name = backends.resolve(backend or self.backend)
        return backends.get(name).kernel_functions(self._program(name, per_kernel=True))

    def reference_values(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict:
        """Every IR value of the unfused graph-level NumPy reference on these inputs."""
        inputs = self.numpy_inputs(args, kwargs)
        program = numpy_ref.render(self.graph, float_dtype=self._float_dtype, all_values=True)
        return program.load()(*inputs)

    def _runner(self, backend: str) -> Runner:
        if backend not in self._runners:
            self._runners[backend] = backends.get(backend).runner(self._program(backend))
        return self._runners[backend]

    # --- calling

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(args, kwargs)

    def run(
        self,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any] | None = None,
        backend: str | None = None,
    ) -> Any:
        """Run on `args` with `backend` (default: the compiled one); same output structure."""
        name = backends.resolve(backend or self.backend)
        fn = self._runner(name)
        outs = list(fn(*self.torch_inputs(args, kwargs or {}, name)))
        self.stats["calls"] += 1
        return self._rebuild(outs)

    def check_inputs(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[Any]:
        want = self.captured.arg_specs
        # the common call, model(t1, t2, ...): no pytree walk (it costs ~100 us a call)
        simple = not kwargs and self._flat_tensor_args and len(args) == len(want)
        if simple and all(
            isinstance(x, torch.Tensor) and x.dtype == s.dtype and tuple(x.shape) == s.shape
            for x, s in zip(args, want, strict=True)
        ):
            return list(args)
        order = self.captured.kwarg_names
        if set(kwargs) == set(order):  # keywords bind by name, whatever order they come in
            kwargs = {k: kwargs[k] for k in order}
        leaves, spec = pytree.tree_flatten((tuple(args), dict(kwargs)))
        if spec != self.captured.in_spec or len(leaves) != len(want):
            raise InputMismatchError(
                f"{self.graph.name} was compiled for {_count(want)} and called with "
                f"{len(leaves)} input(s) in another structure: expected {self.captured.in_spec}, "
                f"got {spec}"
            )
        for i, (x, s) in enumerate(zip(leaves, want, strict=True)):
            if s.shape is None:
                if isinstance(x, torch.Tensor) or x != s.value:
                    raise InputMismatchError(
                        f"{self.graph.name} input {i}: expected {s.describe()} (it was compiled "
                        f"for that value), got {_describe(x)}; compiler.jit recompiles instead"
                    )
            elif not isinstance(x, torch.Tensor) or tuple(x.shape) != s.shape or x.dtype != s.dtype:
                raise InputMismatchError(
                    f"{self.graph.name} input {i}: expected {s.describe()}, got {_describe(x)}; "
                    f"compile again for new shapes or dtypes, or use compiler.jit"
                )
        return leaves

    def numpy_inputs(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> list[np.ndarray]:
        """The graph inputs for this call, checked: user arguments and the module's current
        parameters and buffers, as the NumPy arrays the generated code takes."""
        leaves = self.check_inputs(args, kwargs)
        return [self._to_numpy(self._bind(b, leaves)) for b in self.captured.bindings]

    def torch_inputs(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], backend: str | None = None
    ) -> list[torch.Tensor]:
        """The graph inputs for this call as contiguous tensors where and as `backend`
        (default: the compiled one) takes them (`Backend.placement`): on the CPU unless it
        says a device, floats in the compute float type unless it says a dtype (a program
        that takes a bf16 input as it is). Parameters converted from another dtype or moved
        are cached until the parameter changes (its version counter)."""
        leaves = self.check_inputs(args, kwargs)
        name = backends.resolve(backend or self.backend)
        where = backends.get(name).placement(
            self._program(name), self.graph, self._float_dtype, leaves
        )
        device, dtypes = where.device, where.dtypes
        out = []
        for b, dtype in zip(self.captured.bindings, dtypes, strict=True):
            t = self._bind(b, leaves).detach()
            if b.kind == "user":
                out.append(self._storage_form(t, dtype, device))
                continue
            if (
                device is None
                and t.device.type == "cpu"
                and t.dtype == (dtype or self._torch_float if t.is_floating_point() else t.dtype)
                and t.is_contiguous()
            ):
                out.append(t)  # a parameter as it is: nothing to convert, nothing to cache
                continue
            key = (b.key, t.data_ptr(), t._version, dtype, device)
            hit = self._converted.get(b.key)
            if hit is not None and hit[0] == key:
                out.append(hit[1])
                continue
            # a normal tensor even under torch.inference_mode: the cached copy outlives the
            # call, and a backend may read its version counter (inference tensors have none)
            with torch.inference_mode(False):
                x = self._storage_form(t, dtype, device)
            if x is not t:
                # holding `t` keeps its storage alive: no other tensor can take its address
                self._converted[b.key] = (key, x, t)
            out.append(x)
        return out

    def _storage_form(
        self, t: torch.Tensor, dtype: torch.dtype | None = None, device: torch.device | None = None
    ) -> torch.Tensor:
        """`t` contiguous on `device` (default: the CPU), a float in `dtype` (default: the
        compute float type)."""
        x = t.to(device) if device is not None else t.cpu() if t.device.type != "cpu" else t
        want = dtype or self._torch_float
        if x.is_floating_point() and x.dtype != want:
            x = x.to(want)
        return x.contiguous()

    def _bind(self, binding: Any, leaves: list[Any]) -> torch.Tensor:
        """The tensor `binding` names this call: the module's current parameter or buffer, found
        through the submodules' `_modules` dicts (what `get_parameter` walks, without its ~14 us
        of `getattr` per name; it still raises the error when the path is gone)."""
        module = self.captured.module
        if binding.kind == "user":
            return leaves[binding.key]
        *path, name = binding.key.split(".")
        owner = module
        try:
            for part in path:
                owner = owner._modules[part]  # type: ignore[assignment]
            table = owner._parameters if binding.kind == "parameter" else owner._buffers
            found = table[name]
        except (KeyError, AttributeError, TypeError):
            found = None
        if found is not None:
            return found
        if binding.kind == "parameter":
            return module.get_parameter(binding.key)
        return module.get_buffer(binding.key)

    def _to_numpy(self, t: torch.Tensor) -> np.ndarray:
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.is_floating_point():
            t = t.to(torch.float64 if self._float_dtype == "float64" else torch.float32)
        return t.numpy()

    def _rebuild(self, outs: list[torch.Tensor]) -> Any:
        if self._out_dtypes is None:  # Graph.type_of builds a table of every value: once
            self._out_dtypes = [to_torch(self.graph.type_of(o).dtype) for o in self.graph.outputs]
        values = [out.to(dtype) for out, dtype in zip(outs, self._out_dtypes, strict=True)]
        leaves = [values[x] if kind == "value" else x for kind, x in self.captured.out_leaves]
        return pytree.tree_unflatten(leaves, self.captured.out_spec)

    def explain(self, gpu: str | list[str] | None = None) -> Any:
        """The plan priced per kernel on `gpu` (a profile name, a list of them, or None for
        the compiled-for GPU, else the device present, else h100): an `ExplainReport`."""
        from compiler.explain import explain

        return explain(
            self.schedule,
            self.captured.graph,
            gpu if gpu is not None else self.gpu,
            planned_bytes=self.stats.get("planned_bytes", 0),
        )

    def verify_targets(
        self, gpu: str | list[str] | None = None, *, progress: bool | None = None
    ) -> Any:
        """Compile every kernel of the plan as Triton for each profile's target (a profile
        name, a list or "a,b", or None for the compiled-for GPU, else the default profile),
        at the tile config tiling chose there, and read back registers, spills, shared
        memory, occupancy and tensor-core opcodes: a `TargetReport` (printable, `.ok`,
        `.to_dict()`). A config that spills or overflows shared memory goes back to tiling
        with it excluded (logged under `tilefuse.tiling`). Works whatever backend this was
        compiled for: the Triton kernels are rendered from the schedule. Binaries and figures
        are cached under TILEFUSE_CACHE_DIR/triton_targets, so a second run is fast.
        `progress`: a progress line on stderr now and then (None: when stderr is a terminal);
        it is always logged under `tilefuse.targets`."""
        return verify_targets(self, gpu, progress=progress)

    def save(self, path: str | Path, *, reference: bool = True) -> Path:
        """Write this compiled model to the directory `path` (see `compiler.artifact`), to run
        later with `compiler.load(path)` without the model's code or torch.export. With
        `reference`, the example inputs it was compiled on are saved with eager's outputs and
        the float64 reference, for `tilefuse run` to check parity."""
        return save(self, Path(path), reference=reference)

    def __repr__(self) -> str:
        return (
            f"<Compiled {self.graph.name}: {len(self.graph)} nodes, backend={self.backend}, "
            f"calls={self.stats['calls']}>"
        )


def _float_dtype(graph: Graph, compute_dtype: torch.dtype | None) -> str:
    """float32, unless the model is float64 or float64 is asked for (NumPy has no bf16/f16
    arithmetic worth using: those compute in float32 too)."""
    if compute_dtype is None:
        f64 = any(v.type.dtype is DType.f64 for v in graph.inputs)
        return "float64" if f64 else "float32"
    if compute_dtype not in (torch.float32, torch.float64):
        raise ValueError(
            f"compute_dtype must be torch.float32 or torch.float64, got {compute_dtype}"
        )
    return str(compute_dtype).removeprefix("torch.")


def _count(specs: tuple[Any, ...]) -> str:
    return f"{len(specs)} input(s) [" + "; ".join(s.describe() for s in specs) + "]"


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a {str(x.dtype).removeprefix('torch.')} tensor of shape {list(x.shape)}"
    return f"{type(x).__name__} {x!r}"


@contextlib.contextmanager
def _collect_new_objects_only() -> Iterator[None]:
    """While compiling, the garbage collector looks only at objects made since the start
    (`gc.freeze`). Its full collections otherwise walk the whole heap, torch's and the model's
    objects too, several times a compile (Note [Garbage collection while compiling]). A no-op
    when something already froze objects (a compile within a compile, or the caller's own)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# Note [Garbage collection while compiling]
# llama, compile + first call in a fresh process, empty caches, medians of 5 interleaved on
# the 2-core AMD EPYC: 3.80 s as it was, 3.46 s with the heap frozen while compiling, 3.33 s
# with the collector off (but peak RSS +15 MiB: cyclic garbage waits to the end). Freezing
# costs no memory: new garbage is still collected.


@_collect_new_objects_only()
def compile(
    model: Callable[..., Any],
    args: tuple[Any, ...] | Any,
    kwargs: Mapping[str, Any] | None = None,
    *,
    gpu: str | None = None,
    backend: str = "auto",
    compute_dtype: torch.dtype | None = None,
) -> Compiled:
    """Capture `model(*args, **kwargs)`, optimize the graph, and prepare `backend` to run it.

    `compute_dtype`: what the NumPy backend computes floats in (default float32, or float64
    for a float64 model); `torch.float64` makes it a tighter reference for any model.
    """
    name = backends.resolve(backend)
    gpu = _check_gpu(gpu)
    args = args if isinstance(args, tuple) else (args,)
    captured = capture(model, args, kwargs)
    compiled = build(captured, backend=name, gpu=gpu, compute_dtype=compute_dtype)
    compiled.example = (args, dict(kwargs or {}))
    return compiled


@_collect_new_objects_only()
def build(
    captured: Captured,
    *,
    backend: str,
    gpu: str | None,
    compute_dtype: torch.dtype | None = None,
    schedule: Schedule | None = None,
    load_program: Callable[[Callable[[], Program]], Program] | None = None,
) -> Compiled:
    """Everything after capture: the graph passes, fusion, tiling for `gpu` and the memory plan
    (all skipped when `schedule`, a saved artifact's, is given), then the backend's program,
    rendered and loaded. `load_program(render)`: the program an artifact saved, read back by
    its backend (`Backend.load_saved`), which calls `render()` where it cannot be."""
    cfg = config.load()
    config.configure_logging(cfg)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    if schedule is None:
        # the passes, and networkx for fusion: not imported to load an artifact (its RSS)
        from passes.fusion import fuse_kernels
        from passes.pipeline import PassContext, run_pipeline
        from passes.tiling import tile_kernels

        ctx = PassContext(dump_dir=cfg.dump_dir, print_ir=cfg.debug >= 2)
        timings = ctx.timings
        schedule = fuse_kernels(run_pipeline(captured.graph, ctx=ctx))
        if gpu is not None:  # a TileConfig per kernel now; without a GPU, explain() tiles lazily
            schedule = tile_kernels(schedule, get_profile(gpu))
        schedule = plan_memory(schedule)
    graph = schedule.graph
    name = backends.resolve(backend)
    compiled = Compiled(captured, schedule, name, gpu, compute_dtype)
    if load_program is not None:
        compiled._programs[(name, False)] = load_program(lambda: compiled._render(name))
    compiled._runner(name)  # render and load now: compile time is paid here, not on first call
    compiled.stats.update(
        capture_s=captured.capture_seconds,
        compile_s=time.perf_counter() - start,
        pass_timings=timings,
        nodes_captured=len(captured.graph),
        nodes=len(graph),
        kernels=len(schedule),
        planned_bytes=schedule.plan.total_bytes if schedule.plan else 0,
        eager_peak_bytes=eager_peak_bytes(captured.graph),
    )
    if cfg.dump_dir is not None:
        (cfg.dump_dir / f"{graph.name}.{name}.py").write_text(compiled.source(name))
    if cfg.debug >= 3:
        print(compiled.source(name))
    if cfg.debug >= 1:
        print(
            f"[tilefuse] compiled {graph.name}: {len(captured.graph)} -> {len(graph)} nodes, "
            f"{len(schedule)} kernels, "
            f"capture {captured.capture_seconds:.2f} s, ours {compiled.stats['compile_s']:.3f} s"
        )
    return compiled
