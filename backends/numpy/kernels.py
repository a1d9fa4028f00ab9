"""The NumPy backend, per kernel: each KernelSpec becomes its own readable NumPy function, and a
program function allocates the planned arena (`passes.memory.plan_memory`), views each planned
value at its offset and calls the kernels in order.

    def k3_fused_group_norm_silu(x, w, b, out_t7):
        # k3_fused_group_norm_silu  reduction  domain=[1,320,32,32]  reduce=(1, 2, 3)
        # ... (the kernel's IR)
        v0 = ref.group_norm(x, w, b, groups=32, eps=1e-05)
        v1 = ref.silu(v0)
        out_t7[...] = v1

Views inside a kernel are NumPy views (index maps, no copies); the oracle for each kernel is the
graph-level rendering in `compiler.core.reference`, against which `compiler.bisect` compares
kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from compiler.core.ir import print_graph
from compiler.core.ops.structural import index_reads
from compiler.core.reference import NumpyProgram, constants_of, local, numpy_dtype, numpy_expr
from compiler.core.schedule import KernelSpec, Schedule, output_chains
from compiler.core.types import DType
from passes.memory import Arena, MemoryRequest, stored_in


def storage_itemsize(float_dtype: str) -> Callable[[DType], int]:
    """Element sizes as this backend stores them: every float as `float_dtype`."""

    def itemsize(d: DType) -> int:
        return np.dtype(float_dtype).itemsize if d.is_float else d.itemsize

    return itemsize


def memory_request(s: Schedule, float_dtype: str) -> MemoryRequest:
    """This backend's storage policy: every value as `storage_itemsize` says, no scratch."""
    return stored_in(s, storage_itemsize(float_dtype))


def render_kernel(k: KernelSpec, float_dtype: str) -> list[str]:
    params = [local(v.name) for v in k.inputs] + [f"out_{o}" for o in k.outputs]
    lines = [f"def {k.name}({', '.join(params)}):"]
    lines += [f"    # {line}" for line in str(k).splitlines()]
    if k.empty:
        return lines + ["    pass  # every output is empty: nothing to compute"]
    names = {v.name: local(v.name) for v in k.inputs}
    for i, n in enumerate(k.body):
        in_types = [k.type_of(x) for x in n.inputs]
        for pos, size, lowest in index_reads(n.op, in_types):  # named for the error
            where = (n.op, n.out.name, n.source)
            lines.append(
                f"    ref.check_index({names[n.inputs[pos]]}, {size}, {lowest}, "
                + ", ".join(map(repr, where))
                + ")"
            )
        names[n.out.name] = f"v{i}"
        expr = numpy_expr(n, [names[x] for x in n.inputs], in_types, float_dtype)
        lines.append(f"    v{i} = {expr}")
    for o in k.outputs:
        lines.append(f"    out_{o}[...] = {names[o]}")
    return lines


def render_schedule(s: Schedule, arena: Arena, *, float_dtype: str = "float32") -> NumpyProgram:
    """A module with one function per kernel and a program function named after the graph,
    whose planned values live in `arena` (planned for `memory_request(s, float_dtype)`)."""
    g = s.graph
    lines = [
        f'"""tilefuse NumPy kernels for {g.name} ({float_dtype} compute): {len(s)} kernels, '
        f'{len(arena.blocks)} planned values in an arena of {arena.size} bytes."""',
        "import numpy as np",
        "from compiler.core.ops import ref",
        "",
        "",
        "def _at(arena, offset, shape, dtype):",
        "    count = int(np.prod(shape))",
        "    end = offset + count * np.dtype(dtype).itemsize",
        "    return arena[offset:end].view(dtype).reshape(shape)",
    ]
    for k in s.kernels:
        lines += ["", ""] + render_kernel(k, float_dtype)
    lines += ["", "", *_program(s, arena, float_dtype)]
    source = "\n".join(lines) + "\n"
    return NumpyProgram(g.name, source, constants_of(g.nodes, float_dtype), float_dtype)


def _program(s: Schedule, arena: Arena, float_dtype: str) -> list[str]:
    g = s.graph
    offsets = arena.offsets
    lines = [f"def {g.name}({', '.join(local(v.name) for v in g.inputs)}):"]
    lines += [f"    # {line}" for line in print_graph(g).splitlines()[:1]]
    if arena.blocks:  # a call's own: calls from two threads do not share it
        lines.append(f"    arena = np.empty({arena.size}, dtype=np.uint8)")
    for k in s.kernels:
        for o in k.outputs:
            t = k.type_of(o)
            dtype = numpy_dtype(t.dtype, float_dtype)
            if o in offsets:
                lines.append(f"    {local(o)} = _at(arena, {offsets[o]}, {t.shape}, {dtype})")
            else:
                lines.append(f"    {local(o)} = np.empty({t.shape}, dtype={dtype})")
        args = [local(v.name) for v in k.inputs] + [local(o) for o in k.outputs]
        lines.append(f"    {k.name}({', '.join(args)})")
    # outputs that are views (or sources) are computed here, on the kernels' outputs
    types = g.values()
    done = {v.name for v in g.inputs} | {o for k in s.kernels for o in k.outputs}
    chains = output_chains(g)
    for n in g.nodes:
        if n.out.name in done or n.out.name not in chains:
            continue
        in_types = [types[i].type for i in n.inputs]
        expr = numpy_expr(n, [local(i) for i in n.inputs], in_types, float_dtype)
        lines.append(f"    {local(n.out.name)} = {expr}")
        done.add(n.out.name)
    outs = ", ".join(local(o) for o in g.outputs)
    lines.append(f"    return ({outs},)" if len(g.outputs) == 1 else f"    return ({outs})")
    return lines
