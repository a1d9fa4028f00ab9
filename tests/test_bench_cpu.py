"""Smoke test of benchmarks/cpu_speed.py: it runs, and its table has the promised columns.

Timings are never asserted. Repro: pytest tests/test_bench_cpu.py
"""

from __future__ import annotations

import pytest

from benchmarks import cpu_speed

FAST = ["--backend", "numpy", "--runs", "2", "--no-cold", "--no-rss", "--tiny"]


def test_table_has_the_expected_columns(capsys, tmp_path) -> None:
    out = tmp_path / "RESULTS.md"
    rows = cpu_speed.main([*FAST, "--models", "gpt2", "--no-inductor", "--write", str(out)])
    assert [row["model"] for row in rows] == ["gpt2"]
    assert tuple(rows[0]) == cpu_speed.COLUMNS
    assert rows[0]["parity"] == "PASS"
    assert rows[0]["ours ms"] != "-" and rows[0]["GEMM floor ms"] != "-"
    header = "| " + " | ".join(cpu_speed.COLUMNS) + " |"
    assert header in capsys.readouterr().out
    text = out.read_text()
    assert header in text and "cpu_speed.py" in text and "torch threads" in text
    run = text.splitlines()[text.splitlines().index(cpu_speed.HEADER.splitlines()[-1]) + 2]
    assert run.startswith("## ") and cpu_speed.commit() in run and cpu_speed.cpu_name() in run
    cpu_speed.main([*FAST, "--models", "gpt2", "--no-inductor", "--write", str(out)])
    again = out.read_text()
    assert again.count("\n## ") == 2 and again.endswith(text[text.index("\n## ") + 1 :])


@pytest.mark.slow
def test_with_inductor_and_fresh_processes() -> None:
    """torch.compile in-process and cold, and the fresh-process RSS columns (about a minute)."""
    args = ["--backend", "numpy", "--runs", "2", "--tiny", "--models", "llama", "--rss-runs", "1"]
    rows = cpu_speed.main(args)
    measured = ("inductor ms", "frozen ms", "ours cold s", "inductor cold s", "RSS eager MiB",
                "RSS ours MiB", "RSS JIT MiB")  # fmt: skip
    for column in measured:
        assert rows[0][column] != "-", column


def test_unknown_model_is_refused() -> None:
    with pytest.raises(SystemExit):
        cpu_speed.main(["--models", "nope"])
