"""Index maps: which element of which input a value reads, for every view-like op.

A kernel evaluates each value at a multi-index of symbolic `Lin` expressions (`backends.index`);
views (reshape, permute, expand, slice), pads, concatenations, gathers and nearest upsampling map
that index to their inputs' (`IndexMaps.input_indices`). The llvm and Triton backends both
generate code this way: each subclasses `IndexMaps` and emits the values at the indices it
gives, memoized per scope (`_lookup`/`_cache`) so a value read twice at one index is computed
once. A subclass provides `types` (value name -> TensorType) and `scopes` (a stack of dicts).

Note [Index checks]
An embedding's ids and an index op's index tensors are read as data (`index_reads` in
`compiler.core.ops.structural` says which, and the range each may take): eager raises an
IndexError for one outside the dimension it indexes, and a compiled kernel must never read
outside a tensor. So every gather clamps its index (`IndexMaps._clamp`: memory stays safe) and
every backend checks the indices where it reads them, so indices computed inside the graph are
checked too, raising `IndexOutOfRangeError` with the op, the node and the source line:
- numpy: `ref.check_index` before the op, in the kernel function;
- llvm: a check pass over each index tensor at the start of the kernel, writing to status
  words the driver reads after the call (`backends/llvm/kernel.py`);
- Triton: where the kernel loads an index, a masked atomic exchange of (which check + 1, the
  index) into the kernel's two status words; the program function reads them all once per
  call (on a GPU, one wait for the kernels). Attention kernels cannot check: an index read in
  their prologue is refused.
"""

from __future__ import annotations

from typing import Any

from backends.index import Clamp, Lin, Load, reshape_index, scale_floor
from compiler.core.ir import Node
from compiler.core.types import TensorType

REDUCE_OPS = frozenset({"sum", "mean", "amax", "amin"})
Index = tuple[Lin, ...]


def broadcast(index: Index, shape: tuple[int, ...]) -> Index:
    """The index into an operand of `shape` broadcast against `index` (aligned right)."""
    lead = len(index) - len(shape)
    return tuple(Lin(0) if n == 1 else index[lead + k] for k, n in enumerate(shape))


class IndexMaps:
    types: dict[str, TensorType]
    scopes: list[dict[tuple, Any]]

    # ------------------------------------------------------------------ index maps

    def input_indices(self, node: Node, idx: Index) -> list[tuple[str, Index]]:
        """(input, index) pairs a node reads to produce its value at `idx`."""
        op, ins = node.op, node.inputs
        t = [self.types[i] for i in ins]
        if op == "reshape":
            return [(ins[0], reshape_index(idx, node.out.type.shape, t[0].shape))]
        if op == "permute":
            out = [Lin(0)] * len(idx)
            for i, d in enumerate(node.attr("dims")):
                out[d] = idx[i]
            return [(ins[0], tuple(out))]
        if op == "expand":
            return [(ins[0], broadcast(idx, t[0].shape))]
        if op == "slice":
            d = node.attr("dim") % len(idx)
            out = list(idx)
            out[d] = idx[d] * node.attr("step") + node.attr("start")
            return [(ins[0], tuple(out))]
        if op == "pad":
            clamped = tuple(
                self._clamp(i - lo, n)
                for i, (lo, _), n in zip(idx, node.attr("pads"), t[0].shape, strict=True)
            )
            return [(ins[0], clamped)]
        if op == "cat":
            return [(ins[p], j) for p, j in self._cat_pieces(node, idx)]
        if op == "embedding":
            row = self._clamp(Lin.of(Load(ins[1], idx[:-1])), t[0].shape[0])
            return [(ins[1], idx[:-1]), (ins[0], (row, idx[-1]))]
        if op == "index":
            bshape = node.out.type.shape[: len(node.out.type.shape) - (t[0].rank - len(ins) + 1)]
            lead, rest = idx[: len(bshape)], idx[len(bshape) :]
            rows, reads = [], []
            for k, name in enumerate(ins[1:]):
                at = broadcast(lead, t[k + 1].shape)
                rows.append(self._clamp(Lin.of(Load(name, at, t[0].shape[k])), t[0].shape[k]))
                reads.append((name, at))
            return [*reads, (ins[0], tuple(rows) + tuple(rest))]
        if op == "upsample_nearest2d":
            return [(ins[0], self._upsample_index(node, idx))]
        if op in ("full", "arange", "constant"):
            return []
        if op in REDUCE_OPS or op == "cumsum":
            raise AssertionError("reductions are handled by their stage")
        return [(i, broadcast(idx, ti.shape)) for i, ti in zip(ins, t, strict=True)]

    def _clamp(self, i: Lin, n: int) -> Lin:
        return i if i.within(0, n - 1) else Lin.of(Clamp(i, 0, n - 1))

    def _cat_pieces(self, node: Node, idx: Index) -> list[tuple[int, Index]]:
        d = node.attr("dim") % len(idx)
        lo, hi = idx[d].bounds()
        pieces, off = [], 0
        for p, name in enumerate(node.inputs):
            n = self.types[name].shape[d]
            if hi >= off and lo <= off + n - 1:
                j = list(idx)
                j[d] = self._clamp(idx[d] - off, n)
                pieces.append((p, tuple(j)))
            off += n
        return pieces

    def _upsample_index(self, node: Node, idx: Index) -> Index:
        x = self.types[node.inputs[0]]
        scales = node.attr("scales")
        out = list(idx)
        for axis, size in zip((2, 3), node.attr("size"), strict=True):
            n_in = x.shape[axis]
            step = n_in / size if scales is None else 1.0 / scales[axis - 2]
            k = round(1 / step) if step else 0
            if k >= 1 and k & (k - 1) == 0 and step * k == 1.0:
                out[axis] = idx[axis] // k
            elif step == 1.0:
                out[axis] = idx[axis]
            else:
                out[axis] = scale_floor(Lin.of(idx[axis]), step, n_in - 1)
        return tuple(out)

    # ------------------------------------------------------------------ memo per scope

    def _lookup(self, key: tuple) -> Any:
        for scope in reversed(self.scopes):
            if key in scope:
                return scope[key]
        return None

    def _cache(self, key: tuple, value: Any) -> Any:
        self.scopes[-1][key] = value
        return value
