"""Op parity: every IR op, through small torch programs, NumPy and llvm backends vs eager.

Repro one case: pytest tests/test_op_parity.py -k "gelu-tanh and bfloat16"
"""

from __future__ import annotations

import pytest
import torch

import compiler
from compiler.core.ops import OPS
from tests.op_samples import SAMPLES, OpSample


def _cases() -> list[object]:
    cases = []
    for s in SAMPLES:
        for dtype in s.dtypes:
            marks = []
            if dtype in s.xfail:
                marks.append(pytest.mark.xfail(reason=s.xfail[dtype], strict=True))
            name = str(dtype).removeprefix("torch.")
            cases.append(pytest.param(s, dtype, id=f"{s.id}-{name}", marks=marks))
    return cases


@pytest.mark.parametrize(("sample", "dtype"), _cases())
def test_parity(sample: OpSample, dtype: torch.dtype) -> None:
    inputs = sample.make(dtype)
    report = compiler.check_parity(sample.fn, inputs, backends=("numpy", "llvm"))
    # lowered to the op, or (for recognized composites) rewritten to it by the passes
    ops = {*report.compiled.captured.graph.op_counts(), *report.compiled.graph.op_counts()}
    assert sample.op in ops, f"{sample.id} did not become {sample.op}: {sorted(ops)}"
    assert report.ok, f"\n{report}\n{report.compiled.graph}"


def test_every_op_has_a_sample() -> None:
    covered = {s.op for s in SAMPLES}
    assert set(OPS) - covered == set()
