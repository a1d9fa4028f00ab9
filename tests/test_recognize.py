"""recognize_composites: every rule fires on its hand-written form (Before -> After, NumPy
equivalent) and declines where the form differs; real models end up with the composites."""

from __future__ import annotations

import math

import pytest
import torch

import compiler
from compiler.core.ir import Graph
from passes.cleanup import eliminate_dead_code
from passes.recognize import RECOGNIZE_RULES, recognize_composites
from tests.helpers import assert_ir, assert_numpy_equivalent, ir

S2PI = repr(math.sqrt(2 / math.pi))
INV_SQRT2 = repr(1 / math.sqrt(2))


def recognized(text: str) -> Graph:
    before = ir(text)
    after = eliminate_dead_code(recognize_composites(before))
    assert_numpy_equivalent(before, after)
    return after


GELU_TANH = f"""
def f(x: f32[2,8]):
    v0: f32[()] = full(shape=(), value=0.5, dtype=f32)
    v1: f32[2,8] = mul(x, v0)
    v2: f32[()] = full(shape=(), value=3.0, dtype=f32)
    v3: f32[2,8] = pow(x, v2)
    v4: f32[()] = full(shape=(), value=0.044715, dtype=f32)
    v5: f32[2,8] = mul(v3, v4)
    v6: f32[2,8] = add(x, v5)
    v7: f32[()] = full(shape=(), value={S2PI}, dtype=f32)
    v8: f32[2,8] = mul(v6, v7)
    v9: f32[2,8] = tanh(v8)
    v10: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v11: f32[2,8] = add(v9, v10)
    v12: f32[2,8] = mul(v1, v11)
    return (v12,)
"""

RMS = """
def f(x: f32[2,8], w: f32[8]):
    v0: f32[2,8] = mul(x, x)
    v1: f32[2,1] = mean(v0, dims=(1,), keepdim=True)
    v2: f32[()] = full(shape=(), value=1e-06, dtype=f32)
    v3: f32[2,1] = add(v1, v2)
    v4: f32[2,1] = rsqrt(v3)
    v5: f32[2,8] = mul(x, v4)
    v6: f32[2,8] = mul(w, v5)
    return (v6,)
"""

LAYER_NORM = """
def f(x: f32[2,3,8], w: f32[8], b: f32[8]):
    v0: f32[2,3,1] = mean(x, dims=(2,), keepdim=True)
    v1: f32[2,3,8] = sub(x, v0)
    v2: f32[2,3,8] = mul(v1, v1)
    v3: f32[2,3,1] = mean(v2, dims=(2,), keepdim=True)
    v4: f32[()] = full(shape=(), value=1e-05, dtype=f32)
    v5: f32[2,3,1] = add(v3, v4)
    v6: f32[2,3,1] = sqrt(v5)
    v7: f32[2,3,8] = div(v1, v6)
    v8: f32[2,3,8] = mul(v7, w)
    v9: f32[2,3,8] = add(v8, b)
    return (v9,)
"""

ROPE = """
def f(x: f32[1,2,4,8], cos: f32[1,1,4,8], sin: f32[1,1,4,8]):
    v0: f32[1,2,4,8] = mul(x, cos)
    v1: f32[1,2,4,4] = slice(x, dim=3, start=0, end=4, step=1)
    v2: f32[1,2,4,4] = slice(x, dim=3, start=4, end=8, step=1)
    v3: f32[1,2,4,4] = neg(v2)
    v4: f32[1,2,4,8] = cat(v3, v1, dim=3)
    v5: f32[1,2,4,8] = mul(v4, sin)
    v6: f32[1,2,4,8] = add(v0, v5)
    return (v6,)
"""

