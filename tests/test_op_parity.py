"""Op parity: every IR op through small torch programs, one matrix of op samples x backends x
dtypes. Each case checks a backend and the NumPy backend (the oracle's twin) against eager by
the parity rule. Triton runs under the interpreter, on the samples whose schedule is made of
pointwise and reduction kernels only (the heavy templates have their own tests), in fp16 too
for the ops whose math differs most by storage type.

Repro one case: pytest tests/test_op_parity.py -k "gelu-tanh-llvm-bfloat16"
"""

from __future__ import annotations

import pytest
import torch

import compiler
from compiler.core.ops import OPS
from tests.op_samples import SAMPLES, OpSample

HEAVY_OPS = {"matmul", "sdpa", "conv2d"}  # Triton renders these from templates, tested apart
FP16_OPS = {"gelu", "softmax", "log_softmax", "layer_norm", "rms_norm", "group_norm", "sum", "cat"}


def _dtypes(sample: OpSample, backend: str) -> list[torch.dtype]:
    dtypes = list(sample.dtypes)
    if backend == "triton" and sample.op in FP16_OPS and torch.bfloat16 in dtypes:
        dtypes.append(torch.float16)
    return dtypes


def _cases() -> list[object]:
    cases = []
    for backend in ("llvm", "triton"):
        for s in SAMPLES:
            if backend == "triton" and s.op in HEAVY_OPS:
                continue
            for dtype in _dtypes(s, backend):
                marks = []
                if dtype in s.xfail:
                    marks.append(pytest.mark.xfail(reason=s.xfail[dtype], strict=True))
                name = str(dtype).removeprefix("torch.")
                case = pytest.param(s, backend, dtype, id=f"{s.id}-{backend}-{name}", marks=marks)
                cases.append(case)
    return cases


@pytest.mark.parametrize(("sample", "backend", "dtype"), _cases())
@pytest.mark.usefixtures("quiet_interpreter")
def test_parity(sample: OpSample, backend: str, dtype: torch.dtype) -> None:
    inputs = sample.make(dtype)
    report = compiler.check_parity(sample.fn, inputs, backends=("numpy", backend))
    # lowered to the op, or (for recognized composites) rewritten to it by the passes
    ops = {*report.compiled.captured.graph.op_counts(), *report.compiled.graph.op_counts()}
    assert sample.op in ops, f"{sample.id} did not become {sample.op}: {sorted(ops)}"
    if backend == "triton":
        kinds = {k.kind for k in report.compiled.kernels}
        assert kinds <= {"pointwise", "reduction"}, kinds
    assert report.ok, f"\n{report}\n{report.compiled.schedule}"


def test_every_op_has_a_sample() -> None:
    covered = {s.op for s in SAMPLES}
    assert set(OPS) - covered == set()
