"""Capture behaviour: weights as inputs, functions and kwargs, output structures, ops that
disappear, error messages, and the source lines carried into the IR.

Lines the tests point at end in a `# @name` marker comment; `_line_of` finds them, so the
expected line numbers follow the code when it moves.
"""

from __future__ import annotations

import re
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree

import compiler
from compiler.frontend.capture import export_program

THIS_FILE = __file__  # the path torch records in stack traces (the code object's filename)
THIS_NAME = Path(__file__).name


def _line_of(marker: str) -> int:
    """The line number of the one line in this file that ends with `# @marker`."""
    lines = Path(__file__).read_text().splitlines()
    hits = [i for i, line in enumerate(lines, 1) if line.rstrip().endswith(f"# @{marker}")]
    assert len(hits) == 1, f"marker @{marker} found on lines {hits}"
    return hits[0]


def _compile(model: Any, *args: Any, **kwargs: Any) -> compiler.Compiled:
    return compiler.compile(model, args, kwargs or None, backend="numpy")


def _eager(model: Any, *args: Any, **kwargs: Any) -> Any:
    with torch.no_grad():
        return model(*args, **kwargs)


def _assert_same_tree(out: Any, eager: Any, atol: float = 1e-5) -> None:
    """Same pytree structure (container types, keys) and leaves equal to eager's."""
    out_leaves, out_spec = pytree.tree_flatten(out)
    eager_leaves, eager_spec = pytree.tree_flatten(eager)
    assert out_spec == eager_spec, f"structure differs:\n{out_spec}\nvs eager\n{eager_spec}"
    for o, e in zip(out_leaves, eager_leaves, strict=True):
        if isinstance(e, torch.Tensor):
            assert isinstance(o, torch.Tensor)
            torch.testing.assert_close(o, e, atol=atol, rtol=atol)
        else:
            assert type(o) is type(e)
            assert o == e


# ----------------------------------------------------------------------------- models


class LinearNorm(nn.Module):
    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x)) * self.scale


class DropoutModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.drop(self.fc(x)).clone().contiguous().to(torch.float32)
        return y.to(x.dtype) * 2


