"""The NumPy backend: renders a graph as a readable Python module of NumPy calls, the oracle.

Every node becomes one line built from its op's NumPy template (`compiler.core.ops`), so the module
reads like the IR it came from:

    def gpt2_block(x, w_ln, b_ln):
        v0 = ref.layer_norm(x, w_ln, b_ln, normalized_shape=(512,), eps=1e-05)  # h.0.ln_1
        return (v0,)

Floats compute in float32 (f32, f16 and bf16 tensors alike: NumPy has no bf16) or float64 on
request; integers and bools keep their types. Constants (folded masks) are module globals bound
at load time.
"""

from __future__ import annotations

import linecache
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compiler.core.ir import ConstArray, Graph, Node, format_attr, print_graph
from compiler.core.ops import get as get_op
from compiler.core.ops import ref as ref_module
from compiler.core.types import DType, TensorType

INT_NUMPY = {DType.i64: "np.int64", DType.i32: "np.int32", DType.bool: "np.bool_"}


def numpy_dtype(dtype: DType, float_dtype: str = "float32") -> str:
    return f"np.{float_dtype}" if dtype.is_float else INT_NUMPY[dtype]


def render_value(v: Any, float_dtype: str) -> str:
    if isinstance(v, DType):
        return numpy_dtype(v, float_dtype)
    if isinstance(v, ConstArray):
        return f"_const_{v.digest}"
    if isinstance(v, float) and not np.isfinite(v):
        return f"float({str(v)!r})"
    return format_attr(v)


def local(name: str) -> str:
    """The Python name of an IR value in generated code: prefixed, so no graph input (`v0`,
    `np`, `ref`, a keyword) can collide with generated names (`v3`, `out_*`, `buf2`)."""
    return f"a_{name}"


def numpy_expr(
    node: Node, inputs: Sequence[str], in_types: Sequence[TensorType], float_dtype: str
) -> str:
    """The NumPy expression computing `node` from the named input arrays of `in_types`."""
    op = get_op(node.op)
    attrs = {k: render_value(v, float_dtype) for k, v in node.attrs}
    attrs.update((f"{k}_ir", v.value) for k, v in node.attrs if isinstance(v, DType))
    attrs["out_dtype"] = numpy_dtype(node.out.type.dtype, float_dtype)
    attrs["src_ir"] = in_types[0].dtype.value if in_types else ""
    if callable(op.numpy):
        return op.numpy(inputs, attrs)
    return op.numpy.format(*inputs, inputs=", ".join(inputs), **attrs)


@dataclass(frozen=True)
class NumpyProgram:
    """Generated source plus the constants it needs; `load()` gives the callable."""

    name: str
    source: str
    constants: dict[str, np.ndarray]
    float_dtype: str

    def load(self) -> Callable[..., tuple[np.ndarray, ...]]:
        fn = self.load_namespace()[self.name]

        def run(*inputs: np.ndarray) -> Any:
            with np.errstate(all="ignore"):  # IEEE results (1/0 = inf) without warnings, as torch
                return fn(*inputs)

        return run

    def load_namespace(self) -> dict[str, Any]:
        """Execute the module; its globals (the program and kernel functions) by name."""
        filename = f"<tilefuse-numpy:{self.name}:{abs(hash(self.source)):x}>"
        # Registered with linecache so tracebacks through generated code show its lines.
        linecache.cache[filename] = (len(self.source), None, self.source.splitlines(True), filename)
        namespace: dict[str, Any] = {"np": np, "ref": ref_module, **self.constants}
        exec(compile(self.source, filename, "exec"), namespace)
        return namespace


def constants_of(nodes: Sequence[Node], float_dtype: str) -> dict[str, np.ndarray]:
    """The module globals the `constant` nodes among `nodes` render as."""
    constants: dict[str, np.ndarray] = {}
    for n in nodes:
        for _, v in n.attrs:
            if isinstance(v, ConstArray):
                array = v.array()
                if array.dtype.kind == "f":
                    array = array.astype(float_dtype)
                constants[f"_const_{v.digest}"] = array
    return constants


def render(g: Graph, *, float_dtype: str = "float32", all_values: bool = False) -> NumpyProgram:
    """Render `g` as a module defining one function named after the graph. With `all_values`
    the function returns a dict of every value by its IR name (kernel bisection reads it)."""
    names = {v.name: local(v.name) for v in g.inputs}
    for i, n in enumerate(g.nodes):
        names[n.out.name] = f"v{i}"
    types = g.values()
    ir_text = "".join(f"#   {line}\n" for line in print_graph(g).splitlines())
    lines = [
        f'"""tilefuse NumPy reference for {g.name} ({float_dtype} compute)."""',
        "# IR:",
        ir_text.rstrip("\n"),
        "import numpy as np",
        "from compiler.core.ops import ref",
        "",
        "",
        f"def {g.name}({', '.join(names[v.name] for v in g.inputs)}):",
    ]
    for n in g.nodes:
        ins = [names[i] for i in n.inputs]
        expr = numpy_expr(n, ins, [types[i].type for i in n.inputs], float_dtype)
        comment = f"  # {n.source}" if n.source else ""
        lines.append(f"    {names[n.out.name]} = {expr}{comment}")
    if all_values:
        lines.append("    return {" + ", ".join(f"{k!r}: {v}" for k, v in names.items()) + "}")
    else:
        outs = ", ".join(names[o] for o in g.outputs)
        lines.append(f"    return ({outs},)" if len(g.outputs) == 1 else f"    return ({outs})")
    return NumpyProgram(
        g.name, "\n".join(lines) + "\n", constants_of(g.nodes, float_dtype), float_dtype
    )


def evaluate_node(
    node: Node, inputs: Sequence[np.ndarray], in_types: Sequence[TensorType], float_dtype: str
) -> Any:
    """Evaluate one node on NumPy arrays (constant folding uses this: the reference decides)."""
    names = [f"a{i}" for i in range(len(inputs))]
    env: dict[str, Any] = {"np": np, "ref": ref_module, **dict(zip(names, inputs, strict=True))}
    for _, v in node.attrs:
        if isinstance(v, ConstArray):
            env[f"_const_{v.digest}"] = v.array()
    expr = numpy_expr(node, names, in_types, float_dtype)
    with np.errstate(all="ignore"):
        return np.asarray(eval(expr, env))
