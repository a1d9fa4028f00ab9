"""fuse_kernels: Graph -> Schedule, the fewest kernels the fusion kinds allow.

Nodes are visited in topological order and each compute node joins a kernel group of one of its
producers when that is legal, else starts a group; the groups form a networkx DiGraph that must
stay acyclic. Views and sources are free (Note [Views are index maps] in compiler/core/schedule.py).

    pointwise chains      add -> gelu -> mul: one kernel over the same domain
    epilogues             matmul/conv/attention/reduction -> pointwise ops of its output shape
                          (bias, activation, residual add, gate, scale, GroupNorm -> SiLU)
    prologues             pointwise -> reduction (residual add -> layer_norm writes both), and
                          pointwise -> matmul/conv/attention when only that anchor reads it
                          (RoPE or scaling before attention, SiLU before the time-embedding GEMM)
    horizontal GEMMs      matmuls reading the same input (Q/K/V, gate/up) share one kernel

Every refusal is recorded with its reason (`TILEFUSE_LOG=fusion` prints them):
`cannot fuse v7 (add) into k3: ...`.

Example:
    Before:
        v0: f32[4,16] = matmul(x, w)
        v1: f32[4,16] = add(v0, b)
        v2: f32[4,16] = gelu(v1, approximate='tanh')
        v3: f32[4,16] = layer_norm(v2, normalized_shape=(16,), eps=1e-05)
    After:
        k0_fused_matmul_add_gelu  matmul  in: x, w, b  out: v2
        k1_layer_norm  reduction  in: v2  out: v3
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import networkx as nx

from compiler.core.ir import Graph, Node, Value
from compiler.core.schedule import SOURCE_OPS, VIEW_OPS, KernelSpec, Schedule

log = logging.getLogger("tilefuse.fusion")

FREE_OPS = VIEW_OPS | SOURCE_OPS
ANCHOR_KINDS = {"matmul": "matmul", "conv2d": "conv2d", "sdpa": "attention"}
REDUCTION_OPS = frozenset(
    {
        "sum",
        "mean",
        "amax",
        "amin",
        "cumsum",
        "layer_norm",
        "rms_norm",
        "group_norm",
        "softmax",
        "log_softmax",
    }
)
# A pointwise group merged into a consumer with a larger domain is recomputed per broadcast
# element: allowed up to MAX_RECOMPUTE times, or beyond that while the extra work (elements x
# ops) stays under MAX_RECOMPUTE_WORK.
MAX_RECOMPUTE = 16
MAX_RECOMPUTE_WORK = 1 << 16


def node_kind(n: Node) -> str:
    if n.op in ANCHOR_KINDS:
        return ANCHOR_KINDS[n.op]
    if n.op in REDUCTION_OPS:
        return "reduction"
    return "pointwise"


@dataclass
class Group:
    id: int
    kind: str
    nodes: list[str] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)
    domain: tuple[int, ...] = ()
    epilogue_shapes: set[tuple[int, ...]] = field(default_factory=set)


class Fuser:
    def __init__(self, g: Graph) -> None:
        self.g = g
        self.producers = g.producers()
        self.users = g.users()
        self.order = {n.out.name: i for i, n in enumerate(g.nodes)}
        self.group_of: dict[str, int] = {}
        self.groups: dict[int, Group] = {}
        self.dag = nx.DiGraph()
        self.refusals: list[str] = []
        self._reader_cache: dict[str, set[str]] = {}
        self._next = 0

    # --- graph helpers

    def compute_sources(self, name: str) -> list[tuple[str | None, list[Node]]]:
        """The compute values (or graph inputs) `name` reads, each with the free chain between;
        a chain that starts at a source (full, arange, constant) has no value (None)."""
        n = self.producers.get(name)
        if n is None or n.op not in FREE_OPS:
            return [(name, [])]
        if not n.inputs:
            return [(None, [n])]
        out = []
        for i in n.inputs:
            out += [(src, [*chain, n]) for src, chain in self.compute_sources(i)]
        return out

    def dep_groups(self, n: Node) -> list[int]:
        found = []
        for i in n.inputs:
            for src, _ in self.compute_sources(i):
                gid = None if src is None else self.group_of.get(src)
                if gid is not None and gid not in found:
                    found.append(gid)
        return found

    def consumers_outside(self, gid: int) -> set[str]:
        """Compute nodes (and graph outputs, as "<output>") outside group gid that read it."""
        outside: set[str] = set()
        for name in self.groups[gid].nodes:
            outside |= self._readers(name) - set(self.groups[gid].nodes)
        return outside

    def _readers(self, name: str) -> set[str]:
        """Compute nodes reading `name` (through free chains); memoized: the graph is fixed."""
        if name in self._reader_cache:
            return self._reader_cache[name]
        readers: set[str] = set()
        if name in self.g.outputs:
            readers.add("<output>")
        for u in self.users[name]:
            if u.op in FREE_OPS:
                readers |= self._readers(u.out.name)
            else:
                readers.add(u.out.name)
        self._reader_cache[name] = readers
        return readers

    # --- groups

    def new_group(self, n: Node) -> int:
        gid, self._next = self._next, self._next + 1
        kind = node_kind(n)
        grp = Group(
            gid,
            kind,
            [n.out.name],
            [n.out.name] if kind != "pointwise" else [],
            n.out.type.shape,
            {n.out.type.shape},
        )
        self.groups[gid] = grp
        self.dag.add_node(gid)
        self.group_of[n.out.name] = gid
        for d in self.dep_groups(n):
            if d != gid:
                self.dag.add_edge(d, gid)
        return gid

    def creates_cycle(self, a: int, b: int) -> bool:
        """Merging a and b is a cycle if a path links them through a third group."""
        for src, dst in ((a, b), (b, a)):
            for s in self.dag.successors(src):
                if s != dst and nx.has_path(self.dag, s, dst):
                    return True
        return False

    def merge(self, keep: int, gone: int) -> None:
        g1, g2 = self.groups[keep], self.groups.pop(gone)
        g1.nodes = sorted(g1.nodes + g2.nodes, key=self.order.__getitem__)
        g1.anchors = sorted(g1.anchors + g2.anchors, key=self.order.__getitem__)
        g1.epilogue_shapes |= g2.epilogue_shapes if g2.kind == g1.kind else set()
        for name in g2.nodes:
            self.group_of[name] = keep
        for p in self.dag.predecessors(gone):
            if p != keep:
                self.dag.add_edge(p, keep)
        for s in self.dag.successors(gone):
            if s != keep:
                self.dag.add_edge(keep, s)
        self.dag.remove_node(gone)

    def refuse(self, n: Node, gid: int, reason: str) -> None:
        msg = (
            f"cannot fuse {n.out.name} ({n.op}) into group of {self.groups[gid].nodes[0]}: {reason}"
        )
        self.refusals.append(msg)
        log.debug(msg)

    # --- the decision

    def place(self, n: Node) -> None:
        kind = node_kind(n)
        deps = self.dep_groups(n)
        deps.sort(
            key=lambda d: (
                self.groups[d].kind == "pointwise",
                -self.order[self.groups[d].nodes[-1]],
            )
        )
        gid = self.new_group(n)
        for d in deps:
            if d not in self.groups or d == self.group_of[n.out.name]:
                continue
            gid = self.group_of[n.out.name]
            reason = self.why_not(n, kind, self.groups[gid], self.groups[d])
            if reason is None and self.creates_cycle(d, gid):
                reason = "the merge would create a cycle between kernels"
            if reason is not None:
                self.refuse(n, d, reason)
                continue
            anchored = self.groups[d].kind != "pointwise"
            self.merge(d, gid) if anchored else self.merge(gid, d)
            if not anchored and kind == "pointwise":
                grp = self.groups[self.group_of[n.out.name]]
                grp.domain, grp.epilogue_shapes = n.out.type.shape, {n.out.type.shape}
        if n.op == "matmul":
            self.fuse_horizontally(n)

    def fuse_horizontally(self, n: Node) -> None:
        """Join an earlier matmul group that reads the same left operand (Q/K/V, gate/up)."""
        for u in self.users[n.inputs[0]]:
            other = self.group_of.get(u.out.name)
            mine = self.group_of[n.out.name]
            if u is n or u.op != "matmul" or other is None or other == mine:
                continue
            grp = self.groups[other]
            if grp.kind != "matmul" or not self.same_lhs(n, grp):
                continue
            if other in self.dep_groups(n):
                self.refuse(n, other, "it reads that GEMM's output: not a sibling")
                continue
            if len(self.groups[mine].nodes) != 1:
                self.refuse(n, other, "it already has a prologue or epilogue")
            elif self.creates_cycle(other, mine):
                self.refuse(n, other, "the merge would create a cycle between kernels")
            else:
                self.merge(other, mine)
                return

    def why_not(self, n: Node, kind: str, mine: Group, other: Group) -> str | None:
        """Why `mine` (holding n, and maybe producers already merged into it) cannot take
        `other`, a group n reads; None when it can."""
        if kind == "pointwise" and mine.kind == "pointwise" and other.kind != "pointwise":
            # epilogue of an anchor or reduction
            if n.out.type.shape not in other.epilogue_shapes and not self.reshaped_only(n, other):
                return f"shape {list(n.out.type.shape)} is not the {other.kind} output shape"
            if mine.anchors:
                return "the kernel already has an anchor"
            return None
        if other.kind != "pointwise" and mine.kind != "pointwise":
            # (GEMMs sharing an input join in fuse_horizontally: siblings, never producers)
            return f"two anchors ({other.kind} and {mine.kind}) do not share a kernel"
        if other.kind == "pointwise" and mine.kind == "pointwise":
            if other.domain == n.out.type.shape:
                return None
            if self.consumers_outside(other.id) - set(mine.nodes):
                return f"domains differ ({list(other.domain)} vs {list(n.out.type.shape)})"
            ratio = _numel(n.out.type.shape) / max(_numel(other.domain), 1)
            extra = (ratio - 1) * _numel(other.domain) * len(other.nodes)
            if ratio > MAX_RECOMPUTE and extra > MAX_RECOMPUTE_WORK:
                return f"it would recompute {list(other.domain)} {ratio:.0f}x"
            return None
        # other is pointwise, mine is anchored: a prologue
        readers = self.consumers_outside(other.id) - set(mine.nodes)
        if readers and mine.kind in ("matmul", "conv2d", "attention"):
            return f"the prologue is also read by {sorted(readers)[:3]}"
        if readers and other.domain != self.g.type_of(n.inputs[0]).shape:
            # a reduction writing its prologue for other readers must iterate all of it
            return f"the prologue {list(other.domain)} is read elsewhere and is not the input"
        return None

    def reshaped_only(self, n: Node, other: Group) -> bool:
        """n reads `other` only through reshapes of the same element count (row-major order)."""
        hits = [
            (s, c)
            for i in n.inputs
            for s, c in self.compute_sources(i)
            if s is not None and self.group_of.get(s) == other.id
        ]
        return bool(hits) and all(
            all(v.op == "reshape" for v in chain)
            and _numel(n.out.type.shape) == _numel(self.g.type_of(src).shape)
            and self.g.type_of(src).shape in other.epilogue_shapes
            for src, chain in hits
        )

    def same_lhs(self, n: Node, other: Group) -> bool:
        lhs = n.inputs[0]
        return all(
            self.producers[a].op == "matmul" and self.producers[a].inputs[0] == lhs
            for a in other.anchors
        ) and len(other.nodes) == len(other.anchors)

    # --- output

    def run(self) -> Schedule:
        for n in self.g.nodes:
            # Free nodes are copied into the kernels that read them; one that is a graph output
            # is returned by the program as a view of a kernel output (or of an input).
            if n.op not in FREE_OPS:
                self.place(n)
        order = nx.lexicographical_topological_sort(
            self.dag, key=lambda gid: self.order[self.groups[gid].nodes[0]]
        )
        kernels = [self.kernel(i, self.groups[gid]) for i, gid in enumerate(order)]
        return Schedule(self.g, tuple(kernels), refusals=tuple(self.refusals))

    def kernel(self, index: int, grp: Group) -> KernelSpec:
        members = set(grp.nodes)
        body_names: set[str] = set(members)
        inputs: list[str] = []
        for name in grp.nodes:
            for i in self.producers[name].inputs:
                for src, chain in self.compute_sources(i):
                    body_names.update(c.out.name for c in chain)
                    if src is not None and src not in members and src not in inputs:
                        inputs.append(src)
        body = tuple(n for n in self.g.nodes if n.out.name in body_names)
        outputs = tuple(name for name in grp.nodes if self._readers(name) - members)
        values = self.g.values()
        anchor_nodes = [self.producers[a] for a in grp.anchors]
        return KernelSpec(
            name=_kernel_name(index, [self.producers[x] for x in grp.nodes], anchor_nodes),
            kind=grp.kind,
            inputs=tuple(Value(i, values[i].type) for i in inputs),
            body=body,
            outputs=outputs,
            domain=_domain(grp, anchor_nodes, self.g),
            reduction_axes=_reduction_axes(anchor_nodes[0], self.g)
            if grp.kind == "reduction"
            else (),
            anchors=tuple(grp.anchors),
        )


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _domain(grp: Group, anchors: list[Node], g: Graph) -> tuple[int, ...]:
    if grp.kind == "reduction":
        return g.type_of(anchors[0].inputs[0]).shape
    if anchors:
        return anchors[0].out.type.shape
    return grp.domain


def _reduction_axes(n: Node, g: Graph) -> tuple[int, ...]:
    rank = g.type_of(n.inputs[0]).rank
    if n.op in ("sum", "mean", "amax", "amin"):
        dims = n.attr("dims") or tuple(range(rank))
        return tuple(sorted(d % rank for d in dims))
    if n.op in ("cumsum", "softmax", "log_softmax"):
        return (n.attr("dim") % rank,)
    if n.op == "group_norm":
        return tuple(range(1, rank))
    return tuple(range(rank - len(n.attr("normalized_shape")), rank))


def _kernel_name(index: int, nodes: list[Node], anchors: list[Node]) -> str:
    ops: list[str] = []
    for a in anchors:
        count = sum(1 for b in anchors if b.op == a.op)
        name = a.op if count == 1 else f"{a.op}_x{count}"
        if name not in ops:
            ops.append(name)
    anchor_ops = {a.op for a in anchors}
    for n in nodes:
        if n.op not in ops and n.op not in anchor_ops and n.op != "cast":
            ops.append(n.op)
    ops = ops or [nodes[0].op]
    if len(nodes) == 1:
        return f"k{index}_{nodes[0].op}"
    return f"k{index}_fused_{'_'.join(ops[:4])}" + ("_etc" if len(ops) > 4 else "")


def fuse_kernels(g: Graph) -> Schedule:
    """Partition `g` into kernels (see the module docstring)."""
    return Fuser(g).run()
