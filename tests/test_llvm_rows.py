"""Row blocks (`backends/llvm/rows.py`, Note [Row blocks]): a run of row-local kernels (a
feed-forward) runs a block of rows at a time, its wide intermediates one block at a time."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import compiler
from backends.llvm import rows as llvm_rows
from compiler.bisect import bisect_kernels
from compiler.core.ir import Node, Value
from compiler.core.schedule import KernelSpec
from compiler.core.types import DType, TensorType


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs start at 16 KiB intermediates and take blocks of at most 16 KiB of them, so small
    shapes (fast to check) take the path the examples' sizes take."""
    monkeypatch.setattr(llvm_rows, "MIN_BYTES", 16 << 10)
    monkeypatch.setattr(llvm_rows, "BLOCK_BYTES", 16 << 10)


def check(model: nn.Module, *inputs: torch.Tensor) -> str:
    report = compiler.check_parity(model.eval(), inputs, backends=("llvm",))
    assert report.ok, f"\n{report}"
    return report.compiled.source("llvm")


def arena_bytes(src: str) -> int:
    found = re.search(r"in an arena of (\d+) bytes", src)
    assert found is not None
    return int(found[1])


class FeedForward(nn.Module):
    """A transformer block's second half: x + W2 gate(W1 norm(x)), then a projection, as the
    diffusers spatial transformer ends (GEGLU) or a LLaMA MLP (SwiGLU)."""

    def __init__(self, dim: int, inner: int, gate: str, out: bool = True) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * inner)
        self.down = nn.Linear(inner, dim)
        self.proj = nn.Linear(dim, dim) if out else None
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * 2  # the block's input: a kernel's output, not the caller's tensor
        h, g = self.up(self.norm(x)).chunk(2, dim=-1)
        h = h * F.gelu(g) if self.gate == "geglu" else F.silu(h) * g
        y = x + self.down(h)
        return self.proj(y) if self.proj is not None else y


@pytest.mark.parametrize("gate", ["geglu", "swiglu"])
def test_feed_forward_runs_in_row_blocks(monkeypatch: pytest.MonkeyPatch, gate: str) -> None:
    model, x = FeedForward(32, 64, gate), torch.randn(1, 128, 32)
    src = check(model, x)  # the up projection: 128 rows x 128 floats = 64 KiB -> 4 blocks
    assert "for r in range(0, 128, 32):" in src and "in 4 blocks of 32 rows" in src
    assert "[:, r : r + 32]" in src and "domain=[1, 32, 128]" in src
    monkeypatch.setattr(llvm_rows, "MIN_BYTES", 1 << 40)
    whole = check(model, x)
    assert "for r in range" not in whole
    assert arena_bytes(src) < arena_bytes(whole)


def test_rows_that_no_block_count_divides_stay_whole() -> None:
    src = check(FeedForward(32, 64, "geglu"), torch.randn(1, 37, 32))  # 37 rows: prime
    assert "for r in range" not in src
    src = check(FeedForward(32, 64, "geglu"), torch.randn(1, 50, 32))  # 25 KiB: 2 x 25 rows
    assert "for r in range(0, 50, 25):" in src


def test_a_run_ending_in_a_graph_output_writes_it_by_rows() -> None:
    src = check(FeedForward(32, 64, "geglu", out=False), torch.randn(1, 64, 32))
    assert "for r in range(0, 64, 32):" in src
    assert re.search(r"a_\w+ = torch.empty\(\(1, 64, 32\)", src)  # allocated whole, before


def test_batches_and_bfloat16() -> None:
    model = FeedForward(32, 64, "geglu")
    assert "for r in range" not in check(model, torch.randn(2, 64, 32))  # rows in two dims
    src = check(model.to(torch.bfloat16), torch.randn(1, 128, 32).bfloat16())
    assert "for r in range(0, 128, 64):" in src  # the up projection in 16 bits: 32 KiB


class PositionTable(nn.Module):
    """A row-shaped parameter added to the rows: a graph input, not sliced by rows."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 64, 128))
        self.up, self.down = nn.Linear(32, 128), nn.Linear(128, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x * 2) + self.pos))


def test_a_graph_input_read_by_rows_keeps_the_run_whole() -> None:
    assert "for r in range" not in check(PositionTable(), torch.randn(1, 64, 32))


F32 = DType.f32


def kernel(body: list[Node], inputs: list[Value], outputs: tuple[str, ...]) -> KernelSpec:
    return KernelSpec("k", "matmul", tuple(inputs), tuple(body), outputs, (1, 8, 4))


def t(*shape: int) -> TensorType:
    return TensorType(shape, F32)


def test_blocked_types_row_values_and_keeps_parameters() -> None:
    x, w, b = Value("x", t(1, 8, 6)), Value("w", t(4, 6)), Value("b", t(4))
    body = [
        Node("permute", ("w",), (("dims", (1, 0)),), Value("wt", t(6, 4))),
        Node("matmul", ("x", "wt"), (), Value("y", t(1, 8, 4))),
        Node("add", ("y", "b"), (), Value("z", t(1, 8, 4))),
    ]
    made = llvm_rows.blocked(kernel(body, [x, w, b], ("z",)), (1, 8), 1, 2)
    assert made is not None
    k, sliced = made
    assert sliced == {"x", "z"} and k.domain == (1, 2, 4)
    assert [v.type.shape for v in k.inputs] == [(1, 2, 6), (4, 6), (4,)]
    assert [n.out.type.shape for n in k.body] == [(6, 4), (1, 2, 4), (1, 2, 4)]


@pytest.mark.parametrize(
    "body",
    [
        # a matmul whose right operand is a row value (attention scores)
        [Node("matmul", ("x", "v"), (), Value("z", t(1, 8, 4)))],
        # a reshape of a row value mixes rows
        [Node("reshape", ("x",), (("shape", (1, 4, 8)),), Value("z", t(1, 4, 8)))],
        # a slice along the rows
        [
            Node(
                "slice",
                ("x",),
                (("dim", 1), ("start", 0), ("end", 4), ("step", 1)),
                Value("z", t(1, 4, 4)),
            )
        ],
        # a row value made from no row value: a table per position
        [
            Node(
                "full",
                (),
                (("shape", (1, 8, 4)), ("value", 1.0), ("dtype", F32)),
                Value("z", t(1, 8, 4)),
            )
        ],
        # a softmax over the rows
        [Node("softmax", ("x",), (("dim", 1),), Value("z", t(1, 8, 4)))],
    ],
)
def test_kernels_that_are_not_row_local_are_not_blocked(body: list[Node]) -> None:
    x, v = Value("x", t(1, 8, 4)), Value("v", t(1, 8, 4))
    assert llvm_rows.blocked(kernel(body, [x, v], ("z",)), (1, 8), 1, 2) is None


def test_bisection_runs_whole_kernels_of_a_blocked_program() -> None:
    model, x = FeedForward(32, 64, "geglu").eval(), torch.randn(1, 128, 32)
    c = compiler.compile(model, (x,), backend="llvm")
    assert "for r in range(0, 128, 32):" in c.source("llvm")
    assert bisect_kernels(c, (x,), {}, "llvm") is None  # every kernel on all 128 rows
