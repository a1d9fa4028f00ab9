"""`Compiled`: a compiled model. Call it like the model; it holds the IR, the schedule, the
backends' programs and the stats (`compiler.compile` makes one, through `compiler.pipeline`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils import _pytree as pytree

import backends
from backends.protocol import Placement, Program, Runner
from compiler.artifact import save
from compiler.core import reference as numpy_ref
from compiler.core.dtypes import to_torch
from compiler.core.errors import InputMismatchError
from compiler.core.ir import Graph
from compiler.core.schedule import KernelSpec, Schedule
from compiler.core.types import DType
from compiler.frontend.capture import Captured
from compiler.guard import Guard
from compiler.targets import verify_targets


class Compiled:
    """A compiled model: call it like the model. Holds the IR, generated sources and stats."""

    def __init__(
        self,
        captured: Captured,
        schedule: Schedule,
        backend: str,
        gpu: str | None,
        compute_dtype: torch.dtype | None,
        program: Program,
        make_program: Callable[[str, bool], Program],
    ) -> None:
        """`program`: `backend`'s program for `schedule`; `make_program(backend, per_kernel)`:
        any other program it is asked for (the pipeline's `PROGRAM` stages)."""
        self.captured = captured
        self.schedule = schedule
        self.graph = schedule.graph
        self.backend = backend
        self.gpu = gpu
        self.stats: dict[str, Any] = {"compiles": 1, "calls": 0}
        self._programs: dict[tuple[str, bool], Program] = {(backend, False): program}
        self._make_program = make_program
        self._placements: dict[str, Placement] = {}
        self._runners: dict[str, Runner] = {}
        self.compute_dtype = compute_dtype
        self.example: tuple[tuple[Any, ...], dict[str, Any]] | None = None  # set by compile()
        self.artifact: Path | None = None  # the directory it was loaded from (compiler.load)
        self._float_dtype = float_dtype(self.graph, compute_dtype)
        self._torch_float = getattr(torch, self._float_dtype)
        self._converted: dict[str, tuple[Any, torch.Tensor, torch.Tensor]] = {}
        self._out_dtypes: list[torch.dtype] | None = None
        flat = pytree.tree_flatten(((0,) * len(captured.arg_specs), {}))[1]
        # the module the graph was traced from, watched for changes the graph does not follow
        self.guard = Guard(captured.module, self.graph.name)
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
    def choices(self) -> Any:
        """What the program runs where a CPU has more than one good answer (llvm: the GEMM of
        each weight and shape) and why: measured on this host, cached in its tuning file, or
        the analytic default (Note [Measured choices] in backends/llvm/tuning.py). Printable,
        with `to_dict()`; None for a backend that measures nothing."""
        return backends.get(self.backend).choices(self._program(self.backend))

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

    def _placement(self, backend: str) -> Placement:
        """Where and as what `backend`'s program takes its inputs (asked once: every call
        converts its inputs by it)."""
        if backend not in self._placements:
            program = self._program(backend)
            where = backends.get(backend).placement(program, self.graph, self._float_dtype)
            self._placements[backend] = where
        return self._placements[backend]

    def _render(self, backend: str, per_kernel: bool = False) -> Program:
        """The backend's program made afresh from the schedule (`_program` keeps it)."""
        return self._make_program(backend, per_kernel)

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
        """Run on `args` with `backend` (default: the compiled one); same output structure.
        A module changed since the compile in what the graph read as constants raises
        `ModuleChangedError` (Note [Guarding the module] in compiler/guard.py)."""
        self.guard.check()
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
        parameters and buffers, as the NumPy arrays the graph-level reference takes
        (`reference_values`)."""
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
        where = self._placement(name)
        device, dtypes = where.device, where.dtypes
        if device is not None and device.index is None:  # the user's device of that type
            on = (x.device for x in leaves if isinstance(x, torch.Tensor))
            device = next((d for d in on if d.type == device.type), device)
        out = []
        for b, dtype in zip(self.captured.bindings, dtypes, strict=True):
            t = self._bind(b, leaves).detach()
            if b.kind == "user":
                if device is None and t.device.type != "cpu":
                    raise InputMismatchError(
                        f"{self.graph.name} input {b.key}: a tensor on {t.device}, and the "
                        f"{name} program runs on the CPU: pass CPU tensors (x.cpu()), or "
                        "compile for that device with a GPU backend"
                    )
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

        return explain(self.schedule, self.captured.graph, gpu if gpu is not None else self.gpu)

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


def float_dtype(graph: Graph, compute_dtype: torch.dtype | None) -> str:
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
