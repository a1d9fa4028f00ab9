"""Capture: a model or function + example inputs -> `Captured` (our IR graph and its bindings).

torch.export (non-strict) traces the program to ATen; `run_decompositions()` with the default
table minus the composites we keep (`KEEP`) brings it to about 30 distinct ops; `lowering.py`
turns those into IR nodes with the tables of `aten_ops.py` and `aten_nn.py`.

Note [Weights are inputs]
Parameters and buffers become graph *inputs* bound by their qualified name, never constants:
a compiled model reads the module's current parameters at every call, as eager does, so changing
a weight in place changes the output and nothing recompiles.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils import _pytree as pytree

from compiler.core.errors import CaptureError, UnsupportedOpError
from compiler.core.ir import Graph
from compiler.frontend import aten_nn, aten_ops
from compiler.frontend.lowering import LowerFn, Lowering

aten = torch.ops.aten

# every ATen op we lower, by overload packet name; an op in neither table is unsupported
ATEN_LOWERINGS: dict[str, LowerFn] = {**aten_ops.LOWERINGS, **aten_nn.LOWERINGS}

# Composites kept whole by the decompositions (docs/architecture.md: fusion keeps them;
# backends lower them).
KEEP = (
    aten.layer_norm.default,
    aten.group_norm.default,
    aten.rms_norm.default,
    aten.softmax.int,
    aten.log_softmax.int,
    aten.silu.default,
    aten.scaled_dot_product_attention.default,
    aten.linear.default,
    aten.matmul.default,
    aten.upsample_nearest2d.vec,
)


@dataclass(frozen=True)
class InputBinding:
    """Where a graph input comes from at call time: a user argument leaf or a module state."""

    kind: str  # "user" (flat argument index) | "parameter" | "buffer"
    key: int | str


@dataclass(frozen=True)
class ArgSpec:
    """What one flat user argument must look like: a tensor's shape/dtype, or a fixed value."""

    shape: tuple[int, ...] | None
    dtype: torch.dtype | None
    value: Any = None  # non-tensor arguments are specialized on their example value

    def describe(self) -> str:
        if self.shape is None:
            return f"the value {self.value!r}"
        return f"a {str(self.dtype).removeprefix('torch.')} tensor of shape {list(self.shape)}"


@dataclass
class Captured:
    graph: Graph
    bindings: tuple[InputBinding, ...]  # one per graph input, in order
    arg_specs: tuple[ArgSpec, ...]  # one per flat user argument
    in_spec: pytree.TreeSpec
    out_spec: pytree.TreeSpec
    out_leaves: tuple[tuple[str, Any], ...]  # ("value", graph output index) | ("const", obj)
    module: torch.nn.Module
    kwarg_names: tuple[str, ...] = ()  # keyword arguments in the order they were captured
    capture_seconds: float = 0.0

    def weight_names(self) -> frozenset[str]:
        """The graph inputs bound to module parameters."""
        return frozenset(
            v.name
            for v, b in zip(self.graph.inputs, self.bindings, strict=True)
            if b.kind == "parameter"
        )


