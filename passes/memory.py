"""plan_memory: Schedule -> Schedule with a BufferPlan (liveness-based reuse of buffers).

Every kernel output that is not (a view of) a graph output lives in a planned buffer. Kernels
run in order; a buffer is free again once the last kernel reading its value has run, and the
next output takes the smallest free buffer that fits (growing the largest free one when none
fits, or adding a buffer). Backends allocate exactly these buffers.

Example: kernels k0 -> k1 -> k2 -> k3 in a chain, k3's output returned. k0 writes a into
buf0; k1 writes b into buf1 (a is still being read); k2 writes c into buf0 (a is dead); k3's
output is a graph output and gets fresh memory. Two buffers instead of three.

`plan_arena` (the llvm backend's) places the same values, and each kernel's scratch, at offsets
of one block of memory instead: values of different sizes share it, and scratch takes memory
only while its kernel runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from compiler.core.ir import Graph
from compiler.core.schedule import SOURCE_OPS, VIEW_OPS, BufferPlan, Schedule
from compiler.core.types import DType, TensorType

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
    """The buffer plan for `s` with each value's bytes from `nbytes(name, type)` (a backend
    may store one dtype in different element types per value): by liveness, each kernel
    output takes the smallest free buffer that fits, else the largest free one grown, else a
    new one. (The llvm backend places its values in an arena instead: `plan_arena`.)"""
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


@dataclass(frozen=True)
class Arena:
    """One block of `size` bytes holding every planned value and every kernel's scratch at a
    byte offset; two of them overlap only if no kernel needs both."""

    size: int
    offsets: tuple[tuple[str, int], ...]  # (value or scratch name, byte offset)

    def offset_of(self, name: str) -> int:
        return dict(self.offsets)[name]


def plan_arena(
    s: Schedule,
    nbytes: Callable[[str, TensorType], int],
    scratch: Mapping[int, Sequence[tuple[str, int]]] | None = None,
    align: int = 64,
    together: Sequence[range] = (),
) -> Arena:
    """The arena for `s`: each kernel output that is not (a view of) a graph output lives
    from the kernel writing it to the last kernel reading it, each `scratch[i]` block
    (name, bytes) only while kernel i runs; blocks are placed largest first, each at the
    lowest `align`ed offset clear of every placed block whose lifetime meets its own.

    Where `plan_buffers` reuses whole buffers, the arena shares memory between values of
    different sizes and with the scratch that kernels need for a moment (a Winograd
    convolution's transformed input): its size is the peak of what is live at once, near it.
    `together`: ranges of kernels that run interleaved (in row blocks, `backends.llvm.rows`):
    what one of them reads, writes or needs lives through all of them.

    Example: k0 writes a (4 KiB); k1 reads a and writes b (1 KiB); k2 reads b and needs
    4 KiB of scratch while it writes the output. a and the scratch are never needed at once:
    both at offset 0, b at 4096, 5 KiB in all (buffers and slots apart: 4 + 1 + 4 KiB)."""
    roots = output_roots(s.graph)
    last_use: dict[str, int] = {}
    for i, k in enumerate(s.kernels):
        for v in k.inputs:
            last_use[v.name] = i
    span = {j: (r.start, r.stop - 1) for r in together for j in r}
    blocks: list[tuple[int, int, int, str]] = []  # (bytes, first kernel, last kernel, name)
    for i, k in enumerate(s.kernels):
        first = span.get(i, (i, i))[0]
        for out in k.outputs:
            if out not in roots:
                need = max(nbytes(out, k.type_of(out)), 1)
                end = max(i, last_use.get(out, i))
                blocks.append((need, first, span.get(end, (end, end))[1], out))
        for name, need in (scratch or {}).get(i, ()):
            blocks.append((max(need, 1), first, span.get(i, (i, i))[1], name))
    blocks.sort(key=lambda b: (-b[0], b[1], b[3]))
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    offsets: list[tuple[str, int]] = []
    size = 0
    for need, first, last, name in blocks:
        taken = sorted((o, e) for o, e, f, lst in placed if f <= last and first <= lst)
        at = 0
        for o, e in taken:
            if at + need <= o:
                break
            at = max(at, -(-e // align) * align)
        placed.append((at, at + need, first, last))
        offsets.append((name, at))
        size = max(size, at + need)
    return Arena(size, tuple(offsets))


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
