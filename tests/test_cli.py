"""The `tilefuse check FILE.py:FACTORY` command, run in-process on a tiny factory file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler import cli

REPO = Path(__file__).resolve().parents[1]

FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build(dtype=torch.float32):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16)).eval().to(dtype)
        return model, (torch.randn(2, 8).to(dtype),)


    def build_plain():
        torch.manual_seed(0)
        return (lambda x: torch.tanh(x) * 2), torch.randn(3, 4)


    NOT_A_FUNCTION = 3
    """
)


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "tiny_factory.py"
    path.write_text(FACTORY)
    yield path
    sys.modules.pop("_tilefuse_factory_tiny_factory", None)  # load_factory registers it


def test_check_passes(factory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", f"{factory}:build"]) == 0
    out = capsys.readouterr().out
    assert "parity of Sequential against eager float64" in out
    assert "float32" in out
    assert out.rstrip().splitlines()[-1] == "PASS"


def test_check_bfloat16(factory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", f"{factory}:build", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "bfloat16" in out
    assert out.rstrip().splitlines()[-1] == "PASS"


def test_check_plain_function_and_bare_input(
    factory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A factory may return a function and a single tensor instead of a tuple."""
    assert cli.main(["check", f"{factory}:build_plain"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("PASS")


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(SystemExit) as e:
        cli.main(["check", f"{missing}:build"])
    assert str(e.value) == f"tilefuse: no such file: {missing}"


@pytest.mark.parametrize("name", ["missing_factory", "NOT_A_FUNCTION"])
def test_missing_factory(factory: Path, name: str) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["check", f"{factory}:{name}"])
    assert str(e.value) == f"tilefuse: {factory} has no function {name!r}"


def test_spec_without_factory_name(factory: Path) -> None:
    with pytest.raises(SystemExit, match=r"expected FILE\.py:FACTORY"):
        cli.main(["check", str(factory)])


def test_dtype_for_factory_without_dtype_argument(factory: Path) -> None:
    with pytest.raises(SystemExit, match="does not take a dtype argument"):
        cli.main(["check", f"{factory}:build_plain", "--dtype", "float16"])


def test_unknown_dtype_is_a_usage_error(factory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["check", f"{factory}:build", "--dtype", "int8"])
    assert e.value.code == 2
    assert "invalid choice: 'int8'" in capsys.readouterr().err


def test_python_dash_m_compiler(factory: Path) -> None:
    """The module entry point (`python -m compiler`) runs the same command."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(
        [sys.executable, "-m", "compiler", "check", f"{factory}:build"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith("PASS")


def test_fuzz_checks_modules_and_prints_the_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fuzz", "--n", "4", "--seed", "7", "--backends", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "fuzzing seeds 7..10 on numpy; 0 known failures" in out
    assert "4 modules in" in out and "numpy   4 ok" in out
    assert "op coverage (share of modules whose graphs hold the op):" in out


def test_fuzz_minimises_a_failure_into_a_regression_test(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stand-in failure (every module "fails" on llvm): exit status 1, the module printed,
    and a minimised regression test written; listed in the known failures, it is explained."""
    from compiler.fuzz import campaign
    from compiler.fuzz.generator import generate

    def fake_check(case: campaign.Case, backends: tuple[str, ...]) -> campaign.Result:
        outcomes = [
            campaign.Outcome(b, "mismatch" if b == "llvm" else "ok", "BAD") for b in backends
        ]
        return campaign.Result(generate(case), outcomes, frozenset({"add"}), 0.0)

    monkeypatch.setattr(campaign, "check_case", fake_check)
    args = ["fuzz", "--n", "1", "--seed", "3", "--backends", "numpy,llvm", "--no-coverage"]
    assert cli.main([*args, "--regressions", str(tmp_path / "regressions")]) == 1
    out = capsys.readouterr().out
    assert "FAIL seed 3 on llvm: mismatch\nBAD" in out and "class Fuzzed(nn.Module):" in out
    assert "repro: tilefuse fuzz --n 1 --seed 3 --backends llvm" in out
    (written,) = (tmp_path / "regressions").glob("*.py")
    assert written.name == "seed_3_llvm.py" and "size_cap=1" in written.read_text()
    known = tmp_path / "known.toml"
    known.write_text(
        '[[failure]]\nseed = 3\nbackend = "llvm"\nstatus = "mismatch"\nreason = "a stand-in"\n'
    )
    assert cli.main([*args, "--known", str(known)]) == 0
    assert "failures: 0 unexplained, 1 known" in capsys.readouterr().out


def test_check_with_speed_prints_kernels_compile_time_and_forward_times(
    factory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["check", f"{factory}:build", "--speed"]) == 0
    out = capsys.readouterr().out
    assert out.index("output  llvm") < out.index("output  numpy")  # compiled for llvm first
    assert re.search(r"\d+ kernels from \d+ nodes, compiled in [\d.]+ s \(capture", out), out
    assert re.search(r"  eager +[\d.]+ ms   1\.00x eager\n  tilefuse \(llvm\) +[\d.]+ ms", out)
