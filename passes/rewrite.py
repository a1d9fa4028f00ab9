"""The one small matcher every rewrite uses.

A `Rule` is named in arrow notation and applies to nodes of one root op. Its `build(node, rw)`
looks at the node (inputs already rewritten) and its producers through the `Rewriter`, and
returns the name of a value that replaces the node's output, emitting new nodes with
`rw.emit(...)` if it needs them; or None to decline. Rule lists are module constants passed to
`apply_rules` explicitly; nothing registers at import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compiler.core.ir import Graph, GraphBuilder, Node
from compiler.core.types import TensorType

log = logging.getLogger("tilefuse.rewrite")


@dataclass(frozen=True)
class Rule:
    name: str
    op: str
    build: Callable[[Node, Rewriter], str | None]


class Rewriter:
    """The graph being rebuilt: producers and types of the values emitted so far."""

    def __init__(self, g: Graph) -> None:
        self.b = GraphBuilder(g.name, g.inputs, prefix="r")
        self.b.types.update((n.out.name, n.out.type) for n in g.nodes)  # keep names unique
        self.producers: dict[str, Node] = {}
        self.source = ""

    def producer(self, name: str) -> Node | None:
        return self.producers.get(name)

    def producer_op(self, name: str, op: str) -> Node | None:
        p = self.producers.get(name)
        return p if p is not None and p.op == op else None

    def type(self, name: str) -> TensorType:
        return self.b.types[name]

    def emit(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None) -> str:
        name = self.b.add(op, inputs, attrs, source=self.source)
        self.producers[name] = self.b.nodes[-1]
        return name

    def keep(self, node: Node) -> None:
        self.b.append(node)
        self.producers[node.out.name] = node


def apply_rules(g: Graph, rules: Sequence[Rule], *, max_rounds: int = 8) -> Graph:
    """Apply `rules` until none fires (each round is one walk in topological order)."""
    by_op: dict[str, list[Rule]] = {}
    for rule in rules:
        by_op.setdefault(rule.op, []).append(rule)
    current = g
    for _ in range(max_rounds):
        new, fired = _apply_once(current, by_op)
        if not fired:
            return current
        current = new
    return current


def _apply_once(g: Graph, by_op: Mapping[str, list[Rule]]) -> tuple[Graph, int]:
    rw = Rewriter(g)
    subst: dict[str, str] = {}
    fired = 0
    for node in g.nodes:
        ins = tuple(subst.get(i, i) for i in node.inputs)
        node = node if ins == node.inputs else Node(node.op, ins, node.attrs, node.out, node.source)
        rw.source = node.source
        rw.producers[node.out.name] = node  # rules may match from the root value itself
        for rule in by_op.get(node.op, ()):
            out = rule.build(node, rw)
            if out is not None:
                if rw.type(out) != node.out.type:
                    raise AssertionError(f"rule {rule.name!r} changed the type of {node.name}")
                log.debug("%s: %s", rule.name, node.out.name)
                del rw.producers[node.out.name]
                subst[node.out.name] = out
                fired += 1
                break
        else:
            rw.keep(node)
    outputs = tuple(subst.get(o, o) for o in g.outputs)
    return rw.b.build(outputs), fired
