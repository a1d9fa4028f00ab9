"""Op parity under the Triton interpreter: every op sample whose schedule is made only of
pointwise and reduction kernels, Triton and NumPy backends against eager.

Repro one case: pytest tests/test_triton_ops.py -k "layer_norm and bfloat16"
"""

from __future__ import annotations

import warnings

import pytest
import torch

import compiler
from tests.op_samples import SAMPLES, OpSample

HEAVY_OPS = {"matmul", "sdpa", "conv2d"}  # their kernels are the heavy templates' (not here)
# fp16 too for the ops whose math differs most by storage type; the rest run f32 and bf16
FP16_OPS = {"gelu", "softmax", "log_softmax", "layer_norm", "rms_norm", "group_norm", "sum", "cat"}


def _cases() -> list[object]:
    cases = []
    for s in SAMPLES:
        if s.op in HEAVY_OPS:
            continue
        dtypes = list(s.dtypes)
        if s.op in FP16_OPS and torch.bfloat16 in dtypes:
            dtypes.append(torch.float16)
        for dtype in dtypes:
            marks = []
            if dtype in s.xfail:
                marks.append(pytest.mark.xfail(reason=s.xfail[dtype], strict=True))
            name = str(dtype).removeprefix("torch.")
            cases.append(pytest.param(s, dtype, id=f"{s.id}-triton-{name}", marks=marks))
    return cases


@pytest.mark.parametrize(("sample", "dtype"), _cases())
def test_parity(sample: OpSample, dtype: torch.dtype) -> None:
    inputs = sample.make(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the interpreter's one-time notice
        report = compiler.check_parity(sample.fn, inputs, backends=("numpy", "triton"))
    kinds = {k.kind for k in report.compiled.kernels}
    assert kinds <= {"pointwise", "reduction"}, kinds
    ops = {*report.compiled.captured.graph.op_counts(), *report.compiled.graph.op_counts()}
    assert sample.op in ops, f"{sample.id} did not become {sample.op}: {sorted(ops)}"
    assert report.ok, f"\n{report}\n{report.compiled.schedule}"
