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


def test_sin_cos_accuracy_and_special_values() -> None:
    """sin/cos are our Cody-Waite reduction + Cephes polynomials (not libdevice's, whose
    huge-argument path keeps a stack frame): ~1e-7 absolute over timestep-embedding ranges."""
    import math

    specials = [0.0, -0.0, math.inf, -math.inf, math.nan, 1e-30, math.pi / 4, math.pi / 2]
    x = torch.cat([torch.linspace(-1200, 1200, 20001), torch.tensor(specials)])
    for f in (torch.sin, torch.cos):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y = compiler.compile(lambda x, f=f: f(x), (x,), backend="triton")(x)
        ref = f(x.double())
        fin = torch.isfinite(ref)
        assert (y.double() - ref)[fin].abs().max().item() < 2e-7, f.__name__
        assert torch.isnan(y[~fin]).all()
    sin0 = compiler.compile(torch.sin, (x,), backend="triton")(x)[20001:20003]
    assert sin0.tolist() == [0.0, 0.0] and torch.signbit(sin0[1]).item()  # sin(-0.0) = -0.0