# (rule, before, expected after)
POSITIVE = [
    (
        "0.5 * x * (1 + tanh|erf(...)) => gelu(x)",
        GELU_TANH,
        """
def f(x: f32[2,8]):
    v0: f32[2,8] = gelu(x, approximate='tanh')
    return (v0,)
""",
    ),
    (
        "mul(x, sigmoid(x)) => silu(x)",
        """
def f(x: f32[2,8]):
    v0: f32[2,8] = sigmoid(x)
    v1: f32[2,8] = mul(v0, x)
    return (v1,)
""",
        """
def f(x: f32[2,8]):
    v0: f32[2,8] = silu(x)
    return (v0,)
""",
    ),
    (
        "x * rsqrt(mean(x*x) + eps) => rms_norm(x); (x-m) * rsqrt(var + eps) => layer_norm(x)",
        RMS,
        """
def f(x: f32[2,8], w: f32[8]):
    v0: f32[2,8] = rms_norm(x, w, normalized_shape=(8,), eps=1e-06)
    return (v0,)
""",
    ),
    (
        "x / sqrt(mean(x*x) + eps) => rms_norm(x); (x-m) / sqrt(var + eps) => layer_norm(x)",
        LAYER_NORM,
        """
def f(x: f32[2,3,8], w: f32[8], b: f32[8]):
    v0: f32[2,3,8] = layer_norm(x, w, b, normalized_shape=(8,), eps=1e-05)
    return (v0,)
""",
    ),
    (
        "cast(norm(cast(x, f32)), x.dtype) => norm(x)",
        """
def f(x: bf16[2,8]):
    v0: f32[2,8] = cast(x, dtype=f32)
    v1: f32[2,8] = softmax(v0, dim=1)
    v2: bf16[2,8] = cast(v1, dtype=bf16)
    return (v2,)
""",
        """
def f(x: bf16[2,8]):
    v0: bf16[2,8] = softmax(x, dim=1)
    return (v0,)
""",
    ),
    (
        "mul(norm(x), w) => norm(x, w)",
        """
def f(x: f32[2,8], w: f32[8]):
    v0: f32[2,8] = rms_norm(x, normalized_shape=(8,), eps=1e-06)
    v1: f32[2,8] = mul(v0, w)
    return (v1,)
""",
        """
def f(x: f32[2,8], w: f32[8]):
    v0: f32[2,8] = rms_norm(x, w, normalized_shape=(8,), eps=1e-06)
    return (v0,)
""",
    ),
    (
        "add(layer_norm(x, w), b) => layer_norm(x, w, b)",
        """
def f(x: f32[2,8], w: f32[8], b: f32[8]):
    v0: f32[2,8] = layer_norm(x, w, normalized_shape=(8,), eps=1e-05)
    v1: f32[2,8] = add(b, v0)
    return (v1,)
""",
        """
def f(x: f32[2,8], w: f32[8], b: f32[8]):
    v0: f32[2,8] = layer_norm(x, w, b, normalized_shape=(8,), eps=1e-05)
    return (v0,)
""",
    ),
    (
        "mul(silu(gate), up) => swiglu(gate, up)",
        """
def f(g: f32[2,8], u: f32[2,8]):
    v0: f32[2,8] = silu(g)
    v1: f32[2,8] = mul(v0, u)
    return (v1,)
""",
        """
def f(g: f32[2,8], u: f32[2,8]):
    v0: f32[2,8] = swiglu(g, u)
    return (v0,)
""",
    ),
    (
        "mul(h, gelu(gate)) => geglu(h, gate)",
        """
def f(h: f32[2,8], g: f32[2,8]):
    v0: f32[2,8] = gelu(g, approximate='none')
    v1: f32[2,8] = mul(h, v0)
    return (v1,)
""",
        """
def f(h: f32[2,8], g: f32[2,8]):
    v0: f32[2,8] = geglu(h, g, approximate='none')
    return (v0,)
""",
    ),
    (
        "x * cos + rotate_half(x) * sin => rope(x, cos, sin)",
        ROPE,
        """
def f(x: f32[1,2,4,8], cos: f32[1,1,4,8], sin: f32[1,1,4,8]):
    v0: f32[1,2,4,8] = rope(x, cos, sin)
    return (v0,)
""",
    ),
    (
        "x * (1 + scale) + shift => adaln_modulate(x, scale, shift)",
        """
def f(x: f32[2,5,8], scale: f32[2,1,8], shift: f32[2,1,8]):
    v0: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v1: f32[2,1,8] = add(v0, scale)
    v2: f32[2,5,8] = mul(x, v1)
    v3: f32[2,5,8] = add(v2, shift)
    return (v3,)
""",
        """
def f(x: f32[2,5,8], scale: f32[2,1,8], shift: f32[2,1,8]):
    v0: f32[2,5,8] = adaln_modulate(x, scale, shift)
    return (v0,)
""",
    ),
]

