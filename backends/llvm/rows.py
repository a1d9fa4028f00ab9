"""Row blocks: a run of row-local kernels executed a block of rows at a time.

Note [Row blocks]
A transformer feed-forward widens its rows and narrows them back: the `unet` example's GEGLU
projection writes [1, 1024, 2560] (10.5 MiB) that the next kernel reads once, and the planned
memory holds all of it (and the GEGLU product, 5 MiB) at the same moment. Every kernel of a
feed-forward is *row-local*: row r of its outputs depends on row r of its row inputs only
(matmuls against weights, elementwise ops with broadcast parameters, slices of the last dim,
norms over the last dim). So the driver runs such a *run* of kernels in a loop over blocks of
rows, each kernel compiled for one block (`blocked`): values the run makes and reads itself
(*internal*) then exist one block at a time, and external inputs and outputs are sliced by
rows (contiguous views). A run is the kernel writing an internal value of at least
`MIN_BYTES` through the last kernel reading it; its blocks are the fewest that divide the rows
and bring the largest internal value to `BLOCK_BYTES` or less. In the arena
(`passes.memory.plan_memory`) every value a run touches lives for the whole run, as its kernels
interleave.

    for r in range(0, 1024, 256):  # k20..k21 in 4 blocks of 256 rows (Note [Row blocks])
        k20_fused_matmul_add(g_t82[:, r : r + 256], ..., g_t85)    # [1, 256, 2560]: 2.6 MiB
        k21_fused_matmul_geglu_add(g_t85, ..., g_t81[:, r : r + 256], g_t93[:, r : r + 256])

The GEMMs' rows shrink, not their widths, and a block stays in cache: blocks cost no time
(the `unet` example ran 3 % faster in them; figures in docs/llvm_backend.md, Measurements).
Runs do not grow to neighbours that would make their outputs internal too: the layer norm
before and the 320-wide projection after ran slower in blocks (small GEMMs), for memory the
arena's peak (a Winograd convolution's scratch) did not need.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from compiler.core.ir import Node, Value
from compiler.core.ops import OPS
from compiler.core.schedule import KernelSpec, Schedule
from compiler.core.types import TensorType
from passes.memory import output_roots

MIN_BYTES = 4 << 20
"""An internal value this large starts a run."""
BLOCK_BYTES = 3 << 20
"""The most bytes of the largest internal value per block, when the rows allow it."""
MIN_BLOCK_ROWS = 16
ROW_OPS = frozenset({"geglu", "swiglu", "adaln_modulate"})  # composites that map rows to rows
NORMS = frozenset({"layer_norm", "rms_norm"})


@dataclass(frozen=True)
class RowRun:
    """Kernels `first`..`last` of a schedule, run `block` rows at a time of `rows` along
    `dim` of the row shape `lead` (the leading dims of every row value)."""

    first: int
    last: int
    lead: tuple[int, ...]
    dim: int
    block: int
    kernels: tuple[KernelSpec, ...]  # typed for one block
    internal: frozenset[str]  # values that exist one block at a time
    sliced: frozenset[str]  # external values read or written a block of rows at a time

    @property
    def rows(self) -> int:
        return self.lead[self.dim]

    @property
    def blocks(self) -> int:
        return self.rows // self.block

    def rows_of(self, expr: str) -> str:
        """`expr` (a tensor of row values) at the loop's block of rows `r`."""
        return f"{expr}[{':, ' * self.dim}r : r + {self.block}]"


def row_runs(s: Schedule, nbytes: dict[str, int]) -> list[RowRun]:
    """The runs of `s` to execute in row blocks (Note [Row blocks]); `nbytes`: the bytes of
    each kernel output."""
    roots = output_roots(s.graph)
    consumers: dict[str, set[int]] = {}
    for i, k in enumerate(s.kernels):
        for v in k.inputs:
            consumers.setdefault(v.name, set()).add(i)
    inputs = {v.name for v in s.graph.inputs}
    runs: list[RowRun] = []
    taken: set[int] = set()
    for i, k in enumerate(s.kernels):
        for o in k.outputs:
            t = k.type_of(o)
            if i in taken or o in roots or nbytes.get(o, 0) < MIN_BYTES or t.rank < 2:
                continue
            lead = t.shape[:-1]
            dims = [d for d, n in enumerate(lead) if n != 1]
            if len(dims) != 1 or o not in consumers:
                continue
            first, last = i, max(consumers[o])
            if taken & set(range(first, last + 1)):
                continue
            internal = _internal(s, first, last, consumers, roots)
            block = _block(lead[dims[0]], max(nbytes[v] for v in internal))
            if block is None:
                continue
            made = [blocked(s.kernels[j], lead, dims[0], block) for j in range(first, last + 1)]
            if any(m is None or m[1] & inputs for m in made):
                continue  # not row-local, or reads a graph input (the caller's layout) by rows
            kernels = tuple(m[0] for m in made if m is not None)
            sliced = {v for m in made if m is not None for v in m[1]} - internal
            runs.append(
                RowRun(first, last, lead, dims[0], block, kernels, frozenset(internal),
                       frozenset(sliced))
            )  # fmt: skip
            taken.update(range(first, last + 1))
    return runs


