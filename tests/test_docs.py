"""docs/ops.md is generated from the op table and must not go stale."""

from __future__ import annotations

from pathlib import Path

from compiler.core.ops import OPS
from compiler.docs import render

DOCS = Path(__file__).resolve().parent.parent / "docs" / "ops.md"


def test_ops_md_is_up_to_date() -> None:
    assert DOCS.read_text() == render(), "docs/ops.md is stale: run `make docs`"


def test_every_op_is_documented() -> None:
    text = DOCS.read_text()
    assert all(f"| `{name}` |" in text for name in OPS)
