"""The schedule: what each kernel computes, in order.

`fuse_kernels` (passes/fusion.py) turns a graph into a `Schedule` of `KernelSpec`s; every backend
renders the same specs. A kernel is frozen data:

    k2_fused_layer_norm_add  reduction  domain=[1,128,512]  reduce=(2,)
      in:  x: f32[1,128,512], r: f32[1,128,512], w: f32[512], b: f32[512]
      out: v1, v2
        v0: f32[1,128,512] = add(x, r)
        v1: f32[1,128,512] = layer_norm(v0, w, b, normalized_shape=(512,), eps=1e-05)

Note [Views are index maps]
Movement ops that only re-index (reshape, permute, expand, slice) and sources (full, arange,
constant) are copied into every kernel that uses them: inside a kernel they are index
arithmetic on the input it reads (or a value it computes on the spot), never a copy in memory.
`index_map` gives the strided form of such a chain where one exists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from compiler.core.ir import Graph, Node, Value, format_attr
from compiler.core.types import TensorType

KINDS = ("pointwise", "reduction", "matmul", "conv2d", "attention")
VIEW_OPS = frozenset({"reshape", "permute", "expand", "slice"})
SOURCE_OPS = frozenset({"full", "arange", "constant"})


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: reads `inputs` from memory, computes `body`, writes `outputs`.

    `domain` is the iteration space (the anchor's output shape, or the pointwise output shape),
    `reduction_axes` the axes of `domain`'s input that a reduction kernel reduces over, and
    `tile` the tile config a GPU profile chose (None until tiling runs)."""

    name: str
    kind: str
    inputs: tuple[Value, ...]
    body: tuple[Node, ...]
    outputs: tuple[str, ...]
    domain: tuple[int, ...]
    reduction_axes: tuple[int, ...] = ()
    anchors: tuple[str, ...] = ()  # the matmul/conv/attention/reduction nodes it is built on
    tile: Any = None

    def type_of(self, name: str) -> TensorType:
        for v in self.inputs:
            if v.name == name:
                return v.type
        for n in self.body:
            if n.out.name == name:
                return n.out.type
        raise KeyError(name)

    @property
    def empty(self) -> bool:
        """Every output has no element (a size-0 dimension): there is nothing to compute, and
        each backend renders the kernel as nothing (its inputs may be empty too, where index
        arithmetic would divide by a size of 0)."""
        return all(self.type_of(o).numel == 0 for o in self.outputs)

    @property
    def compute_ops(self) -> list[str]:
        return [n.op for n in self.body if n.op not in VIEW_OPS | SOURCE_OPS]

    def summary(self) -> str:
        ins = ", ".join(f"{v.name}: {v.type}" for v in self.inputs)
        outs = ", ".join(f"{o}: {self.type_of(o)}" for o in self.outputs)
        return f"{self.name}  {self.kind}  in: {ins}  out: {outs}"

    def __str__(self) -> str:
        reduce = f"  reduce={self.reduction_axes}" if self.reduction_axes else ""
        lines = [f"{self.name}  {self.kind}  domain={list(self.domain)}{reduce}"]
        lines.append("  in:  " + ", ".join(f"{v.name}: {v.type}" for v in self.inputs))
        lines.append("  out: " + ", ".join(self.outputs))
        for n in self.body:
            args = [*n.inputs, *(f"{k}={format_attr(v)}" for k, v in n.attrs)]
            lines.append(f"    {n.out.name}: {n.out.type} = {n.op}({', '.join(args)})")
        return "\n".join(lines)


@dataclass(frozen=True)
class Schedule:
    """Kernels in execution order over the graph's inputs and outputs (where their values live
    is each program's own: `passes.memory.plan_memory`)."""

    graph: Graph
    kernels: tuple[KernelSpec, ...]
    refusals: tuple[str, ...] = field(default=(), compare=False)  # why merges were refused

    def __iter__(self) -> Iterator[KernelSpec]:
        return iter(self.kernels)

    def __len__(self) -> int:
        return len(self.kernels)

    def producer_kernel(self) -> dict[str, KernelSpec]:
        return {o: k for k in self.kernels for o in k.outputs}

    def __str__(self) -> str:
        parts = [f"schedule {self.graph.name}: {len(self.kernels)} kernels"]
        for k in self.kernels:
            text = str(k)
            if k.tile is not None:  # a TileConfig from passes/tiling.py tile_kernels
                text += f"\n  tile ({k.tile.gpu}): {k.tile}\n    why: {k.tile.reason}"
            parts.append(text)
        return "\n\n".join(parts) + "\n"


