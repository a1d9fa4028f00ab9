"""The IR: printing as Python, parsing back, verify, type rules."""

from __future__ import annotations

import ast

import pytest

from compiler.core.errors import OpTypeError, VerifyError
from compiler.core.ir import Graph, GraphBuilder, Node, Value, make_attrs
from compiler.core.types import DType, TensorType
from compiler.core.verify import verify
from tests.helpers import ir

TEXT = """
def block(x: f32[2,8], w: f32[8,4], b: f32[4]):
    v0: f32[2,8] = layer_norm(x, normalized_shape=(8,), eps=1e-05)
    v1: f32[2,4] = matmul(v0, w)
    v2: f32[2,4] = add(v1, b)
    v3: f32[()] = full(shape=(), value=0.5, dtype=f32)
    v4: f32[2,4] = mul(v2, v3)
    return (v4,)
"""


def test_print_is_python_and_round_trips() -> None:
    g = ir(TEXT)
    text = str(g)
    ast.parse(text)
    assert text == TEXT.lstrip("\n")
    assert str(ir(text)) == text


def test_print_renumbers_values_in_order() -> None:
    b = GraphBuilder("f", [Value("x", TensorType((3,), DType.f32))])
    y = b.add("exp", ["x"], name="some_long_name")
    z = b.add("neg", [y], name="another")
    text = str(b.build([z]))
    assert "v0: f32[3] = exp(x)" in text and "v1: f32[3] = neg(v0)" in text
    assert "some_long_name" not in text


def test_sources_print_as_comments() -> None:
    b = GraphBuilder("f", [Value("x", TensorType((3,), DType.f32))])
    y = b.add("exp", ["x"], source="h.0.mlp (model.py:12)")
    assert "= exp(x)  # h.0.mlp (model.py:12)" in str(b.build([y]))


def test_types_are_inferred_with_broadcasting() -> None:
    g = ir(TEXT)
    assert g.type_of(g.outputs[0]) == TensorType((2, 4), DType.f32)


@pytest.mark.parametrize(
    ("op", "inputs", "attrs", "message"),
    [
        ("add", [(2, 3), (4, 3)], {}, "do not broadcast"),
        ("matmul", [(2, 3), (4, 5)], {}, "inner sizes differ"),
        ("reshape", [(2, 3)], {"shape": (4, 2)}, "cannot view"),
        ("permute", [(2, 3)], {"dims": (0, 0)}, "not a permutation"),
        ("exp", [(2,), (2,)], {}, "takes 1 inputs, got 2"),
        ("sum", [(2, 3)], {}, "missing attribute 'dims'"),
        ("sum", [(2, 3)], {"dims": (0,), "axis": 1}, "unknown attribute"),
        ("slice", [(2, 3)], {"dim": 5, "end": 1}, "out of range"),
        ("nonexistent", [(2,)], {}, "unknown op"),
    ],
)
def test_type_rules_reject_bad_input(
    op: str, inputs: list[tuple[int, ...]], attrs: dict[str, object], message: str
) -> None:
    b = GraphBuilder("f", [Value(f"x{i}", TensorType(s, DType.f32)) for i, s in enumerate(inputs)])
    with pytest.raises(OpTypeError, match=message):
        b.add(op, [f"x{i}" for i in range(len(inputs))], attrs)


def test_binary_ops_need_one_dtype() -> None:
    b = GraphBuilder(
        "f", [Value("x", TensorType((2,), DType.f32)), Value("i", TensorType((2,), DType.i64))]
    )
    with pytest.raises(OpTypeError, match="share one dtype"):
        b.add("add", ["x", "i"])


def _graph(nodes: list[Node], outputs: list[str]) -> Graph:
    return Graph("f", (Value("x", TensorType((2,), DType.f32)),), tuple(nodes), tuple(outputs))


def _node(op: str, ins: tuple[str, ...], name: str, t: TensorType, **attrs: object) -> Node:
    return Node(op, ins, make_attrs(attrs), Value(name, t))


F2 = TensorType((2,), DType.f32)


def test_verify_accepts_good_graph() -> None:
    assert verify(ir(TEXT)) is not None


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (_graph([_node("exp", ("y",), "a", F2)], ["a"]), "used before it is defined"),
        (
            _graph([_node("exp", ("x",), "a", F2), _node("neg", ("x",), "a", F2)], ["a"]),
            "defined twice",
        ),
        (
            _graph([_node("exp", ("x",), "a", TensorType((3,), DType.f32))], ["a"]),
            "type rule gives f32\\[2\\]",
        ),
        (_graph([_node("exp", ("x",), "a", F2)], ["zzz"]), "output zzz is not defined"),
        (_graph([_node("cast", ("x",), "a", F2)], ["a"]), "missing attribute"),
    ],
)
def test_verify_names_the_broken_invariant(graph: Graph, message: str) -> None:
    with pytest.raises(VerifyError, match=message):
        verify(graph)
