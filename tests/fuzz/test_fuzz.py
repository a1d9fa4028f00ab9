"""The differential fuzzer (compiler/fuzz) in the test suite.

Its fixed-seed batch: 200 random modules compiled and checked against eager and the float64
reference under the parity rule, on numpy and llvm for every seed and on Triton (under the
interpreter) for every fifth. A backend may refuse a module with a clear error; it may not
crash or answer wrongly, unless the known-failures table (known_failures.toml) lists the case,
which then runs as a strict xfail. A failing seed's test prints the module's source, the
repro; `tilefuse fuzz --regressions tests/fuzz/regressions` minimises it into a regression
test. Every op of the op table is in at least 1 % of the batch's graphs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import compiler
from compiler.core.ops import OPS
from compiler.fuzz import campaign
from compiler.fuzz.generator import Case, build, generate, run_source

SEEDS = range(200)
TRITON_EVERY = 5
KNOWN = campaign.load_known(Path(__file__).parent / "known_failures.toml")


def _check(seed: int, backends: tuple[str, ...], batch_ops: dict[int, frozenset[str]]) -> None:
    result = campaign.check_case(Case(seed), backends)
    batch_ops[seed] = batch_ops.get(seed, frozenset()) | result.ops
    for outcome in result.failures:
        if campaign.explained(outcome, Case(seed), KNOWN) is None:
            pytest.fail(
                f"fuzz {Case(seed)} on {outcome.backend}: {outcome.status}\n{outcome.detail}\n"
                f"{result.source.text}\n"
                f"repro: tilefuse fuzz --n 1 --seed {seed} --backends {outcome.backend}",
                pytrace=False,
            )


@pytest.mark.parametrize("seed", SEEDS)
def test_random_module_numpy_and_llvm(seed: int, batch_ops: dict[int, frozenset[str]]) -> None:
    _check(seed, ("numpy", "llvm"), batch_ops)


@pytest.mark.usefixtures("quiet_interpreter")
@pytest.mark.parametrize("seed", SEEDS[::TRITON_EVERY])
def test_random_module_triton(seed: int, batch_ops: dict[int, frozenset[str]]) -> None:
    _check(seed, ("triton",), batch_ops)


def _ops_of(seed: int) -> frozenset[str]:
    model, inputs, _ = build(seed)
    try:
        c = compiler.compile(model, inputs, backend="numpy")
    except campaign.REFUSALS:
        return frozenset()
    return campaign.graph_ops(c)


def test_every_op_of_the_op_table_is_in_one_percent_of_the_batch(
    batch_ops: dict[int, frozenset[str]],
) -> None:
    """Coverage over the graphs the batch compiled (those a selection did not run are
    compiled here)."""
    for seed in SEEDS:
        if seed not in batch_ops:
            batch_ops[seed] = _ops_of(seed)
    share = {op: sum(op in batch_ops[s] for s in SEEDS) / len(SEEDS) for op in OPS}
    low = {op: f"{v:.1%}" for op, v in share.items() if v < 0.01}
    assert not low, f"ops in fewer than 1 % of the batch's modules: {low}"


@pytest.mark.parametrize(
    "row",
    [
        pytest.param(
            row,
            marks=pytest.mark.xfail(strict=True, reason=row.reason),
            id=f"{row.case} on {row.backend}",
        )
        for row in KNOWN
    ],
)
@pytest.mark.usefixtures("quiet_interpreter")
def test_known_failure_still_fails(row: campaign.KnownFailure) -> None:
    """Strict xfail: a known failure that passes now fails here until its row is removed."""
    outcome = campaign.check_case(row.case, (row.backend,)).outcomes[0]
    assert not outcome.failed, outcome.detail


# ----------------------------------------------------------------------------- the fuzzer itself


def test_the_generator_is_deterministic_and_its_source_runs() -> None:
    assert generate(Case(3)) == generate(Case(3))
    model, inputs, source = build(Case(3))
    _, again_inputs = run_source(source.text, "<again>")
    assert all((a == b).all() for a, b in zip(inputs, again_inputs, strict=True))
    assert str(model(*inputs).dtype) == f"torch.{source.dtype}"


def _steps(case: Case) -> list[str]:
    return [ln for ln in generate(case).text.splitlines() if ln.startswith("        v")]


def test_a_case_with_steps_left_out_keeps_the_other_steps() -> None:
    """What the minimiser relies on: leaving a step out leaves the steps before it as they
    were and takes lines away; the last step left out, the rest is the same module."""
    full = _steps(Case(11, steps=6))
    for i in range(6):
        fewer = _steps(Case(11, drop=frozenset({i}), steps=6))
        before = _steps(Case(11, steps=i))
        assert fewer[: len(before)] == before == full[: len(before)]
        assert len(fewer) < len(full)
    assert _steps(Case(11, drop=frozenset({5}), steps=6)) == _steps(Case(11, steps=5))
    capped = build(Case(11, size_cap=2))[1]
    assert max(max(t.shape) for t in capped) <= 2


def test_the_minimiser_shrinks_a_failure_and_writes_a_regression_test(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A stand-in failure (any module with a convolution "fails") shrinks to fewer steps and
    smaller sizes that still have one, written out as a test file that runs."""
    seed = next(s for s in range(100) if generate(Case(s)).text.count("F.conv2d") >= 2)

    def fake_check(case: Case, backends: tuple[str, ...]) -> campaign.Result:
        source = generate(case)
        status = "mismatch" if "F.conv2d" in source.text else "ok"
        outcomes = [campaign.Outcome(b, status, "a stand-in failure") for b in backends]
        return campaign.Result(source, outcomes, frozenset(), 0.0)

    monkeypatch.setattr(campaign, "check_case", fake_check)
    small = campaign.minimize(Case(seed), "llvm", "mismatch")
    text = generate(small).text
    assert text.count("F.conv2d") == 1
    assert text.count("        v") <= generate(Case(seed)).text.count("        v") - 1
    assert small.size_cap == 1
    path = campaign.write_regression(
        small, campaign.Outcome("llvm", "mismatch", "a stand-in failure"), tmp_path
    )
    namespace: dict[str, object] = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    assert namespace["BACKENDS"] == ("numpy", "llvm")
    assert f"Found by the fuzzer: {small}" in path.read_text()


def test_the_known_failures_table_reads_its_rows(tmp_path: Path) -> None:
    table = tmp_path / "known.toml"
    table.write_text(
        '[[failure]]\nseed = 7\ndrop = [1]\nsize_cap = 2\nbackend = "triton"\n'
        'status = "crash"\nreason = "why"\n'
    )
    (row,) = campaign.load_known(table)
    assert row == campaign.KnownFailure(Case(7, frozenset({1}), None, 2), "triton", "crash", "why")
    failing = campaign.Outcome("triton", "crash", "Boom")
    assert campaign.explained(failing, Case(7), [row]) == row
    assert campaign.explained(campaign.Outcome("llvm", "crash"), Case(7), [row]) is None
    assert campaign.explained(campaign.Outcome("triton", "mismatch"), Case(7), [row]) is None
