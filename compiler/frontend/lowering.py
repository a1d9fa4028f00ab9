"""ATen (after decompositions) -> IR: the driver.

The lowerings themselves live in `aten_ops.py` and `aten_nn.py`, one function per ATen op
family; `capture.py` gathers them into the table a `Lowering` is given. Each lowering gets the
fx node and returns the IR value (or a list, for multi-output ops that `getitem` picks from).
After every node the lowered type is checked against the type torch recorded
(`meta["val"]`): a lowering bug stops here, naming the node, not as a wrong answer later.
Python scalars become 0-d `full` nodes and dtype promotion becomes explicit `cast`s
(Note [Scalars are 0-d constants] in compiler/core/ir.py).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import fx
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, TensorArgument

from compiler.core.dtypes import to_dtype, to_torch
from compiler.core.errors import OpTypeError, UnsupportedOpError
from compiler.core.ir import ConstArray, Graph, GraphBuilder, Value
from compiler.core.types import DType, TensorType
from compiler.frontend.source import format_frame, user_frame

Lowered = str | list[str] | None
LowerFn = Callable[["Lowering", fx.Node], Lowered]
DROPPED_OPS = {"_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range_for_size"}


def op_name(target: Any) -> str:
    if target is operator.getitem:
        return "getitem"
    packet = getattr(target, "overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(target, "__name__", str(target))


class Lowering:
    """State while lowering one exported program: the builder and the fx-name -> value map."""

    def __init__(self, ep: ExportedProgram, name: str, lowerings: Mapping[str, LowerFn]) -> None:
        self.ep = ep
        self.lowerings = lowerings
        self.b = GraphBuilder(name)
        self.env: dict[str, Lowered] = {}
        self.node: fx.Node | None = None
        self.op = ""  # the ATen op being lowered (overload packet name)
        self.source = ""

    # --- helpers used by the lowerings

    def out_type(self, n: fx.Node | None = None) -> TensorType:
        val = (n or self.node).meta["val"]  # type: ignore[union-attr]
        return TensorType(tuple(int(s) for s in val.shape), to_dtype(val.dtype))

    def emit(self, op: str, inputs: Sequence[str], **attrs: Any) -> str:
        return self.b.add(op, inputs, attrs, source=self.source)

    def t(self, arg: Any) -> str:
        """The IR value of a tensor argument."""
        if not isinstance(arg, fx.Node):
            raise OpTypeError(f"expected a tensor argument, got {arg!r}")
        v = self.env[arg.name]
        if not isinstance(v, str):
            raise OpTypeError(f"{arg.name} is a multi-output value; index it first")
        return v

    def scalar(self, value: float | int | bool, dtype: DType, exact: bool = False) -> str:
        """A Python scalar as a 0-d `full`. Arithmetic (`exact`) keeps the Python value, as
        torch computes `x_bf16 * 1e5` in float32 with the unrounded scalar; a scalar compared
        with or stored into a tensor takes the value the dtype holds (bf16: -1e4 -> -9984)."""
        if dtype is DType.bool:
            value = bool(value)
        elif not dtype.is_float:
            value = int(value)
        elif exact:
            value = float(value)
        else:
            value = torch.tensor(float(value), dtype=to_torch(dtype)).item()
        return self.emit("full", [], shape=(), value=value, dtype=dtype)

    def v(self, arg: Any, dtype: DType, exact: bool = False) -> str:
        """A tensor or scalar argument as an IR value of `dtype` (casting a tensor if needed)."""
        if isinstance(arg, fx.Node):
            return self.cast(self.t(arg), dtype)
        return self.scalar(arg, dtype, exact)

    def cast(self, value: str, dtype: DType) -> str:
        if self.b.type(value).dtype is dtype:
            return value
        return self.emit("cast", [value], dtype=dtype)

    def arg_dtype(self, arg: Any) -> Any:
        return arg.meta["val"] if isinstance(arg, fx.Node) else arg

    def fail(self, reason: str, op: str | None = None) -> UnsupportedOpError:
        """A refusal of this use of a known op: `reason` says why and what to do instead."""
        n = self.node
        assert n is not None
        return UnsupportedOpError(op or str(n.target), n.name, self.user_source(n), reason, hint="")

    @staticmethod
    def user_source(n: fx.Node) -> str:
        return format_frame(user_frame(n.meta.get("stack_trace")))

    # --- driver

    def run(self, leaves: Sequence[Any]) -> tuple[Graph, list[Any], list[tuple[str, Any]]]:
        sig = self.ep.graph_signature
        specs = {s.arg.name: s for s in sig.input_specs if isinstance(s.arg, TensorArgument)}
        input_kinds: list[Any] = []
        user_leaf = 0
        taken: set[str] = set()
        for n in self.ep.graph.nodes:
            if n.op != "placeholder":
                continue
            spec = specs.get(n.name)
            kind = spec.kind if spec is not None else InputKind.USER_INPUT
            if kind is InputKind.USER_INPUT:
                leaf = leaves[user_leaf]
                user_leaf += 1
                if not isinstance(leaf, torch.Tensor):
                    self.env[n.name] = None  # specialized: torch.export baked the value in
                    continue
            if kind is InputKind.CONSTANT_TENSOR:
                tensor = self.ep.constants[spec.target]  # type: ignore[union-attr]
                self.env[n.name] = self.constant(tensor, n.name)
                continue
            if kind not in (InputKind.USER_INPUT, InputKind.PARAMETER, InputKind.BUFFER):
                raise UnsupportedOpError(
                    f"input kind {kind.name}", n.name, "", "not supported", hint=""
                )
            name = _input_name(n.name, kind, taken)
            self.b.add_input(Value(name, self.out_type(n)))
            self.env[n.name] = name
            input_kinds.append((n.name, kind, spec.target if spec is not None else None))
        for n in self.ep.graph.nodes:
            if n.op == "call_function":
                self.lower_node(n)
        return self.finish(input_kinds)

    def constant(self, tensor: torch.Tensor, name: str) -> str:
        dtype = to_dtype(tensor.dtype)
        array = tensor.detach().float().numpy() if dtype is DType.bf16 else tensor.numpy()
        self.source = f"constant {name}"
        return self.emit("constant", [], value=ConstArray.of(array), dtype=dtype)

    def lower_node(self, n: fx.Node) -> None:
        self.node = n
        self.op = name = op_name(n.target)
        self.source = _short_source(n)
        if name in DROPPED_OPS:
            return
        fn = self.lowerings.get(name)
        if fn is None:
            raise UnsupportedOpError(str(n.target), n.name, self.user_source(n))
        try:
            out = fn(self, n)
        except OpTypeError as e:
            raise self.fail(str(e)) from e
        if isinstance(out, str):
            got, want = self.b.type(out), self.out_type(n)
            if got != want:
                raise OpTypeError(
                    f"internal lowering error at {n.name} ({n.target}): lowered to {got}, "
                    f"torch says {want}; source: {self.user_source(n)}"
                )
        self.env[n.name] = out

    def finish(self, input_kinds: list[Any]) -> tuple[Graph, list[Any], list[tuple[str, Any]]]:
        output_node = next(n for n in self.ep.graph.nodes if n.op == "output")
        outputs: list[str] = []
        leaves: list[tuple[str, Any]] = []
        for arg in output_node.args[0]:
            if isinstance(arg, fx.Node):
                leaves.append(("value", len(outputs)))
                outputs.append(self.t(arg))
            else:
                leaves.append(("const", arg))
        return self.b.build(outputs), input_kinds, leaves


def _input_name(fx_name: str, kind: InputKind, taken: set[str]) -> str:
    name = fx_name
    if kind in (InputKind.PARAMETER, InputKind.BUFFER) and name[:2] in ("p_", "b_"):
        name = name[2:]
    base, i = name, 1
    while name in taken or not name.isidentifier():
        name = f"{base}_{i}" if base.isidentifier() else f"arg_{i}"
        i += 1
    taken.add(name)
    return name


def _short_source(n: fx.Node) -> str:
    stack = n.meta.get("nn_module_stack") or {}
    path = ""
    if stack:
        path = list(stack.values())[-1][0]
        path = path.removeprefix("L['self'].").replace("L['self']", "")
    frame = user_frame(n.meta.get("stack_trace"))
    where = f"{frame[0].rsplit('/', 1)[-1]}:{frame[1]}" if frame else ""
    return " ".join(p for p in (path, f"({where})" if where and path else where) if p)