class _FunctionModule(torch.nn.Module):
    """Wraps a plain function so torch.export can take it."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn
        # Modules the function reaches (a bound method's owner, modules in its closure) become
        # submodules, so their weights are parameters, read at call time, never constants.
        owners = [getattr(fn, "__self__", None)]
        owners += [
            c.cell_contents for c in getattr(fn, "__closure__", None) or () if _has_contents(c)
        ]
        for i, owner in enumerate(o for o in owners if isinstance(o, torch.nn.Module)):
            self.add_module(f"captured_{i}", owner)
        # torch.export keeps stack frames of `forward` functions only; anchoring the user's
        # function keeps its frames too, so errors and IR comments point at the user's lines.
        anchor = getattr(torch.fx.proxy, "_register_stack_trace_anchor", None)
        if anchor is not None:
            anchor(fn)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


def _has_contents(cell: Any) -> bool:
    try:
        cell.cell_contents  # noqa: B018  (an empty cell raises)
    except ValueError:
        return False
    return True


def as_module(model: Callable[..., Any]) -> torch.nn.Module:
    return model if isinstance(model, torch.nn.Module) else _FunctionModule(model)


def decomposition_table() -> dict[Any, Callable[..., Any]]:
    table = torch.export.default_decompositions()
    for op in KEEP:
        table.pop(op, None)
    return dict(table)


def export_program(
    module: torch.nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> ExportedProgram:
    """torch.export + decompositions, with a clear error when torch cannot capture the model."""
    name = _model_name(module)
    try:
        ep = torch.export.export(module, tuple(args), dict(kwargs), strict=False)
    except Exception as e:  # torch raises many types here; all mean "could not capture"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = _export_hint(str(e))
        raise CaptureError(
            f"torch.export could not capture {name}: {type(e).__name__}: {reason}\n  hint: {hint}"
        ) from e
    with warnings.catch_warnings():
        # torch 2.13 warns from inside run_decompositions about its own pytree internals.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        return ep.run_decompositions(decomposition_table())


def _export_hint(message: str) -> str:
    if "DynamicCache" in message or ("Cache" in message and "pytree" in message):
        return "this model returns a KV cache object; build it with use_cache=False."
    if "data-dependent" in message.lower() or "guard" in message.lower():
        return "control flow depends on tensor values; tilefuse needs static shapes and control."
    return (
        "tilefuse captures with torch.export.export(model, args, strict=False); make that call "
        "work on its own first (see the torch.export docs on unsupported Python constructs)."
    )


def _model_name(module: torch.nn.Module) -> str:
    if isinstance(module, _FunctionModule):
        return getattr(module.fn, "__name__", "function")
    return type(module).__name__


def graph_name(module: torch.nn.Module) -> str:
    name = _model_name(module)
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned and not cleaned[0].isdigit() else f"f_{cleaned}"


@dataclass(frozen=True)
class Exported:
    """A model as torch.export traced it on example inputs, before lowering."""

    program: ExportedProgram
    module: torch.nn.Module
    leaves: list[Any]  # the example arguments, flattened
    in_spec: pytree.TreeSpec
    kwarg_names: tuple[str, ...]
    seconds: float  # how long tracing took


def export(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None
) -> Exported:
    """Trace `model(*args, **kwargs)` with torch.export (the pipeline's `capture` stage)."""
    kwargs = dict(kwargs or {})
    module = as_module(model)
    start = time.perf_counter()
    ep = export_program(module, args, kwargs)
    seconds = time.perf_counter() - start
    for spec in ep.graph_signature.output_specs:
        if spec.kind is not OutputKind.USER_OUTPUT:
            raise UnsupportedOpError(
                f"output kind {spec.kind.name}",
                spec.arg.name if hasattr(spec.arg, "name") else "?",
                "",
                "the model mutates a buffer or input in place during forward; tilefuse compiles "
                "inference programs without state updates",
                hint="",
            )
    leaves, in_spec = pytree.tree_flatten((tuple(args), kwargs))
    return Exported(ep, module, leaves, in_spec, tuple(kwargs), seconds)


def lower(exported: Exported) -> Captured:
    """The exported program as our IR, with how each graph input binds at call time (the
    pipeline's `lower` stage)."""
    ep, module, leaves = exported.program, exported.module, exported.leaves
    arg_specs = tuple(
        ArgSpec(tuple(x.shape), x.dtype) if isinstance(x, torch.Tensor) else ArgSpec(None, None, x)
        for x in leaves
    )
    sig = ep.graph_signature
    lowering = Lowering(ep, graph_name(module), ATEN_LOWERINGS)
    graph, input_kinds, out_leaves = lowering.run(leaves)
    bindings = []
    user_index = {
        s.arg.name: i
        for i, s in enumerate(s for s in sig.input_specs if s.kind is InputKind.USER_INPUT)
    }
    for placeholder, kind, target in input_kinds:
        if kind is InputKind.USER_INPUT:
            bindings.append(InputBinding("user", user_index[placeholder]))
        elif kind is InputKind.PARAMETER:
            bindings.append(InputBinding("parameter", target))
        else:
            bindings.append(InputBinding("buffer", target))
    return Captured(
        graph=graph,
        bindings=tuple(bindings),
        arg_specs=arg_specs,
        in_spec=exported.in_spec,
        out_spec=ep.call_spec.out_spec,
        out_leaves=tuple(out_leaves),
        module=module,
        kwarg_names=exported.kwarg_names,
        capture_seconds=exported.seconds,
    )


def capture(
    model: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any] | None = None
) -> Captured:
    """Export `model(*args, **kwargs)` and lower it to our IR (not yet optimized)."""
    return lower(export(model, args, kwargs))
