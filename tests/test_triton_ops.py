"""Triton's own elementwise math under the interpreter (the op samples' parity on Triton is in
tests/test_op_parity.py).

Repro: pytest tests/test_triton_ops.py
"""

from __future__ import annotations

import warnings

import torch

import compiler


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
