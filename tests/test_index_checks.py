"""Indices read as data (an embedding's ids, an index op's index tensors) outside the dimension
they index: the compiled model raises as eager does, naming the op, the node and the source
line, and never reads outside the tensor (Note [Index checks] in backends/index_maps.py).
The Triton backend clamps such an index without raising yet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compiler
from compiler import IndexOutOfRangeError

BACKENDS = ["numpy", "llvm", "triton"]  # triton: under the interpreter, or natively


class Embed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(10, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.layer_norm(self.table(ids), (8,)) * 2


class Shifted(Embed):
    """The index is computed inside the graph: ids + shift."""

    def forward(self, ids: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return self.table(ids + shift) * 2


def _embed() -> Embed:
    torch.manual_seed(0)
    return Embed().eval()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [10, 1_000_000, -1])
def test_an_id_outside_the_table_raises_as_eager_does(backend: str, bad: int) -> None:
    model = _embed()
    c = compiler.compile(model, (torch.tensor([[1, 2, 3]]),), backend=backend)
    ids = torch.tensor([[1, bad, 3]])
    with pytest.raises(IndexError, match="index out of range in self"):
        model(ids)
    with pytest.raises(IndexOutOfRangeError) as caught:
        c(ids)
    message = str(caught.value)
    assert f"embedding: index {bad} is out of range for a dimension of size 10" in message
    assert "allowed: 0 to 9" in message
    assert "node:   t" in message and "test_index_checks.py:" in message, message
    # the next call with good ids runs as before: nothing of the error is left behind
    good = torch.tensor([[9, 0, 4]])
    torch.testing.assert_close(c(good), model(good))


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_index_computed_inside_the_graph_is_checked(backend: str) -> None:
    torch.manual_seed(0)
    model = Shifted().eval()
    ids, shift = torch.tensor([[1, 2, 3]]), torch.tensor([[0, 0, 0]])
    c = compiler.compile(model, (ids, shift), backend=backend)
    torch.testing.assert_close(
        c(ids, torch.tensor([[6, 7, 6]])), model(ids, torch.tensor([[6, 7, 6]]))
    )
    with pytest.raises(IndexOutOfRangeError, match="index 11 is out of range"):
        c(ids, torch.tensor([[0, 9, 0]]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_op_counts_negative_indices_from_the_end_and_rejects_the_rest(backend: str) -> None:
    def pick(x: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return x[i] + 1

    x = torch.randn(6, 5)
    c = compiler.compile(pick, (x, torch.tensor([0, 1])), backend=backend)
    ends = torch.tensor([-6, 5])  # the first row and the last: allowed, as in eager
    torch.testing.assert_close(c(x, ends), pick(x, ends))
    for bad in (6, -7):
        with pytest.raises(IndexError):
            pick(x, torch.tensor([0, bad]))
        with pytest.raises(IndexOutOfRangeError, match=f"index: index {bad} .*allowed: -6 to 5"):
            c(x, torch.tensor([0, bad]))


def test_gpt2_with_token_ids_outside_its_vocabulary() -> None:
    from examples import gpt2

    model, (ids,) = gpt2.build()
    c = compiler.compile(model, (ids,), backend="llvm")
    for bad in (1_000_000, -1):
        wrong = ids.clone()
        wrong[0, 3] = bad
        with pytest.raises(IndexOutOfRangeError, match=f"embedding: index {bad} "):
            c(wrong)
    torch.testing.assert_close(c(ids), model(ids), rtol=1e-4, atol=1e-4)


def test_a_loaded_artifact_checks_its_indices(tmp_path: Path) -> None:
    model = _embed()
    c = compiler.compile(model, (torch.tensor([[1, 2, 3]]),), backend="llvm")
    loaded = compiler.load(c.save(tmp_path / "embed"))
    with pytest.raises(IndexOutOfRangeError, match="index 12 is out of range"):
        loaded(torch.tensor([[1, 12, 3]]))
    good = torch.tensor([[3, 2, 1]])
    torch.testing.assert_close(loaded(good), model(good))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ids_read_in_a_matmul_prologue_are_checked(backend: str) -> None:
    def project(table: torch.Tensor, ids: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.embedding(ids, table) @ w

    table, w = torch.randn(16, 8), torch.randn(8, 8)
    ids = torch.tensor([[1, 2, 3, 4]])
    c = compiler.compile(project, (table, ids, w), backend=backend)
    assert [k.kind for k in c.kernels] == ["matmul"]  # the gather is the GEMM's prologue
    torch.testing.assert_close(c(table, ids, w), project(table, ids, w))
    with pytest.raises(IndexOutOfRangeError, match="embedding: index 30 "):
        c(table, torch.tensor([[1, 2, 30, 4]]), w)
