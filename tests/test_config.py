"""TILEFUSE_* environment variables: a value tilefuse cannot use is a ConfigError naming the
variable, its value and what it may hold, wherever it is first read."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compiler
from compiler.core import config


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TILEFUSE_DEBUG", "yes", "TILEFUSE_DEBUG must be an integer from 0 to 4, got 'yes'"),
        ("TILEFUSE_DEBUG", "7", "TILEFUSE_DEBUG must be an integer from 0 to 4, got '7'"),
        ("TILEFUSE_NUM_THREADS", "0", "TILEFUSE_NUM_THREADS must be an integer >= 1, got '0'"),
        ("TILEFUSE_NUM_THREADS", "-2", "TILEFUSE_NUM_THREADS must be an integer >= 1, got '-2'"),
        ("TILEFUSE_COMPILE_JOBS", "many", "TILEFUSE_COMPILE_JOBS must be an integer >= 1"),
        ("TILEFUSE_GEMM", "blis", "TILEFUSE_GEMM must be one of auto, mkl, onednn, got 'blis'"),
        ("TILEFUSE_CPU", "avx2", "TILEFUSE_CPU must be one of native, x86-64-v3, x86-64-v4, got"),
        ("TILEFUSE_ISA", "avx2", "TILEFUSE_ISA is not read: set TILEFUSE_CPU"),
        ("TILEFUSE_TUNE", "yes", "TILEFUSE_TUNE must be 0 or 1, got 'yes'"),
        ("TILEFUSE_LOG", "fusion,tiles", "TILEFUSE_LOG names no logger 'tiles'; it may name"),
    ],
)
def test_a_bad_value_names_the_variable_and_what_it_may_hold(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(compiler.ConfigError, match=message):
        config.load()
    with pytest.raises(ValueError, match=message):  # a ValueError too
        compiler.compile(lambda x: x + 1, (torch.ones(2),), backend="numpy")


@pytest.mark.parametrize("name", ["TILEFUSE_DUMP", "TILEFUSE_CACHE_DIR"])
def test_a_directory_variable_naming_a_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str
) -> None:
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    monkeypatch.setenv(name, str(file))
    with pytest.raises(compiler.ConfigError, match=f"{name} must name a directory, got .*a file"):
        config.load()
    monkeypatch.setenv(name, str(tmp_path / "new"))  # one that does not exist yet: made later
    assert config.load()


def test_good_values_and_empty_ones_are_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in [("TILEFUSE_DEBUG", "0"), ("TILEFUSE_LOG", " fusion , fold "),
                        ("TILEFUSE_GEMM", " MKL "), ("TILEFUSE_NUM_THREADS", "")]:  # fmt: skip
        monkeypatch.setenv(name, value)
    cfg = config.load()
    assert (cfg.debug, cfg.log, cfg.gemm, cfg.num_threads) == (0, ("fusion", "fold"), "mkl", None)
