"""The native Triton path: on a machine with a CUDA or ROCm device, `backend="triton"` runs
the kernels compiled for that GPU (no interpreter), with inputs and outputs on the device in
their own dtypes. Neither this machine nor CI has a GPU, so these tests skip there and say
why; they are the check to run on a GPU machine.

Repro (on a GPU machine): pytest tests/test_triton_gpu.py
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import compiler
from backends.triton.render import INTERPRETER_WARNING
from compiler.parity_rule import compare, output_leaves, reference_f64
from examples import dit, gpt2, llama, unet

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA or ROCm device (none on this machine or in CI): the native Triton "
    "path; the same kernels are checked under the interpreter in tests/test_triton_models.py",
)

MODELS = {
    "gpt2": lambda d: gpt2.build(dtype=d),
    "llama": lambda d: llama.build(dtype=d),
    "unet": lambda d: unet.build(dtype=d),
    "dit": lambda d: dit.build(dtype=d),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(MODELS))
def test_example_runs_natively_on_the_gpu(name: str, dtype: torch.dtype) -> None:
    model, inputs = MODELS[name](dtype)
    model = model.cuda()
    inputs = tuple(x.cuda() if isinstance(x, torch.Tensor) else x for x in inputs)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=INTERPRETER_WARNING)  # natively, no notice
        c = compiler.compile(model, inputs, gpu=None, backend="triton")
        out = c(*inputs)
    outs = [o for _, o in output_leaves(out)]
    assert all(o.device.type == "cuda" for o in outs)
    with torch.no_grad():
        eager = output_leaves(model(*inputs))
    assert [o.dtype for o in outs] == [e.dtype for _, e in eager]
    cpu_model = copy.deepcopy(model).cpu()
    ref = output_leaves(reference_f64(cpu_model, tuple(x.cpu() for x in inputs), {}))
    rows = [
        compare(path, "triton", o.cpu(), e.cpu(), r)
        for (path, e), (_, r), o in zip(eager, ref, outs, strict=True)
    ]
    assert all(row.ok for row in rows), "\n".join(map(str, rows))