@dataclass(frozen=True)
class ExternCall:
    """A compute anchor a backend delegates to a library instead of generating it: on CPU,
    matmul and conv2d go to the BLAS/oneDNN torch ships, through torch.

    `views` are the view ops from `inputs` (kernel inputs or earlier results) to the anchor's
    operands: the library reads them as strided views, never as copies we make."""

    name: str
    node: Node
    inputs: tuple[Value, ...]
    views: tuple[Node, ...]
    library: str

    @property
    def output(self) -> str:
        return self.node.out.name

    def __str__(self) -> str:
        ins = ", ".join(f"{v.name}: {v.type}" for v in self.inputs)
        lines = [f"{self.name}  extern {self.library}", f"  in:  {ins}", f"  out: {self.output}"]
        for n in (*self.views, self.node):
            args = [*n.inputs, *(f"{k}={format_attr(v)}" for k, v in n.attrs)]
            lines.append(f"    {n.out.name}: {n.out.type} = {n.op}({', '.join(args)})")
        return "\n".join(lines)


Step = KernelSpec | ExternCall


def split_externs(k: KernelSpec, extern_ops: dict[str, str]) -> list[Step]:
    """`k` as native kernels and extern calls, in order, for a backend that delegates the ops
    in `extern_ops` (op -> library). Each native part reads the extern results it needs, so
    a GEMM's epilogue stays fused around it:

        k5_fused_matmul_add_gelu -> [k5.0 extern matmul, k5.1_add_gelu (reads t27 once)]

    A part's outputs are the kernel's outputs it computes plus what later parts and externs
    read; views and sources are copied into every part that reads them."""
    anchors = [n for n in k.body if n.op in extern_ops]
    if not anchors:
        return [k]
    producers = {n.out.name: n for n in k.body}
    cheap = VIEW_OPS | SOURCE_OPS
    index = {a.out.name: i for i, a in enumerate(anchors)}
    order = {n.out.name: i for i, n in enumerate(k.body)}

    def root(name: str) -> tuple[str, list[Node]]:
        chain: list[Node] = []
        while name in producers and producers[name].op in VIEW_OPS:
            chain.append(producers[name])
            name = producers[name].inputs[0]
        return name, chain[::-1]

    # which part (0..len(anchors)) computes each native node: after every anchor it depends on
    part: dict[str, int] = {}
    for n in k.body:
        deps = [part.get(i, 0) for i in n.inputs] + [index[i] + 1 for i in n.inputs if i in index]
        part[n.out.name] = max(deps, default=0)
    must: dict[int, set[str]] = {}  # part -> values other parts or externs read from it
    for a in anchors:
        for operand in a.inputs:
            r, _ = root(operand)
            if r in producers and r not in index:
                must.setdefault(part[r], set()).add(r)
    for n in k.body:
        if n.op in cheap or n.op in extern_ops:
            continue
        for i in n.inputs:
            r, _ = root(i)
            crosses = r in producers and r not in index and part[r] != part[n.out.name]
            if crosses and producers[r].op not in cheap:
                must.setdefault(part[r], set()).add(r)
    steps: list[Step] = []
    for p in range(len(anchors) + 1):
        own = [
            n
            for n in k.body
            if part[n.out.name] == p and n.op not in cheap and n.op not in extern_ops
        ]
        handed = sorted(must.get(p, ()), key=order.__getitem__)  # deterministic: body order
        own += [producers[r] for r in handed if producers[r].op in SOURCE_OPS]  # materialized
        outs = [n.out.name for n in own if n.out.name in k.outputs or n.out.name in must.get(p, ())]
        if own and outs:
            steps.append(_part(k, p, own, outs, producers))
        if p < len(anchors):
            a = anchors[p]
            roots, views = [], []
            for operand in a.inputs:
                r, chain = root(operand)
                roots.append(r)
                views += [v for v in chain if v not in views]
            types = {v.name: v.type for v in k.inputs} | {n.out.name: n.out.type for n in k.body}
            inputs = tuple(Value(r, types[r]) for r in dict.fromkeys(roots))
            steps.append(
                ExternCall(f"{k.name}.{p}_{a.op}", a, inputs, tuple(views), extern_ops[a.op])
            )
    return steps