def _internal(
    s: Schedule, first: int, last: int, consumers: dict[str, set[int]], roots: set[str]
) -> set[str]:
    """Outputs of kernels first..last that only kernels first..last read."""
    inside = range(first, last + 1)
    return {
        o
        for j in inside
        for o in s.kernels[j].outputs
        if o not in roots and o in consumers and consumers[o] <= set(inside)
    }


def _block(rows: int, largest: int) -> int | None:
    """Rows per block: the fewest blocks dividing `rows` that bring `largest` bytes to
    BLOCK_BYTES, at least MIN_BLOCK_ROWS rows each; None when that is one block."""
    for count in range(2, rows // MIN_BLOCK_ROWS + 1):
        if rows % count == 0 and largest / count <= BLOCK_BYTES:
            return rows // count
    return None


def blocked(
    k: KernelSpec, lead: tuple[int, ...], dim: int, block: int
) -> tuple[KernelSpec, set[str]] | None:
    """`k` typed for `block` rows along `dim` of the row shape `lead` and the inputs it reads
    by rows, or None when `k` is not row-local over `lead`: every output a row value (shape
    `lead + (width,)`), every row value made from row values row by row (matmul against a
    non-row matrix, elementwise and row-mapping composites with broadcast parameters, a slice
    of the last dim, a norm over the last dim), nothing else reading a row value."""
    rank = len(lead) + 1

    def is_row(t: TensorType) -> bool:
        return t.rank == rank and t.shape[:-1] == lead

    def broadcasts(t: TensorType) -> bool:  # size 1 (or absent) along every row dim
        if t.rank > rank:
            return False
        pad = rank - t.rank
        return all(t.shape[d - pad] == 1 for d in range(len(lead)) if d >= pad)

    rows = {v.name for v in k.inputs if is_row(v.type)}
    types = {v.name: v.type for v in k.inputs} | {n.out.name: n.out.type for n in k.body}
    for n in k.body:
        row_in = [i for i in n.inputs if i in rows]
        out_row = is_row(n.out.type)
        if not row_in:
            if out_row:
                return None  # a row value made from no row value (a table per position)
            continue
        if not out_row or not _row_local(n, rows, types, broadcasts):
            return None
        rows.add(n.out.name)
    if any(o not in rows for o in k.outputs):
        return None

    def retype(t: TensorType) -> TensorType:
        if not is_row(t):
            return t
        shape = list(t.shape)
        shape[dim] = block
        return TensorType(tuple(shape), t.dtype)

    body = tuple(
        dataclasses.replace(n, out=Value(n.out.name, retype(n.out.type)))
        if n.out.name in rows
        else n
        for n in k.body
    )
    inputs = tuple(Value(v.name, retype(v.type)) if v.name in rows else v for v in k.inputs)
    domain = list(k.domain)
    if tuple(domain[: len(lead)]) == lead:
        domain[dim] = block
    made = dataclasses.replace(k, inputs=inputs, body=body, domain=tuple(domain))
    return made, {v.name for v in k.inputs if v.name in rows} | set(k.outputs)


def _row_local(
    n: Node,
    rows: set[str],
    types: dict[str, TensorType],
    broadcasts: Callable[[TensorType], bool],
) -> bool:
    """`n`, reading the row values `rows`, maps row r of them to row r of its output."""
    others = [i for i in n.inputs if i not in rows]
    if n.op == "matmul":
        return n.inputs[0] in rows and n.inputs[1] not in rows and types[n.inputs[1]].rank == 2
    if n.op == "slice":
        return n.attr("dim") == types[n.inputs[0]].rank - 1
    if n.op in NORMS:
        shape = tuple(n.attr("normalized_shape"))
        return (
            n.inputs[0] in rows
            and shape == types[n.inputs[0]].shape[-1:]
            and all(broadcasts(types[i]) for i in others)
        )
    if OPS[n.op].kind == "elementwise" or n.op in ROW_OPS:
        same = all(types[i].shape == n.out.type.shape for i in n.inputs if i in rows)
        return same and all(broadcasts(types[i]) for i in others)
    return False
