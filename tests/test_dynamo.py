"""`torch.compile(model, backend="tilefuse")`: the entry point, parity, weights read at call
time, dynamic sizes, graph breaks and the refusals.

Repro: pytest tests/test_dynamo.py -k dynamic
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest
import torch
from torch import nn

import compiler.dynamo
from compiler.core.errors import TilefuseError


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    gc.collect()  # compiled frames first: dynamo's cleanup hooks expect its state intact
    torch._dynamo.reset()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)).eval()


def test_registered_as_entry_point() -> None:
    names = {e.name: e.value for e in entry_points(group="torch_dynamo_backends")}
    assert names.get("tilefuse") == "compiler.dynamo:backend"
    from torch._dynamo import list_backends

    assert "tilefuse" in list_backends(exclude_tags=())


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_by_name_matches_eager(backend: str) -> None:
    m = _mlp()
    cm = torch.compile(m, backend="tilefuse", options={"backend": backend})
    x = torch.randn(3, 8)
    with torch.inference_mode():
        torch.testing.assert_close(cm(x), m(x))


def test_weights_are_read_at_call_time_and_new_parameters_recompile() -> None:
    m = _mlp()
    cm = torch.compile(m, backend=compiler.dynamo.backend, options={"backend": "llvm"})
    x = torch.randn(5, 8)
    with torch.no_grad():
        torch.testing.assert_close(cm(x), m(x))
        m[0].weight.mul_(2)  # in place: the same parameter, read at call time
        torch.testing.assert_close(cm(x), m(x))
        m[2].weight = nn.Parameter(torch.randn(4, 16))  # a new parameter object
        torch.testing.assert_close(cm(x), m(x))


def test_dynamic_sizes_compile_once_per_size() -> None:
    m = _mlp()
    seen: list[compiler.dynamo.DynamoGraph] = []

    def spy(gm: torch.fx.GraphModule, inputs: list, **kw: object) -> object:
        g = compiler.dynamo.backend(gm, inputs, **kw)
        seen.append(g)
        return g

    cm = torch.compile(m, backend=spy, options={"backend": "numpy"})
    with torch.inference_mode():
        for n in (2, 3, 5, 3, 5):
            x = torch.randn(n, 8)
            torch.testing.assert_close(cm(x), m(x))
    # dynamo: a static graph for size 2, then one dynamic graph for every later size
    assert len(seen) == 2
    assert len(seen[0].cache) == 1
    assert sorted(k[2][1] for k in seen[1].cache) == [3, 5]  # the batch size, specialized


def test_graph_breaks_each_compile() -> None:
    seen: list[compiler.dynamo.DynamoGraph] = []

    def spy(gm: torch.fx.GraphModule, inputs: list, **kw: object) -> object:
        seen.append(compiler.dynamo.backend(gm, inputs, **kw))
        return seen[-1]

    def f(x: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(x * 2, -1)
        if float(y.sum()) > 0:  # data-dependent: a graph break
            y = y + 1
        return torch.tanh(y)

    cf = torch.compile(f, backend=spy, options={"backend": "numpy"})
    x = torch.randn(4, 6)
    torch.testing.assert_close(cf(x), f(x))
    assert len(seen) == 2


def test_example_model_matches_eager() -> None:
    from examples import gpt2

    model, args = gpt2.build(seq=16, hidden=64, heads=4, layers=2)
    cm = torch.compile(model, backend="tilefuse", options={"backend": "llvm"})
    with torch.inference_mode():
        torch.testing.assert_close(cm(*args), model(*args), rtol=1e-4, atol=1e-4)


def test_refuses_grad() -> None:
    cm = torch.compile(_mlp(), backend=compiler.dynamo.backend)
    with pytest.raises(Exception, match="compiles inference graphs") as e:
        cm(torch.randn(2, 8))
    assert "torch.no_grad()" in str(e.value)


def test_refuses_unknown_options_and_modes() -> None:
    gm = torch.fx.symbolic_trace(lambda x: x + 1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['gpus'\]"):
        compiler.dynamo.backend(gm, [torch.randn(2)], options={"gpus": "h100"})
    with pytest.raises(ValueError, match="mode='max-autotune' is not supported"):
        compiler.dynamo.backend(gm, [torch.randn(2)], mode="max-autotune")
    with pytest.raises(ValueError, match="cuda"):
        compiler.dynamo.backend(gm, [torch.randn(2)], options={"backend": "cuda"})


def test_refusal_is_a_tilefuse_error() -> None:
    gm = torch.fx.symbolic_trace(lambda x: x * 3)
    x = torch.randn(2, requires_grad=True)
    with pytest.raises(TilefuseError, match="input x requires grad"):
        compiler.dynamo.backend(gm, [x])


def test_docstring_example() -> None:
    f = torch.compile(lambda x: torch.relu(x) * 2, backend=compiler.dynamo.backend)
    assert f(torch.tensor([-1.0, 3.0])).tolist() == [0.0, 6.0]