DECLINED = [
    ("gelu: wrong cubic coefficient", GELU_TANH.replace("0.044715", "0.05")),
    (
        "gelu: tanh of another value",
        GELU_TANH.replace("v6: f32[2,8] = add(x, v5)", "v6: f32[2,8] = add(v1, v5)"),
    ),
    (
        "silu: sigmoid of another value",
        """
def f(x: f32[2,8], y: f32[2,8]):
    v0: f32[2,8] = sigmoid(y)
    v1: f32[2,8] = mul(v0, x)
    return (v1,)
""",
    ),
    (
        "rms_norm: mean over a leading dim",
        RMS.replace("mean(v0, dims=(1,)", "mean(v0, dims=(0,)")
        .replace("v1: f32[2,1]", "v1: f32[1,8]")
        .replace("v3: f32[2,1]", "v3: f32[1,8]")
        .replace("v4: f32[2,1]", "v4: f32[1,8]"),
    ),
    (
        "rms_norm: mean of another square",
        RMS.replace("v0: f32[2,8] = mul(x, x)", "v0: f32[2,8] = mul(x, w)"),
    ),
    (
        "rms_norm: no keepdim",
        RMS.replace("keepdim=True", "keepdim=False")
        .replace("v1: f32[2,1]", "v1: f32[2]")
        .replace("v3: f32[2,1]", "v3: f32[2]")
        .replace("v4: f32[2,1]", "v4: f32[2]")
        .replace("v5: f32[2,8] = mul(x, v4)", "v5: f32[2,8] = mul(x, x)"),
    ),
    (
        "cast sandwich: f32 -> bf16 -> f32 is lossy",
        """
def f(x: f32[2,8]):
    v0: bf16[2,8] = cast(x, dtype=bf16)
    v1: bf16[2,8] = softmax(v0, dim=1)
    v2: f32[2,8] = cast(v1, dtype=f32)
    return (v2,)
""",
    ),
    (
        "affine weight: w broadcasts over rows, not the normalized shape",
        """
def f(x: f32[2,8], w: f32[2,1]):
    v0: f32[2,8] = rms_norm(x, normalized_shape=(8,), eps=1e-06)
    v1: f32[2,8] = mul(v0, w)
    return (v1,)
""",
    ),
    (
        "affine bias: rms_norm has no bias",
        """
def f(x: f32[2,8], w: f32[8], b: f32[8]):
    v0: f32[2,8] = rms_norm(x, w, normalized_shape=(8,), eps=1e-06)
    v1: f32[2,8] = add(v0, b)
    return (v1,)
""",
    ),
    (
        "rope: halves swapped the other way",
        ROPE.replace("cat(v3, v1, dim=3)", "cat(v1, v3, dim=3)"),
    ),
    (
        "rope: not the halves",
        ROPE.replace("start=0, end=4", "start=0, end=2")
        .replace("v1: f32[1,2,4,4]", "v1: f32[1,2,4,2]")
        .replace("start=4, end=8", "start=2, end=8")
        .replace("v2: f32[1,2,4,4]", "v2: f32[1,2,4,6]")
        .replace("v3: f32[1,2,4,4]", "v3: f32[1,2,4,6]"),
    ),
    (
        "adaln: 2 + scale",
        """
def f(x: f32[2,5,8], scale: f32[2,1,8], shift: f32[2,1,8]):
    v0: f32[()] = full(shape=(), value=2.0, dtype=f32)
    v1: f32[2,1,8] = add(v0, scale)
    v2: f32[2,5,8] = mul(x, v1)
    v3: f32[2,5,8] = add(v2, shift)
    return (v3,)
""",
    ),
]


@pytest.mark.parametrize(("rule", "before", "after"), POSITIVE, ids=[p[0] for p in POSITIVE])
def test_rule_fires(rule: str, before: str, after: str) -> None:
    assert_ir(recognized(before), after)


@pytest.mark.parametrize(("case", "before"), DECLINED, ids=[d[0] for d in DECLINED])
def test_rule_declines(case: str, before: str) -> None:
    g = ir(before)
    assert recognize_composites(g) is g


def test_every_rule_has_a_positive_case() -> None:
    assert {r.name for r in RECOGNIZE_RULES} == {p[0] for p in POSITIVE}


def test_gelu_erf_form() -> None:
    after = recognized(f"""
def f(x: f32[4]):
    v0: f32[()] = full(shape=(), value={INV_SQRT2}, dtype=f32)
    v1: f32[4] = mul(x, v0)
    v2: f32[4] = erf(v1)
    v3: f32[()] = full(shape=(), value=1.0, dtype=f32)
    v4: f32[4] = add(v3, v2)
    v5: f32[4] = mul(x, v4)
    v6: f32[()] = full(shape=(), value=0.5, dtype=f32)
    v7: f32[4] = mul(v5, v6)
    return (v7,)
""")
    assert after.op_counts() == {"gelu": 1}
    assert after.nodes[0].attr("approximate") == "none"


# ----------------------------------------------------------------------------- real models


def _ops(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict[str, int]:
    report = compiler.check_parity(model, inputs)
    assert report.ok, f"\n{report}"
    return report.compiled.graph.op_counts()


def test_hf_gpt2_new_gelu_is_recognized() -> None:
    from tests.test_models import hf_gpt2

    ops = _ops(*hf_gpt2(torch.float32))
    assert ops["gelu"] == 2 and "tanh" not in ops and "pow" not in ops


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_hf_llama_norms_rope_swiglu_are_recognized(dtype: torch.dtype) -> None:
    from tests.test_models import hf_llama

    ops = _ops(*hf_llama(dtype))
    assert ops["rms_norm"] == 5 and ops["rope"] == 4 and ops["swiglu"] == 2
    assert "rsqrt" not in ops and "neg" not in ops and "silu" not in ops


def test_handwritten_layer_norm_and_geglu_module() -> None:
    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(16))
            self.b = torch.nn.Parameter(torch.randn(16))
            self.proj = torch.nn.Linear(16, 64)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            mu = x.mean(-1, keepdim=True)
            var = ((x - mu) ** 2).mean(-1, keepdim=True)
            h = (x - mu) / torch.sqrt(var + 1e-5) * self.w + self.b
            a, gate = self.proj(h).chunk(2, dim=-1)
            return a * torch.nn.functional.gelu(gate)

    torch.manual_seed(0)
    ops = _ops(Block().eval(), (torch.randn(2, 5, 16),))
    assert ops.get("layer_norm") == 1 and ops.get("geglu") == 1
    assert "sqrt" not in ops and "div" not in ops
