"""Choices measured on this host and kept in a tuning file per CPU (backends/llvm/tuning.py,
Note [Measured choices]): which GEMM runs each weight's product and which kernel each
attention, timed, cached, replayed from an artifact, overridden by the file, and left to the
analytic default under TILEFUSE_TUNE=0."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import compiler
from backends.llvm import artifact as llvm_artifact
from backends.llvm import tuning
from compiler import cli


@pytest.fixture
def tuned(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Tuning on, into a tuning file of this test's own (under its private cache)."""
    monkeypatch.setenv("TILEFUSE_TUNE", "1")
    tuning._open.cache_clear()
    yield private_cache / "tuning"
    tuning._open.cache_clear()


def mlp() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 72), nn.GELU(), nn.Linear(72, 24)).eval()
    return model, torch.randn(3, 11, 40)


def compile_checked(model: nn.Module, x: torch.Tensor) -> compiler.Compiled:
    report = compiler.check_parity(model, (x,), backends=("llvm",))
    assert report.ok, f"\n{report}"
    return report.compiled


def no_timing(*args: object) -> dict[str, float]:
    raise AssertionError("timed a choice the tuning file has")


def test_choices_are_measured_once_then_read_from_the_tuning_file(
    tuned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = mlp()
    first = compile_checked(model, x)
    rows = first.choices.rows
    assert [call for call, _ in rows] == [
        "k0_fused_matmul_add_gelu.0_matmul",
        "k1_fused_matmul_add.0_matmul",
    ]
    for _, choice in rows:
        assert choice.why == "measured" and choice.kind == "gemm"
        assert {"native", choice.default} <= set(choice.times_us), choice
        assert choice.choice == min(choice.times_us, key=choice.times_us.__getitem__) or (
            choice.choice == choice.default
        )
    assert rows[1][1].shape == "m=33 k=72 n=24 x=row bias=col into=slot"
    (path,) = tuned.glob("*.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["shape"] for e in lines] == [c.shape for _, c in rows]
    assert {e["choice"] for e in lines} == {c.choice for _, c in rows}
    assert all(e["cpu"].endswith(" threads") and e["kind"] == "gemm" for e in lines)
    assert "chosen: " in first.source("llvm")

    tuning._open.cache_clear()  # a new process: the file is read, nothing is timed
    monkeypatch.setattr(tuning, "_time", no_timing)
    again = compile_checked(model, x)
    assert [(call, c.choice, c.why) for call, c in again.choices.rows] == [
        (call, c.choice, "cached") for call, c in rows
    ]
    with tuning.retune(), pytest.raises(AssertionError, match="timed a choice"):
        compiler.compile(model, (x,), backend="llvm")


@pytest.mark.parametrize("forced", ["native", "onednn", "mkl"])
def test_the_tuning_file_decides_and_every_candidate_computes_the_gemm(
    tuned: Path, forced: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the candidates are the native matmul and the packed GEMM of one library
    monkeypatch.setenv("TILEFUSE_GEMM", "auto" if forced == "native" else forced)
    model, x = mlp()
    compile_checked(model, x)
    (path,) = tuned.glob("*.jsonl")
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**e, "choice": forced}) + "\n" for e in entries))
    tuning._open.cache_clear()
    c = compile_checked(model, x)
    assert {ch.choice for _, ch in c.choices.rows} == {forced}
    source = c.source("llvm")
    expect = {
        "native": "native GEMM",
        "onednn": "torch.ops.mkldnn._linear_pointwise(",
        "mkl": "torch.ops.mkl._mkl_linear(",
    }
    assert source.count(expect[forced]) == 2, source


