"""plan_memory: Schedule -> Schedule with a BufferPlan (liveness-based reuse of buffers).

Every kernel output that is not (a view of) a graph output lives in a planned buffer. Kernels
run in order; a buffer is free again once the last kernel reading its value has run, and the
next output takes the smallest free buffer that fits (growing the largest free one when none
fits, or adding a buffer). Backends allocate exactly these buffers.

Example: kernels k0 -> k1 -> k2 -> k3 in a chain, k3's output returned. k0 writes a into
buf0; k1 writes b into buf1 (a is still being read); k2 writes c into buf0 (a is dead); k3's
output is a graph output and gets fresh memory. Two buffers instead of three.
"""

from __future__ import annotations

from collections.abc import Callable

from compiler.ir import DType, Graph, TensorType
from compiler.schedule import SOURCE_OPS, VIEW_OPS, BufferPlan, Schedule

Itemsize = Callable[[DType], int]


def output_roots(g: Graph) -> set[str]:
    """Values the graph outputs are (or are views of): they get fresh memory, never reused."""
    producers = g.producers()
    roots: set[str] = set()
    todo = list(g.outputs)
    while todo:
        name = todo.pop()
        roots.add(name)
        p = producers.get(name)
        if p is not None and p.op in VIEW_OPS:
            todo.extend(p.inputs)
    return roots


def plan_buffers(s: Schedule, itemsize: Itemsize = lambda d: d.itemsize) -> BufferPlan:
    """The buffer plan for `s` with element sizes from `itemsize` (backends store some dtypes
    wider: the NumPy backend keeps bf16 in float32)."""
    return plan_buffers_by_value(s, lambda _, t: t.numel * itemsize(t.dtype))


def plan_buffers_by_value(s: Schedule, nbytes: Callable[[str, TensorType], int]) -> BufferPlan:
    """The buffer plan for `s` with each value's bytes from `nbytes(name, type)` (the llvm
    backend stores one dtype in different element types per value): by liveness, each kernel
    output takes the smallest free buffer that fits, else the largest free one grown, else a
    new one."""
    roots = output_roots(s.graph)
    last_use: dict[str, int] = {}
    for i, k in enumerate(s.kernels):
        for v in k.inputs:
            last_use[v.name] = i
    sizes: list[int] = []
    free: list[int] = []
    live: dict[str, int] = {}  # value -> buffer
    assignment: list[tuple[str, int]] = []
    for i, k in enumerate(s.kernels):
        for value, buf in list(live.items()):
            if last_use.get(value, -1) < i:
                free.append(buf)
                del live[value]
        for out in k.outputs:
            if out in roots:
                continue
            need = max(nbytes(out, k.type_of(out)), 1)
            buf = _take(free, sizes, need)
            live[out] = buf
            assignment.append((out, buf))
    return BufferPlan(tuple(sizes), tuple(assignment))


def _take(free: list[int], sizes: list[int], need: int) -> int:
    fitting = [b for b in free if sizes[b] >= need]
    if fitting:
        buf = min(fitting, key=lambda b: (sizes[b], b))
    elif free:
        buf = max(free, key=lambda b: (sizes[b], -b))
        sizes[buf] = need
    else:
        sizes.append(need)
        return len(sizes) - 1
    free.remove(buf)
    return buf


def plan_memory(s: Schedule) -> Schedule:
    """Attach the buffer plan in the IR's own element sizes (what a GPU backend allocates)."""
    return s.with_plan(plan_buffers(s))


def eager_peak_bytes(g: Graph) -> int:
    """Peak bytes of live intermediates when eager PyTorch runs `g` op by op: every op but a
    view allocates its output, freed after its last use; graph inputs and outputs not counted."""
    users = g.users()
    roots = output_roots(g)
    last: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        for inp in n.inputs:
            last[inp] = i
    live: dict[str, int] = {}
    peak = current = 0
    for i, n in enumerate(g.nodes):
        if n.op not in VIEW_OPS and n.out.name not in roots:
            size = n.out.type.nbytes if n.op not in SOURCE_OPS or n.out.type.rank else 0
            live[n.out.name] = size
            current += size
            peak = max(peak, current)
        for inp in set(n.inputs):
            if last.get(inp) == i and inp in live and not _viewed_later(inp, users, last, i):
                current -= live.pop(inp)
    return peak


def _viewed_later(name: str, users: dict, last: dict[str, int], i: int) -> bool:
    """A view keeps its base alive: eager frees the base only when no view of it is used."""
    for u in users.get(name, []):
        if u.op in VIEW_OPS and (
            last.get(u.out.name, -1) > i or _viewed_later(u.out.name, users, last, i)
        ):
            return True
    return False
