"""The differential fuzzer's fixed-seed batch: random modules (tests/fuzz/generator.py)
compiled and checked against eager and the float64 reference under the parity rule, on numpy
and llvm for every seed and on Triton (under the interpreter) for every fifth. A backend may
refuse a module with a clear error (an op or a fusion it cannot render); it may not crash or
answer wrongly. A failing seed's test prints the module's source: the repro."""

from __future__ import annotations

import pytest

import compiler
from backends.triton.ops import TritonUnsupportedError
from compiler.core.errors import UnsupportedOpError
from tests.fuzz.generator import build

SEEDS = range(200)
REFUSALS = (UnsupportedOpError, TritonUnsupportedError)


def _check(seed: int, backends: tuple[str, ...]) -> None:
    model, args, source = build(seed)
    try:
        report = compiler.check_parity(model, args, backends=backends)
    except REFUSALS:
        return  # a clear refusal, not a wrong answer
    assert report.ok, f"fuzz seed {seed}:\n{report}\n{source}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_module_numpy_and_llvm(seed: int) -> None:
    _check(seed, ("numpy", "llvm"))


@pytest.mark.usefixtures("quiet_interpreter")
@pytest.mark.parametrize("seed", SEEDS[::5])
def test_random_module_triton(seed: int) -> None:
    _check(seed, ("numpy", "triton"))


def test_the_generator_is_deterministic_and_varied() -> None:
    from tests.fuzz.generator import generate

    assert generate(3) == generate(3)
    sources = [generate(seed)[0] for seed in SEEDS]
    for family in ("F.linear", "softmax", "F.layer_norm", "rsqrt", "transpose", "torch.cat",
                   "scaled_dot_product_attention", "keepdim=True", "[..., :"):  # fmt: skip
        share = sum(family in s for s in sources) / len(sources)
        assert share >= 0.05, (family, share)
