"""An artifact that cannot lie: every file damaged, truncated, missing or replaced after saving
is an `ArtifactError` naming it, before anything is loaded (Note [An artifact cannot lie] in
compiler/artifact.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import compiler
from compiler.core.errors import ArtifactError

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor, torch.Tensor]:
    """An llvm artifact (with kernels.so), its example input and its output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.LayerNorm(32)).eval()
    x = torch.randn(4, 16)
    c = compiler.compile(model, (x,), backend="llvm")
    path = c.save(tmp_path_factory.mktemp("artifact") / "mlp")
    assert (path / "kernels.so").is_file()
    return path, x, c(x)


def _copy(saved: tuple[Path, torch.Tensor, torch.Tensor], tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[0], tmp_path / "copy"))


def _largest(path: Path) -> Path:
    return max((f for f in path.rglob("*") if f.is_file()), key=lambda f: f.stat().st_size)


def test_an_intact_copy_loads_and_runs(saved, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    (path / "NOTES.txt").write_text("a file the artifact does not list is ignored\n")
    torch.testing.assert_close(compiler.load(path)(saved[1]), saved[2], rtol=0, atol=0)


def test_the_manifest_records_every_file(saved) -> None:
    path = saved[0]
    manifest = json.loads((path / "manifest.json").read_text())
    on_disk = {f.relative_to(path).as_posix() for f in path.rglob("*") if f.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    assert all(len(f["sha256"]) == 64 for f in manifest["files"].values())


def test_one_byte_flipped_in_the_largest_file(saved, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    largest = _largest(path)
    data = bytearray(largest.read_bytes())
    data[len(data) // 2] ^= 0x01
    largest.write_bytes(bytes(data))
    name = largest.relative_to(path).as_posix()
    with pytest.raises(ArtifactError, match=rf"{name} differs from the file saved \(SHA-256"):
        compiler.load(path)


def test_bytes_flipped_in_kernels_so_never_reach_the_loader(saved, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    data = bytearray((path / "kernels.so").read_bytes())
    for i in range(64):
        data[len(data) // 3 + i] ^= 0xFF
    (path / "kernels.so").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"kernels\.so differs from the file saved"):
        compiler.load(path)


@pytest.mark.parametrize(
    "name", ["weights.safetensors", "schedule.json", "program.json", "kernels.so"]
)
def test_a_truncated_file_is_named(saved, tmp_path: Path, name: str) -> None:
    path = _copy(saved, tmp_path)
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2])
    want = rf"{name} is {len(data) // 2} bytes, it was saved with {len(data)}: truncated"
    with pytest.raises(ArtifactError, match=want):
        compiler.load(path)


@pytest.mark.parametrize("name", ["kernels.so", "weights.safetensors", "constants.npz"])
def test_a_missing_file_is_named(saved, tmp_path: Path, name: str) -> None:
    path = _copy(saved, tmp_path)
    (path / name).unlink()
    with pytest.raises(ArtifactError, match=rf"{name} is missing \(the manifest lists it\)"):
        compiler.load(path)


def test_a_damaged_manifest_is_named(saved, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text[: len(text) // 2])
    with pytest.raises(ArtifactError, match=r"manifest.json cannot be read"):
        compiler.load(path)
    (path / "manifest.json").write_text("[1, 2]\n")
    with pytest.raises(ArtifactError, match="artifact format None"):
        compiler.load(path)


def test_weights_are_data_and_tied_weights_stay_tied(tmp_path: Path) -> None:
    """safetensors, not a pickle: a tied weight is stored once and loads as one tensor."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(32, 8)
            self.head = nn.Linear(8, 32, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.embed(ids))

    torch.manual_seed(0)
    model, ids = Tied().eval(), torch.tensor([[1, 5, 7]])
    c = compiler.compile(model, (ids,), backend="llvm")
    path = c.save(tmp_path / "tied")
    assert (path / "weights.safetensors").read_bytes()[8:9] == b"{"  # a JSON header, then data
    loaded = compiler.load(path)
    state = loaded.captured.module.tensors
    assert len({t.data_ptr() for t in state.values()}) == 1, sorted(state)
    torch.testing.assert_close(loaded(ids), c(ids), rtol=0, atol=0)
