"""Regression tests the fuzzer wrote (tests/fuzz/regressions/seed_<seed>_<backend>.py, by
`tilefuse fuzz --regressions`): each a minimised module that once failed on a backend, checked
against eager and the float64 reference on the backends its file names. A clear refusal
passes: what once crashed may now be refused with a message."""

from __future__ import annotations

from pathlib import Path

import pytest

import compiler
from compiler.fuzz.campaign import REFUSALS
from compiler.fuzz.generator import run_source

REGRESSIONS = sorted((Path(__file__).parent / "regressions").glob("seed_*.py"))


@pytest.mark.usefixtures("quiet_interpreter")
@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.stem)
def test_fuzzer_regression(path: Path) -> None:
    text = path.read_text()
    model, inputs = run_source(text, str(path))
    namespace: dict[str, object] = {}
    exec(compile(text, str(path), "exec"), namespace)
    try:
        report = compiler.check_parity(model, inputs, backends=namespace["BACKENDS"])
    except REFUSALS:
        return
    assert report.ok, f"{path.name}:\n{report}"