def test_a_damaged_line_of_the_tuning_file_is_skipped(
    tuned: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model, x = mlp()
    compile_checked(model, x)
    (path,) = tuned.glob("*.jsonl")
    text = path.read_text()
    path.write_text('{"kind": "gemm", "sha\n' + text)  # a line cut short
    tuning._open.cache_clear()
    with caplog.at_level(logging.WARNING, logger="tilefuse.llvm"):
        c = compile_checked(model, x)
    assert f"{path}:1: not a tuning entry, skipped" in caplog.text
    assert {ch.why for _, ch in c.choices.rows} == {"cached"}


def test_tuning_off_takes_the_defaults_and_reads_no_file(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TILEFUSE_TUNE", "0")
    monkeypatch.setattr(tuning, "_time", no_timing)
    model, x = mlp()
    c = compile_checked(model, x)
    assert {(ch.why, ch.choice) for _, ch in c.choices.rows} == {
        ("default", ch.default) for _, ch in c.choices.rows
    }
    assert not (private_cache / "tuning").exists()
    assert "chosen: " not in c.source("llvm")


def test_a_choice_must_beat_the_default_by_more_than_noise(
    tuned: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = {"a": lambda: None, "b": lambda: None}
    builds = {name: (lambda r=r: r) for name, r in runs.items()}
    for medians, want in [({"a": 100.0, "b": 98.0}, "a"), ({"a": 100.0, "b": 90.0}, "b")]:
        monkeypatch.setattr(tuning, "_time", lambda *_, m=medians: m)
        made = tuning.decide("test", f"case {want}", builds, default="a")
        assert (made.choice, made.why) == (want, "measured")


def test_a_candidate_that_fails_is_left_out(tuned: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> tuning.Runner:
        raise RuntimeError("no such instruction here")

    with caplog.at_level(logging.WARNING, logger="tilefuse.llvm"):
        made = tuning.decide("test", "broken", {"a": lambda: lambda: None, "b": broken}, "a")
    assert made.choice == "a" and set(made.times_us) == {"a"}
    assert "candidate b left out (RuntimeError: no such instruction here)" in caplog.text


def test_an_artifact_carries_its_choices_and_replays_them(
    tuned: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = mlp()
    c = compile_checked(model, x)
    c.save(tmp_path / "mlp")
    saved = [
        json.loads(line) for line in (tmp_path / "mlp" / "tuning.jsonl").read_text().splitlines()
    ]
    assert [e["call"] for e in saved] == [call for call, _ in c.choices.rows]
    assert all(e["cpu"] == tuning.cpu() for e in saved)
    loaded = compiler.load(tmp_path / "mlp")
    assert loaded.choices.rows == c.choices.rows  # the saved program, as it was made
    torch.testing.assert_close(loaded(x), model(x))

    # rendered again on this CPU (here: the saved program is not used) with an empty tuning
    # file: the artifact's choices are taken, nothing is timed
    for f in tuned.glob("*.jsonl"):
        f.unlink()
    tuning._open.cache_clear()
    monkeypatch.setattr(llvm_artifact, "_saved_program", lambda *_: None)
    monkeypatch.setattr(tuning, "_time", no_timing)
    rendered = compiler.load(tmp_path / "mlp")
    assert [(call, ch.choice, ch.why) for call, ch in rendered.choices.rows] == [
        (call, ch.choice, "cached") for call, ch in c.choices.rows
    ]
    torch.testing.assert_close(rendered(x), model(x))


FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU()).eval(), (torch.randn(2, 8, 16),)
    """
)


def test_tilefuse_tune_fills_the_tuning_file_and_prints_the_choices(
    private_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TILEFUSE_TUNE", "0")  # the command measures whatever this says
    tuning._open.cache_clear()
    path = tmp_path / "tune_factory.py"
    path.write_text(FACTORY)
    try:
        assert cli.main(["tune", f"{path}:build"]) == 0
        out = capsys.readouterr().out
        assert "choices on " in out and "m=16 k=16 n=32 x=row bias=- into=slot" in out
        assert " measured " in out
        assert cli.main(["tune", f"{path}:build", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert [c["why"] for c in report["choices"]] == ["cached"]
        assert Path(report["tuning_file"]).is_file()
    finally:
        sys.modules.pop("_tilefuse_factory_tune_factory", None)
        tuning._open.cache_clear()


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv = heads, nn.Linear(d, 3 * d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(b, s, d)


@pytest.mark.parametrize("forced", ["native", "torch"])
def test_attention_is_a_measured_choice_and_both_candidates_compute_it(
    tuned: Path, forced: str
) -> None:
    torch.manual_seed(0)
    model, x = SelfAttention(32, 4).eval(), torch.randn(2, 24, 32)
    c = compile_checked(model, x)
    ((call, choice),) = [(call, ch) for call, ch in c.choices.rows if ch.kind == "attention"]
    assert choice.why == "measured" and set(choice.times_us) == {"native", "torch"}
    assert choice.shape.startswith("q=[2, 4, 24, 8]/") and "causal=1" in choice.shape
    (path,) = tuned.glob("*.jsonl")
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(
        "".join(
            json.dumps({**e, "choice": forced} if e["kind"] == "attention" else e) + "\n"
            for e in entries
        )
    )
    tuning._open.cache_clear()
    source = compile_checked(model, x).source("llvm")
    native = f"native attention {call}" in source
    assert native == (forced == "native"), source
    assert ("F.scaled_dot_product_attention(" in source) == (forced == "torch"), source
