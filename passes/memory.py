"""plan_memory: where every planned value and every kernel's scratch lives, in one arena.

A program's backend declares its storage policy as a `MemoryRequest`: the bytes each planned
value takes as the program stores it (the NumPy backend keeps every float in the compute type,
the llvm backend some bf16/f16 values in 16 bits), the scratch each kernel needs while it runs,
and ranges of kernels that run interleaved (the llvm backend's row blocks). `plan_memory` is
the one planner: it places all of it at byte offsets of one block of memory (an `Arena`), and
the backend renders its program over that arena. The pipeline calls it once for each program,
with that program's policy (the compiled program, another backend's, the per-kernel program
bisection runs).

Every kernel output that is not (a view of) a graph output is planned: it lives from the kernel
writing it to the last kernel reading it. Graph outputs get fresh memory on every call.

Example: kernels k0 -> k1 -> k2 -> k3 in a chain of 128-byte values, k3's output returned. k0
writes a at offset 0; k1 writes b at 128 (a is still being read); k2 writes c at 0 (a is
dead); k3's output is a graph output, not planned. 256 bytes instead of 384.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from compiler.core.ir import Graph
from compiler.core.schedule import SOURCE_OPS, VIEW_OPS, Schedule
from compiler.core.types import DType, TensorType


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


def planned_values(s: Schedule) -> list[tuple[str, TensorType]]:
    """The values `plan_memory` places, in kernel order: every kernel output that is not (a
    view of) a graph output."""
    roots = output_roots(s.graph)
    return [(o, k.type_of(o)) for k in s.kernels for o in k.outputs if o not in roots]


@dataclass(frozen=True)
class MemoryRequest:
    """A program's storage policy, as the planner needs it. `values`: (planned value, bytes as
    the program stores it), for every value of `planned_values`. `scratch`: (kernel index,
    block name, bytes), memory a kernel needs only while it runs. `together`: (first, last)
    ranges of kernels that run interleaved: what one of them reads, writes or needs lives
    through all of them. `align`: every block's offset is a multiple of it."""

    values: tuple[tuple[str, int], ...]
    scratch: tuple[tuple[int, str, int], ...] = ()
    together: tuple[tuple[int, int], ...] = ()
    align: int = 64

    def __str__(self) -> str:
        lines = [
            f"memory request: {len(self.values)} values, {len(self.scratch)} scratch blocks, "
            f"{sum(n for _, n in self.values) + sum(n for _, _, n in self.scratch)} bytes "
            f"apart, aligned to {self.align}"
        ]
        lines += [f"  {name:<24} {n:>10}" for name, n in self.values]
        lines += [f"  k{i:<3} {name:<19} {n:>10}" for i, name, n in self.scratch]
        lines += [f"  kernels {first}..{last} run interleaved" for first, last in self.together]
        return "\n".join(lines)

    @staticmethod
    def of(
        s: Schedule,
        nbytes: Callable[[str, TensorType], int],
        scratch: Mapping[int, Sequence[tuple[str, int]]] | None = None,
        together: Sequence[range] = (),
    ) -> MemoryRequest:
        """The request for `s` whose values take `nbytes(name, type)` bytes; `scratch[i]`:
        kernel i's (block, bytes); `together`: ranges of kernel indices."""
        return MemoryRequest(
            tuple((o, nbytes(o, t)) for o, t in planned_values(s)),
            tuple(
                (i, name, need)
                for i, blocks in sorted((scratch or {}).items())
                for name, need in blocks
            ),
            tuple((r.start, r.stop - 1) for r in together),
        )


def stored_in(
    s: Schedule, itemsize: Callable[[DType], int] = lambda d: d.itemsize
) -> MemoryRequest:
    """The request of a program that stores each value's elements in `itemsize(dtype)` bytes
    and needs no scratch (by default each in its IR dtype, as a GPU program does: what
    `explain` prices)."""
    return MemoryRequest.of(s, lambda _, t: t.numel * itemsize(t.dtype))


@dataclass(frozen=True)
class Arena:
    """One block of `size` bytes holding every planned value and every kernel's scratch:
    `blocks` are (value or scratch name, byte offset, bytes); two of them overlap only if no
    kernel needs both."""

    size: int
    blocks: tuple[tuple[str, int, int], ...]

    @property
    def offsets(self) -> dict[str, int]:
        return {name: at for name, at, _ in self.blocks}

    def offset_of(self, name: str) -> int:
        return self.offsets[name]

    def __str__(self) -> str:
        lines = [f"arena: {self.size} bytes, {len(self.blocks)} blocks"]
        for name, at, n in sorted(self.blocks, key=lambda b: (b[1], b[0])):
            lines.append(f"  {at:>10} +{n:<10} {name}")
        return "\n".join(lines)


def plan_memory(s: Schedule, request: MemoryRequest) -> Arena:
    """The arena for `s` under `request`: each planned value lives from the kernel writing it
    to the last kernel reading it, each scratch block only while its kernel runs; blocks are
    placed largest first, each at the lowest aligned offset clear of every placed block whose
    lifetime meets its own. Values of different sizes share memory, and share it with the
    scratch kernels need for a moment (a Winograd convolution's transformed input): the size
    is the peak of what is live at once, or near it.

    Example: k0 writes a (4 KiB); k1 reads a and writes b (1 KiB); k2 reads b and needs 4 KiB
    of scratch while it writes the output. a and the scratch are never needed at once: both at
    offset 0, b at 4096, 5 KiB in all (each in its own buffer: 4 + 1 + 4 KiB)."""
    nbytes = dict(request.values)
    planned = planned_values(s)
    if set(nbytes) != {o for o, _ in planned}:
        missing = sorted({o for o, _ in planned} - set(nbytes))
        extra = sorted(set(nbytes) - {o for o, _ in planned})
        raise ValueError(
            f"memory request for {s.graph.name} does not match its planned values "
            f"(missing {missing[:5]}, not planned {extra[:5]})"
        )
    last_use: dict[str, int] = {}
    for i, k in enumerate(s.kernels):
        for v in k.inputs:
            last_use[v.name] = i
    span = {j: (first, last) for first, last in request.together for j in range(first, last + 1)}
    writer = {o: i for i, k in enumerate(s.kernels) for o in k.outputs}
    blocks: list[tuple[int, int, int, str]] = []  # (bytes, first kernel, last kernel, name)
    for o, _ in planned:
        i = writer[o]
        end = max(i, last_use.get(o, i))
        blocks.append((max(nbytes[o], 1), span.get(i, (i, i))[0], span.get(end, (end, end))[1], o))
    for i, name, need in request.scratch:
        first, last = span.get(i, (i, i))
        blocks.append((max(need, 1), first, last, name))
    blocks.sort(key=lambda b: (-b[0], b[1], b[3]))
    align = request.align
    placed: list[tuple[int, int, int, int]] = []  # (offset, end, first, last)
    out: list[tuple[str, int, int]] = []
    size = 0
    for need, first, last, name in blocks:
        taken = sorted((o, e) for o, e, f, lst in placed if f <= last and first <= lst)
        at = 0
        for o, e in taken:
            if at + need <= o:
                break
            at = max(at, -(-e // align) * align)
        placed.append((at, at + need, first, last))
        out.append((name, at, need))
        size = max(size, at + need)
    return Arena(size, tuple(out))


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
