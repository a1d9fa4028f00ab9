"""`torch.compile(model, backend="tilefuse")`: tilefuse as a TorchDynamo backend.

    cm = torch.compile(model, backend="tilefuse", options={"backend": "llvm", "gpu": "h100"})
    with torch.inference_mode():
        y = cm(x)

Registered through the `torch_dynamo_backends` entry point (pyproject.toml), so the name works
once tilefuse is installed; `torch.compile(model, backend=compiler.dynamo.backend)` works
without it. Dynamo hands over each graph it captured (one per graph break) with example
inputs; each is compiled by `compiler.compile` (torch.export of the graph, our passes, the
chosen backend), and the callable returned runs it.

Note [Dynamo graphs as modules]
Dynamo passes a module's parameters as graph inputs (nn.Parameter objects, one placeholder
each). The graph is wrapped in a module that registers them as its own parameters, so
tilefuse sees weights, not activations: they are read at call time (Note [Weights are
inputs] in compiler/frontend/capture.py) and the llvm backend keeps their packed GEMM layout.
Each call checks that dynamo passes the same parameter objects; different ones compile again.
Integer inputs (the sizes of a graph dynamo made dynamic) are specialized: each distinct set of
sizes compiles once and is cached, as `compiler.jit` does per input signature.

Options (`options={...}`): `backend` ("auto", "llvm", "numpy", "triton"), `gpu` (a profile
name), `compute_dtype` (the NumPy backend's float dtype). tilefuse compiles inference graphs:
a graph whose inputs require grad with grad mode on is refused with a clear error rather
than returning outputs without a backward.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch

from compiler.core.errors import TilefuseError

log = logging.getLogger("tilefuse.dynamo")

OPTIONS = ("backend", "gpu", "compute_dtype")


def backend(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    *,
    options: dict[str, Any] | None = None,
    mode: str | None = None,
) -> Callable[..., Any]:
    """The TorchDynamo backend: `gm` (one captured graph) -> a callable over the same inputs.

        f = torch.compile(lambda x: torch.relu(x) * 2, backend=compiler.dynamo.backend)
        f(torch.tensor([-1.0, 3.0]))  # tensor([0., 6.])

    (tests/test_dynamo.py runs it.)
    """
    opts = dict(options or {})
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"tilefuse torch.compile backend: unknown option(s) {unknown}; "
            f"accepted: {list(OPTIONS)}"
        )
    if mode not in (None, "default"):
        raise ValueError(
            f"tilefuse torch.compile backend: mode={mode!r} is not supported; tilefuse has no "
            "modes (pass options={'backend': ..., 'gpu': ...} instead)"
        )
    import backends

    backends.resolve(opts.get("backend", "auto"))  # an unknown backend fails now, by name
    return DynamoGraph(gm, list(example_inputs), opts)


class DynamoGraph:
    """One dynamo graph, compiled per input signature (Note [Dynamo graphs as modules])."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: list[Any], opts: dict) -> None:
        self.gm = gm
        self.opts = opts
        self.params = tuple(
            i for i, x in enumerate(example_inputs) if isinstance(x, torch.nn.Parameter)
        )
        self.cache: dict[Any, Any] = {}
        self._lock = threading.Lock()
        if not any(isinstance(x, torch.SymInt) for x in example_inputs):
            self._compiled(example_inputs)  # static shapes: compile now, errors at first call

    def __call__(self, *args: Any) -> Any:
        return self._compiled(args)(*self._activations(args))

    def _activations(self, args: Sequence[Any]) -> list[torch.Tensor]:
        params = set(self.params)
        return [
            a
            for i, a in enumerate(args)
            if i not in params and not isinstance(a, int | torch.SymInt)
        ]

    def _key(self, args: Sequence[Any]) -> Any:
        key = []
        for i, a in enumerate(args):
            if i in self.params:
                key.append(("param", id(a), tuple(a.shape), a.dtype))
            elif isinstance(a, torch.Tensor):
                key.append(("tensor", tuple(a.shape), a.dtype, a.device.type))
            else:
                key.append(("int", int(a)))
        return tuple(key)

    def _compiled(self, args: Sequence[Any]) -> Any:
        key = self._key(args)
        with self._lock:
            c = self.cache.get(key)
            if c is None:
                _refuse_grad(self.gm, args)
                c = self._compile(args)
                self.cache[key] = c
        return c

    def _compile(self, args: Sequence[Any]) -> Any:
        from compiler.api import compile as tilefuse_compile

        ints = {i: int(a) for i, a in enumerate(args) if isinstance(a, int | torch.SymInt)}
        params = {i: args[i] for i in self.params}
        module = GraphModule(self.gm, len(args), params, ints)
        log.info(
            "compiling dynamo graph %s (%d nodes, %d inputs, sizes %s) for backend %s",
            type(self.gm).__name__,
            len(self.gm.graph.nodes),
            len(args),
            ints or "static",
            self.opts.get("backend", "auto"),
        )
        return tilefuse_compile(
            module,
            tuple(self._activations(args)),
            backend=self.opts.get("backend", "auto"),
            gpu=self.opts.get("gpu"),
            compute_dtype=self.opts.get("compute_dtype"),
        )


class GraphModule(torch.nn.Module):
    """A dynamo graph taking only its activations: parameter inputs registered as this
    module's parameters, integer inputs fixed."""

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        arity: int,
        params: dict[int, torch.nn.Parameter],
        ints: dict[int, int],
    ) -> None:
        super().__init__()
        self.graph_module = gm
        self.arity = arity
        self.ints = ints
        self.param_names = {i: f"input_{i}" for i in params}
        for i, p in params.items():
            self.register_parameter(self.param_names[i], p)

    def forward(self, *activations: torch.Tensor) -> Any:
        it = iter(activations)
        args: list[Any] = []
        for i in range(self.arity):
            if i in self.param_names:
                args.append(getattr(self, self.param_names[i]))
            elif i in self.ints:
                args.append(self.ints[i])
            else:
                args.append(next(it))
        return self.graph_module(*args)


def _refuse_grad(gm: torch.fx.GraphModule, args: Sequence[Any]) -> None:
    if not torch.is_grad_enabled():
        return
    names = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
    for name, a in zip(names, args, strict=False):
        if isinstance(a, torch.Tensor) and a.requires_grad:
            raise TilefuseError(
                f"tilefuse torch.compile backend: input {name} requires grad and grad mode is "
                "on, but tilefuse compiles inference graphs (no backward). Call the compiled "
                "model under torch.inference_mode() or torch.no_grad()."
            )