class Cumprod(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc(x)
        return torch.cumprod(y, dim=1) * 2  # @cumprod


class Sort(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sort(x * 3, dim=1).values  # @sort


class MaxIndices(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.max(x, dim=1).indices  # @max-indices


class MaxValues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.max(x, dim=1).values


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).relu()  # @block-fc


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.norm = nn.LayerNorm(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(x)
        return self.norm(h)  # @net-norm


@pytest.fixture
def x8() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 8)


# ----------------------------------------------------------------------------- weights are inputs


def test_parameter_change_in_place_is_seen_without_recompiling(x8: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = LinearNorm().eval()
    c = _compile(m, x8)
    before = c(x8)
    torch.testing.assert_close(before, _eager(m, x8), atol=1e-5, rtol=1e-5)

    with torch.no_grad():
        m.fc.weight[0].add_(1.0)  # one output row: LayerNorm would cancel a uniform shift
    after = c(x8)
    torch.testing.assert_close(after, _eager(m, x8), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after, before, atol=1e-3)
    assert c.stats["compiles"] == 1


def test_buffer_change_in_place_is_seen_without_recompiling(x8: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = LinearNorm().eval()
    c = _compile(m, x8)
    before = c(x8)

    with torch.no_grad():
        m.scale.mul_(-2.0)
    after = c(x8)
    torch.testing.assert_close(after, _eager(m, x8), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(after, before, atol=1e-3)
    assert c.stats["compiles"] == 1


def test_parameters_and_buffers_are_graph_inputs(x8: torch.Tensor) -> None:
    torch.manual_seed(0)
    c = _compile(LinearNorm().eval(), x8)
    names = [v.name for v in c.graph.inputs]
    assert names == ["fc_weight", "fc_bias", "norm_weight", "norm_bias", "scale", "x"]
    assert "constant" not in c.graph.op_counts()


# ----------------------------------------------------------------------------- functions, kwargs


def test_plain_function_compiles() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 4)

    def fn(a: torch.Tensor) -> torch.Tensor:
        return torch.tanh(a) * 2 + 1

    c = _compile(fn, x)
    assert c.graph.name == "fn"
    torch.testing.assert_close(c(x), fn(x), atol=1e-6, rtol=1e-6)


def test_kwargs_are_inputs() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(2, 3), torch.randn(2, 3)

    def fn(a: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return a * 2 + y

    c = compiler.compile(fn, (x,), {"y": y}, backend="numpy")
    torch.testing.assert_close(c(x, y=y), fn(x, y=y), atol=1e-6, rtol=1e-6)
    y2 = torch.randn(2, 3)
    torch.testing.assert_close(c(x, y=y2), fn(x, y=y2), atol=1e-6, rtol=1e-6)


def test_keyword_only_arguments_bind_by_name() -> None:
    """kwargs given in another order than the signature still bind to the right inputs."""
    torch.manual_seed(0)
    x, a, b = torch.randn(2, 3), torch.randn(3), torch.randn(2, 1)

    def fn(x: torch.Tensor, *, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return x * a - b

    c = compiler.compile(fn, (x,), {"b": b, "a": a}, backend="numpy")
    torch.testing.assert_close(c(x, b=b, a=a), fn(x, a=a, b=b), atol=1e-6, rtol=1e-6)


def test_kwargs_order_does_not_matter() -> None:
    torch.manual_seed(0)
    x, a, b = torch.randn(2, 3), torch.randn(2, 3), torch.randn(2, 3)

    def fn(x: torch.Tensor, *, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return x * a - b

    c = compiler.compile(fn, (x,), {"a": a, "b": b}, backend="numpy")
    torch.testing.assert_close(c(x, b=b, a=a), fn(x, a=a, b=b), atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------------------- output structures

Pair = namedtuple("Pair", ["first", "second"])


@pytest.mark.parametrize(
    "fn",
    [
        pytest.param(lambda x: x * 2, id="tensor"),
        pytest.param(lambda x: (x * 2, x + 1), id="tuple"),
        pytest.param(lambda x: [x * 2, x + 1], id="list"),
        pytest.param(lambda x: {"b": x * 2, "a": x + 1}, id="dict"),
        pytest.param(lambda x: {"h": (x * 2, [x + 1, {"z": x.exp()}])}, id="nested"),
        pytest.param(lambda x: (x * 2, 3), id="constant-int"),
        pytest.param(lambda x: (x * 2, None, "tag", 1.5), id="constants-mixed"),
        pytest.param(lambda x: (x.sum(), x.shape[0]), id="shape-int"),
        pytest.param(lambda x: Pair(x * 2, x - 1), id="namedtuple"),
        pytest.param(lambda x: (x, x), id="same-input-twice"),
    ],
)
def test_output_structure_is_preserved(fn: Any) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    _assert_same_tree(_compile(fn, x)(x), fn(x))


def test_dict_output_keys_and_types() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    out = _compile(lambda x: {"b": x * 2, "a": [x + 1, 7]}, x)(x)
    assert type(out) is dict
    assert list(out) == ["b", "a"]
    assert isinstance(out["b"], torch.Tensor)
    assert type(out["a"]) is list
    assert out["a"][1] == 7
    torch.testing.assert_close(out["a"][0], x + 1)


def test_constant_output_leaf_is_returned_as_is() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    out = _compile(lambda x: (x * 2, 3), x)(x)
    assert type(out) is tuple
    assert len(out) == 2
    assert out[1] == 3
    assert type(out[1]) is int
    torch.testing.assert_close(out[0], x * 2)


def test_integer_and_bool_outputs_keep_their_dtypes() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3)

    def fn(a: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return a > 0, (a * 3).long(), a.to(torch.int32)

    out = _compile(fn, x)(x)
    assert [o.dtype for o in out] == [torch.bool, torch.int64, torch.int32]
    for o, e in zip(out, fn(x), strict=True):
        assert torch.equal(o, e)


def test_huggingface_model_output() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, n_positions=64, vocab_size=50, use_cache=False
    )
    model = transformers.GPT2Model(config).eval()
    ids = torch.randint(0, 50, (1, 8))
    eager = _eager(model, ids)
    out = _compile(model, ids)(ids)

    assert type(out) is type(eager)
    assert isinstance(out, transformers.utils.ModelOutput)
    assert list(out.keys()) == list(eager.keys()) == ["last_hidden_state"]
    assert out.last_hidden_state.shape == (1, 8, 32)
    assert out[0] is out.last_hidden_state
    assert out["last_hidden_state"] is out.last_hidden_state
    torch.testing.assert_close(out.last_hidden_state, eager.last_hidden_state, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- ops that disappear


def test_metadata_asserts_dropout_and_copies_disappear(x8: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = DropoutModel().eval()
    aten_ops = {
        str(n.target) for n in export_program(m, (x8,), {}).graph.nodes if n.op == "call_function"
    }
    # The ATen program has them (else this test would prove nothing); the IR does not.
    assert "aten._assert_tensor_metadata.default" in aten_ops
    assert "aten.clone.default" in aten_ops

    c = _compile(m, x8)
    gone = {"_assert_tensor_metadata", "dropout", "native_dropout", "clone", "contiguous"}
    gone |= {"cast", "alias", "detach"}
    for graph in (c.captured.graph, c.graph):
        assert gone.isdisjoint(graph.op_counts()), graph.op_counts()
    torch.testing.assert_close(c(x8), _eager(m, x8), atol=1e-5, rtol=1e-5)


def test_dropout_in_eval_matches_eager(x8: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5), nn.GELU()).eval()
    c = _compile(m, x8)
    torch.testing.assert_close(c(x8), _eager(m, x8), atol=1e-5, rtol=1e-5)


def test_dropout_in_train_mode_is_rejected(x8: torch.Tensor) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)).train()
    with pytest.raises(compiler.UnsupportedOpError, match="eval") as e:
        _compile(m, x8)
    assert "dropout" in str(e.value)
    assert "To add it" not in str(e.value)  # the op exists; the advice is to call eval()


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("model_cls", "aten", "node", "marker"),
    [
        (Cumprod, "aten.cumprod", "cumprod", "cumprod"),
        (Sort, "aten.sort", "sort", "sort"),
    ],
)
def test_unsupported_op_error_names_op_node_and_source(
    model_cls: type[nn.Module], aten: str, node: str, marker: str
) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    with pytest.raises(compiler.UnsupportedOpError) as e:
        _compile(model_cls().eval(), x)
    msg = str(e.value)
    assert aten in msg
    assert e.value.node == node
    assert re.search(rf"node:\s+{node}\b", msg), msg
    assert f"{THIS_FILE}:{_line_of(marker)}" in msg
    assert "compiler/core/ops/" in msg
    assert "compiler/frontend/lowering.py" in msg


def test_unsupported_op_error_is_a_tilefuse_error() -> None:
    x = torch.randn(2, 4)
    with pytest.raises(compiler.TilefuseError):
        _compile(Sort(), x)


def test_unsupported_op_in_plain_function_names_the_user_line() -> None:
    def fn(x: torch.Tensor) -> torch.Tensor:
        y = x + 1
        return torch.cumprod(y, dim=0)  # @fn-cumprod

    with pytest.raises(compiler.UnsupportedOpError) as e:
        _compile(fn, torch.randn(3))
    msg = str(e.value)
    assert "aten.cumprod" in msg
    assert "compiler/frontend/capture.py" not in msg
    assert f"{THIS_FILE}:{_line_of('fn-cumprod')}" in msg


def test_secondary_output_of_multi_output_op_is_a_clear_error() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    with pytest.raises(compiler.UnsupportedOpError) as e:
        _compile(MaxIndices(), x)
    msg = str(e.value)
    assert "aten.max.dim" in msg
    assert "indices" in msg
    assert f"{THIS_FILE}:{_line_of('max-indices')}" in msg


def test_primary_output_of_multi_output_op_works() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4)
    m = MaxValues()
    torch.testing.assert_close(_compile(m, x)(x), m(x))


def _data_dependent(x: torch.Tensor) -> torch.Tensor:
    if x.sum() > 0:
        return x * 2
    return -x


def test_export_failure_is_a_capture_error() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    with pytest.raises(compiler.CaptureError) as e:
        _compile(_data_dependent, x)
    msg = str(e.value)
    assert "torch.export could not capture _data_dependent" in msg
    assert "data-dependent" in msg  # torch's own reason
    assert "hint:" in msg
    assert e.value.__cause__ is not None


# ----------------------------------------------------------------------------- source lines


def test_ir_comments_carry_module_path_and_source_line() -> None:
    torch.manual_seed(0)
    c = _compile(Net().eval(), torch.randn(2, 4))
    text = str(c.graph)
    fc = f"# block.fc ({THIS_NAME}:{_line_of('block-fc')})"
    norm = f"# norm ({THIS_NAME}:{_line_of('net-norm')})"
    assert fc in text, text
    assert norm in text, text
    matmul = next(line for line in text.splitlines() if "= matmul(" in line)
    assert matmul.endswith(fc)
    layer_norm = next(line for line in text.splitlines() if "= layer_norm(" in line)
    assert layer_norm.endswith(norm)
