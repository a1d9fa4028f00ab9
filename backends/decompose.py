"""Composites with a row structure, decomposed into primitives for backends that generate loops.

Norms, softmax and RoPE become reductions (`sum`, `amax`, `mean`) and elementwise ops over the
same values, following the NumPy references in `compiler/core/ops/ref.py` (biased variance,
`(x - mean) * (1 / sqrt(var + eps))`, a max that is not finite shifting by 0). Elementwise
composites (`gelu`, `silu`, `swiglu`, `geglu`, `adaln_modulate`) stay whole: a code generator
writes them as one formula. The final node of a decomposition keeps the composite's name, so
the kernel's outputs still name it:

    t5 = layer_norm(t4, w, b, normalized_shape=(512,), eps=1e-05)
    ->  t5_mean = mean(t4, dims=(2,), keepdim=True)
        t5_d = sub(t4, t5_mean); ...; t5 = add(t5_scaled, b)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from compiler.core.ir import GraphBuilder, Node, Value

DECOMPOSED = frozenset({"layer_norm", "rms_norm", "group_norm", "softmax", "log_softmax", "rope"})


def decompose(inputs: Iterable[Value], body: Iterable[Node]) -> tuple[Node, ...]:
    """`body` with every op in DECOMPOSED replaced by primitives (others kept as they are)."""
    b = GraphBuilder("kernel", inputs, prefix="_d")
    for n in body:
        if n.op not in DECOMPOSED:
            b.append(n)
            continue
        _Expander(b, n).run()
    return tuple(b.nodes)


class _Expander:
    def __init__(self, b: GraphBuilder, node: Node) -> None:
        self.b, self.node, self.count = b, node, 0

    def add(self, op: str, inputs: list[str], last: bool = False, **attrs: object) -> str:
        self.count += 1
        name = self.node.out.name if last else f"{self.node.out.name}_{op}{self.count}"
        return self.b.add(op, inputs, attrs, name=name, source=self.node.source)

    def scalar(self, value: float) -> str:
        return self.add("full", [], shape=(), value=value, dtype=self.node.out.type.dtype)

    def run(self) -> None:
        getattr(self, self.node.op)()

    # ---- norms

    def _normalize(self, x: str, axes: tuple[int, ...], eps: float, center: bool) -> str:
        if center:
            mean = self.add("mean", [x], dims=axes, keepdim=True)
            x = self.add("sub", [x, mean])
        var = self.add("mean", [self.add("mul", [x, x])], dims=axes, keepdim=True)
        std = self.add("sqrt", [self.add("add", [var, self.scalar(eps)])])
        return self.add("mul", [x, self.add("reciprocal", [std])])

    def _affine(self, y: str, params: list[str]) -> None:
        for i, (op, p) in enumerate(zip(("mul", "add"), params, strict=False)):
            y = self.add(op, [y, p], last=i == len(params) - 1)
        if not params:
            self.add("reshape", [y], last=True, shape=self.node.out.type.shape)

    def _layer(self, center: bool) -> None:
        x, *params = self.node.inputs
        rank = self.b.type(x).rank
        k = len(self.node.attr("normalized_shape"))
        axes = tuple(range(rank - k, rank))
        self._affine(self._normalize(x, axes, self.node.attr("eps"), center), params)

    def layer_norm(self) -> None:
        self._layer(center=True)

    def rms_norm(self) -> None:
        self._layer(center=False)

    def group_norm(self) -> None:
        x, *params = self.node.inputs
        shape = self.b.type(x).shape
        groups = self.node.attr("groups")
        g = self.add("reshape", [x], shape=(shape[0], groups, math.prod(shape[1:]) // groups))
        y = self._normalize(g, (2,), self.node.attr("eps"), center=True)
        y = self.add("reshape", [y], shape=shape)
        per_channel = (shape[1],) + (1,) * (len(shape) - 2)
        params = [self.add("reshape", [p], shape=per_channel) for p in params]
        self._affine(y, params)

    # ---- softmax

    def _shifted(self) -> tuple[str, str, int]:
        (x,) = self.node.inputs
        dim = self.node.attr("dim") % self.b.type(x).rank
        m = self.add("amax", [x], dims=(dim,), keepdim=True)
        finite = self.add("lt", [self.add("abs", [m]), self.scalar(math.inf)])
        m = self.add("where", [finite, m, self.scalar(0.0)])
        return self.add("sub", [x, m]), x, dim

    def softmax(self) -> None:
        shifted, _, dim = self._shifted()
        e = self.add("exp", [shifted])
        s = self.add("sum", [e], dims=(dim,), keepdim=True)
        self.add("div", [e, s], last=True)

    def log_softmax(self) -> None:
        shifted, _, dim = self._shifted()
        s = self.add("sum", [self.add("exp", [shifted])], dims=(dim,), keepdim=True)
        self.add("sub", [shifted, self.add("log", [s])], last=True)

    # ---- rotary embedding

    def rope(self) -> None:
        x, cos, sin = self.node.inputs
        t = self.b.type(x)
        d, half = t.rank - 1, t.shape[-1] // 2
        hi = self.add("slice", [x], dim=d, start=half, end=t.shape[-1], step=1)
        lo = self.add("slice", [x], dim=d, start=0, end=half, step=1)
        rotated = self.add("cat", [self.add("neg", [hi]), lo], dim=d)
        a = self.add("mul", [x, cos])
        self.add("add", [a, self.add("mul", [rotated, sin])], last=True)


__all__ = ["DECOMPOSED", "decompose"]