def _part(k: KernelSpec, p: int, own: list[Node], outs: list[str], producers: dict) -> KernelSpec:
    """The native kernel of part `p`: its own nodes plus copies of the views and sources they
    read; everything else it reads is an input."""
    body_names = {n.out.name for n in own}
    needed: list[Node] = []
    inputs: dict[str, Value] = {}
    types = {v.name: v.type for v in k.inputs} | {n.out.name: n.out.type for n in k.body}

    def need(name: str) -> None:
        if name in body_names:
            return
        n = producers.get(name)
        if n is not None and n.op in VIEW_OPS | SOURCE_OPS:
            body_names.add(name)
            for i in n.inputs:
                need(i)
            needed.append(n)
        elif name not in inputs:
            inputs[name] = Value(name, types[name])

    for n in own:
        for i in n.inputs:
            need(i)
    order = {n.out.name: i for i, n in enumerate(k.body)}
    body = sorted([*needed, *own], key=lambda n: order[n.out.name])
    ops = [n.op for n in own]
    kind = "reduction" if any(o in REDUCTION_LIKE for o in ops) else "pointwise"
    name = f"{k.name}.{p}_" + "_".join(dict.fromkeys(ops))[:48]
    return KernelSpec(name, kind, tuple(inputs.values()), tuple(body), tuple(outs), k.domain)


REDUCTION_LIKE = frozenset(
    {
        "sum",
        "mean",
        "amax",
        "amin",
        "cumsum",
        "softmax",
        "log_softmax",
        "layer_norm",
        "rms_norm",
        "group_norm",
    }
)


def output_chains(g: Graph) -> set[str]:
    """The graph outputs and the values on chains of views and sources leading to them: the
    program computes those on kernel outputs (a view of a kernel output is not a kernel)."""
    producers = g.producers()
    found: set[str] = set()
    todo = list(g.outputs)
    while todo:
        o = todo.pop()
        if o in found:
            continue
        found.add(o)
        p = producers.get(o)
        if p is not None and p.op in VIEW_OPS | SOURCE_OPS:
            todo.extend(p.inputs)
    return found


def index_map(
    chain: list[Node], source: TensorType
) -> tuple[tuple[int, ...], tuple[int, ...], int] | None:
    """The (shape, strides, offset) in elements of a chain of view ops applied to a contiguous
    tensor of type `source`, or None where a reshape would need a copy (a non-strided view)."""
    shape = list(source.shape)
    strides = _contiguous_strides(shape)
    offset = 0
    for n in chain:
        if n.op == "permute":
            dims = n.attr("dims")
            shape, strides = [shape[d] for d in dims], [strides[d] for d in dims]
        elif n.op == "expand":
            new = list(n.attr("shape"))
            lead = len(new) - len(shape)
            strides = [0] * lead + [
                0 if s == 1 and d != 1 else st
                for s, d, st in zip(shape, new[lead:], strides, strict=True)
            ]
            shape = new
        elif n.op == "slice":
            d = n.attr("dim")
            offset += n.attr("start") * strides[d]
            shape[d] = n.out.type.shape[d]
            strides[d] *= n.attr("step")
        elif n.op == "reshape":
            reshaped = _reshape_strides(shape, strides, list(n.attr("shape")))
            if reshaped is None:
                return None
            shape, strides = list(n.attr("shape")), reshaped
        else:
            raise ValueError(f"index_map: {n.op} is not a view op")
    return tuple(shape), tuple(strides), offset


def _contiguous_strides(shape: list[int]) -> list[int]:
    strides, acc = [], 1
    for s in reversed(shape):
        strides.append(acc)
        acc *= s
    return strides[::-1]


def _reshape_strides(shape: list[int], strides: list[int], new: list[int]) -> list[int] | None:
    """Strides for viewing (shape, strides) as `new` without a copy, like torch's `view`."""
    dims = [(s, st) for s, st in zip(shape, strides, strict=True) if s != 1]
    # merge runs of dims that are contiguous with each other into chunks
    chunks: list[tuple[int, int]] = []  # (size, stride of the innermost dim)
    for s, st in dims:
        if chunks and chunks[-1][1] == st * s:
            size, _ = chunks[-1]
            chunks[-1] = (size * s, st)
        else:
            chunks.append((s, st))
    out: list[int] = []
    i = 0
    remaining = chunks[0][0] if chunks else 1
    inner_stride = chunks[0][1] if chunks else 1
    for size in new:
        if size == 1:
            out.append(0 if not out else out[-1])
            continue
        if i >= len(chunks) or remaining % size:
            return None
        remaining //= size
        out.append(inner_stride * remaining)
        if remaining == 1:
            i += 1
            if i < len(chunks):
                remaining, inner_stride = chunks[i]
    return out if i >= len(chunks) else None
