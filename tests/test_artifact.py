"""Saved artifacts: c.save / compiler.load / tilefuse compile / tilefuse run.

Repro: .venv/bin/python -m pytest tests/test_artifact.py -q
"""

from __future__ import annotations

import json
import logging
import marshal
import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import compiler
import compiler.api
import compiler.artifact as artifact_files
import compiler.artifact_load as artifact
import passes.fusion
import passes.pipeline
from backends.llvm import jit as llvm_jit
from backends.llvm import runtime as llvm_runtime
from compiler import cli
from compiler.core import serialize
from compiler.core.errors import ArtifactError
from compiler.core.ir import ConstArray, Graph, GraphBuilder, Value
from compiler.core.types import DType, TensorType
from compiler.frontend import capture as frontend


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 32)
        self.out = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> dict[str, torch.Tensor]:
        h = self.out(torch.nn.functional.gelu(self.fc(self.ln(x)), approximate="tanh"))
        return {"y": x + h * scale, "mask": (h > 0)}


@pytest.fixture
def block() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return Block().eval(), torch.randn(2, 5, 16)


pytestmark = pytest.mark.usefixtures("private_cache")


def test_graph_json_round_trip_keeps_every_attribute_kind() -> None:
    x = Value("x", TensorType((2, 3), DType.f32))
    b = GraphBuilder("g", [x])
    table = ConstArray.of(np.arange(40.0, dtype=np.float32).reshape(5, 8))
    c = b.add("constant", [], {"value": table, "dtype": DType.f32})
    m = b.add("full", [], {"shape": (), "value": -0.0, "dtype": DType.f32})
    inf = b.add("full", [], {"shape": (2, 3), "value": -math.inf, "dtype": DType.f32})
    y = b.add("maximum", [b.add("add", ["x", m]), inf])
    g = b.build([y, c])
    constants: dict[str, np.ndarray] = {}
    data = json.loads(json.dumps(serialize.encode_graph(g, constants)))
    back = serialize.decode_graph(data, constants)
    assert back == g
    assert str(back) == str(g)
    assert math.copysign(1.0, back.nodes[1].attr("value")) == -1.0  # -0.0 survives


def test_decode_rejects_a_graph_that_breaks_the_type_rules() -> None:
    x = Value("x", TensorType((2, 3), DType.f32))
    g = Graph("g", (x,), (), ("x",))
    data = serialize.encode_graph(g, {})
    out = {"name": "y", "shape": [9], "dtype": "f32"}
    data["nodes"].append({"op": "exp", "inputs": ["x"], "attrs": [], "out": out, "source": ""})
    data["outputs"] = ["y"]
    with pytest.raises(compiler.VerifyError):
        serialize.decode_graph(data, {})


def test_schedule_round_trips_with_tiles_and_plan(block: tuple[nn.Module, torch.Tensor]) -> None:
    model, x = block
    schedule = compiler.compile(model, (x,), gpu="mi300x", backend="numpy").schedule
    assert all(k.tile is not None for k in schedule.kernels)
    constants: dict[str, np.ndarray] = {}
    data = json.loads(json.dumps(serialize.encode_schedule(schedule, constants)))
    back = serialize.decode_schedule(data, constants)
    assert back == schedule
    assert str(back) == str(schedule)


def _saved_as_it_is(path: Path) -> None:
    """Record the artifact's files as they are now in its manifest, as if saved so."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = artifact_files.file_digests(path)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_save_load_runs_without_tracing(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = block
    c = compiler.compile(model, (x,), {"scale": 0.5})
    path = c.save(tmp_path / "block")
    assert {
        "manifest.json",
        "schedule.json",
        "weights.safetensors",
        "example.pt",
        "graph.py",
        "llvm.txt",
    } <= {p.name for p in path.iterdir()}
    want = c(x, scale=0.5)

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("load must not trace the model")

    monkeypatch.setattr(frontend, "export_program", no_export)
    monkeypatch.setattr(passes.pipeline, "run_pipeline", no_export)
    monkeypatch.setattr(passes.fusion, "fuse_kernels", no_export)
    before = dict(llvm_jit.STATS)
    loaded = compiler.load(path)
    assert llvm_jit.STATS["compiled"] == before["compiled"]  # the saved object code was used
    assert loaded.artifact == path and loaded.backend == "llvm"
    got = loaded(x, scale=0.5)
    assert set(got) == {"y", "mask"}
    torch.testing.assert_close(got["y"], want["y"], rtol=0, atol=0)
    assert torch.equal(got["mask"], want["mask"])
    with pytest.raises(compiler.InputMismatchError):
        loaded(x, scale=2.0)  # specialized on the example value, as the compiled model
    numpy = compiler.load(path, backend="numpy")
    torch.testing.assert_close(numpy(x, scale=0.5)["y"], want["y"], rtol=1e-5, atol=1e-5)


def test_the_driver_is_loaded_compiled_by_the_same_python_only(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Note [A compiled driver]: no compile of the driver's source at load, unless another
    # Python saved it (another bytecode magic) or it is another driver's
    model, x = block
    path = compiler.compile(model, (x,)).save(tmp_path / "block")
    assert (path / "driver.bin").is_file()
    want = model(x)["y"]
    compiled_sources: list[str] = []
    real_compile = compile

    def counting_compile(source: object, filename: str, *args: object, **kwargs: object) -> object:
        if str(filename).startswith("<tilefuse-llvm:"):
            compiled_sources.append(filename)
        return real_compile(source, filename, *args, **kwargs)

    monkeypatch.setattr(llvm_runtime, "compile", counting_compile, raising=False)
    loaded = compiler.load(path)
    torch.testing.assert_close(loaded(x)["y"], want, rtol=1e-5, atol=1e-5)
    assert compiled_sources == []
    blob = (path / "driver.bin").read_bytes()
    other_magic = b"\0\0\0\0" + blob[4:]
    other_driver = blob[:4] + marshal.dumps(compile("x = 1", "<tilefuse-llvm:other>", "exec"))
    for stale in (other_magic, other_driver):
        (path / "driver.bin").write_bytes(stale)
        _saved_as_it_is(path)  # as saved by another Python
        loaded = compiler.load(path)
        torch.testing.assert_close(loaded(x)["y"], want, rtol=1e-5, atol=1e-5)
    assert len(compiled_sources) == 2


def test_weights_are_copied_in(block: tuple[nn.Module, torch.Tensor], tmp_path: Path) -> None:
    model, x = block
    path = compiler.compile(model, (x,)).save(tmp_path / "block")
    before = compiler.load(path)(x)["y"]
    with torch.no_grad():
        model.fc.weight.mul_(3.0)
    torch.testing.assert_close(compiler.load(path)(x)["y"], before, rtol=0, atol=0)


def test_run_saved_checks_parity(block: tuple[nn.Module, torch.Tensor], tmp_path: Path) -> None:
    model, x = block
    path = compiler.compile(model, (x,), backend="numpy").save(tmp_path / "block")
    report = artifact.run_saved(path)
    assert report.ok
    assert [r.output for r in report.rows] == ["['y']", "['mask']"]
    assert {r.backend for r in artifact.run_saved(path, backend="llvm").rows} == {"llvm"}


def test_run_saved_fails_on_a_wrong_artifact(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = block
    path = compiler.compile(model, (x,), backend="numpy").save(tmp_path / "block")
    weights = artifact_files.load_weights(path / "weights.safetensors")
    weights["fc.bias"] = weights["fc.bias"] + 1.0
    artifact_files.save_weights(weights, path / "weights.safetensors")
    _saved_as_it_is(path)  # a wrong artifact, saved whole
    assert not artifact.run_saved(path).ok


def test_load_errors_say_what_is_wrong(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    with pytest.raises(ArtifactError, match="not a tilefuse artifact"):
        compiler.load(tmp_path / "missing")
    model, x = block
    path = compiler.compile(model, (x,), backend="numpy").save(tmp_path / "b", reference=False)
    with pytest.raises(ArtifactError, match="holds no example inputs"):
        artifact.run_saved(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["versions"]["tilefuse"] = "0.0.1"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"written by tilefuse 0\.0\.1"):
        compiler.load(path)
    manifest["format"] = "something-else"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="artifact format"):
        compiler.load(path)


def test_hugging_face_output_structure_round_trips(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=2, n_positions=16, vocab_size=64,
                                  use_cache=False, bos_token_id=63, eos_token_id=63)  # fmt: skip
    model = transformers.GPT2Model(cfg).eval()
    ids = torch.randint(0, 64, (1, 8))
    path = compiler.compile(model, (ids,)).save(tmp_path / "gpt2")
    loaded = compiler.load(path)
    out = loaded(ids)
    assert type(out).__name__ == "BaseModelOutputWithPastAndCrossAttentions"
    torch.testing.assert_close(out.last_hidden_state, model(ids).last_hidden_state)
    assert artifact.run_saved(path).ok


FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build(dtype=torch.float32):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.SiLU(), nn.LayerNorm(16)).eval().to(dtype)
        return model, (torch.randn(3, 8).to(dtype),)
    """
)


def test_cli_compile_then_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    factory = tmp_path / "aot_factory.py"
    factory.write_text(FACTORY)
    out_dir = tmp_path / "build" / "seq"
    try:
        assert cli.main(["compile", f"{factory}:build", "-o", str(out_dir), "--dtype",
                         "bfloat16"]) == 0  # fmt: skip
    finally:
        sys.modules.pop("_tilefuse_factory_aot_factory", None)
    printed = capsys.readouterr().out
    assert f"wrote {out_dir}/" in printed and "tilefuse run" in printed
    assert cli.main(["run", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert "bfloat16" in printed and printed.rstrip().splitlines()[-1] == "PASS"
    assert cli.main(["run", str(out_dir), "--backend", "numpy"]) == 0
    with pytest.raises(SystemExit, match="not a tilefuse artifact"):
        cli.main(["run", str(tmp_path / "nothing")])


def test_cli_explain_reads_an_artifact(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, x = block
    path = compiler.compile(model, (x,), gpu="l4", backend="numpy").save(tmp_path / "block")
    assert cli.main(["explain", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["per_gpu"]) == ["l4"]  # the GPU it was compiled for
    assert cli.main(["explain", str(path), "--gpu", "h100,mi300x"]) == 0
    printed = capsys.readouterr().out
    assert "h100" in printed and "mi300x" in printed
    with pytest.raises(SystemExit, match="dtype is fixed"):
        cli.main(["explain", str(path), "--dtype", "float16"])


LOAD_WITHOUT_LLVM = """
import sys, torch
import compiler
c = compiler.load(sys.argv[1])
example = torch.load(sys.argv[1] + "/example.pt", weights_only=True)
y = c(*example["args"], **example["kwargs"])
library = c._program("llvm").library
assert type(library).__name__ == "SharedLibrary", library
assert "llvmlite.binding" not in sys.modules, "loading the artifact loaded LLVM"
assert "networkx" not in sys.modules, "loading the artifact imported fusion's networkx"
assert "llvmlite.ir" not in sys.modules, "loading the artifact rendered its kernels again"
assert "backends.llvm.render" not in sys.modules, "loading the artifact imported the renderer"
leaves = torch.utils._pytree.tree_leaves(y)
torch.testing.assert_close(leaves[0], example["eager"][0], rtol=1e-4, atol=1e-4)
print("ok")
"""


class WinogradConv(nn.Module):
    """A 3x3 convolution the llvm backend runs as Winograd: its weight is transformed on the
    first call, on the load path."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(self.conv(x))


@pytest.mark.parametrize("kind", ["block", "winograd"])
def test_load_opens_the_shared_library_without_llvm(
    kind: str, block: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    import subprocess

    torch.manual_seed(0)
    model, x = block if kind == "block" else (WinogradConv().eval(), torch.randn(1, 32, 8, 8))
    c = compiler.compile(model, (x,))
    if kind == "winograd":
        assert "Winograd F(2x2,3x3)" in c.source("llvm")
    path = c.save(tmp_path / "block")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["program"]["library"] == "kernels.so"
    done = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_LLVM, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_load_on_another_cpu_compiles_through_the_jit(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.llvm import aot as llvm_aot

    model, x = block
    c = compiler.compile(model, (x,))
    path = c.save(tmp_path / "block")
    monkeypatch.setattr(llvm_aot, "_fingerprint", lambda level: "another-cpu")
    loaded = compiler.load(path)
    assert loaded._program("llvm").library is None
    torch.testing.assert_close(loaded(x)["y"], c(x)["y"], rtol=0, atol=0)


def test_load_with_changed_kernels_does_not_use_the_library(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = block
    c = compiler.compile(model, (x,))
    path = c.save(tmp_path / "block")
    manifest = json.loads((path / "manifest.json").read_text())
    symbol = next(iter(manifest["program"]["kernels"]))
    manifest["program"]["kernels"][symbol] = "0" * 16  # as if built from other IR
    (path / "manifest.json").write_text(json.dumps(manifest))
    loaded = compiler.load(path)
    assert loaded._program("llvm").library is None
    torch.testing.assert_close(loaded(x)["y"], c(x)["y"], rtol=0, atol=0)


def test_load_at_another_thread_count_renders_the_program_again(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backends.llvm.runtime import SavedModule
    from compiler.core import config

    model, x = block
    c = compiler.compile(model, (x,))
    path = c.save(tmp_path / "block")
    saved = compiler.load(path)._program("llvm")
    assert all(isinstance(m, SavedModule) for m in saved.modules.values())
    assert saved.source == c.source()
    saved_threads = config.num_threads()
    monkeypatch.setattr(config, "num_threads", lambda: saved_threads + 1)
    loaded = compiler.load(path)
    assert not any(isinstance(m, SavedModule) for m in loaded._program("llvm").modules.values())
    torch.testing.assert_close(loaded(x)["y"], c(x)["y"], rtol=0, atol=0)


def test_a_loaded_artifact_saves_again(
    block: tuple[nn.Module, torch.Tensor], tmp_path: Path
) -> None:
    model, x = block
    c = compiler.compile(model, (x,))
    loaded = compiler.load(c.save(tmp_path / "a"))
    again = compiler.load(loaded.save(tmp_path / "b", reference=False))
    assert (tmp_path / "b" / "program.json").read_text() == (
        tmp_path / "a" / "program.json"
    ).read_text()
    torch.testing.assert_close(again(x)["y"], c(x)["y"], rtol=0, atol=0)


def test_an_artifact_for_a_cpu_level_runs_its_library_on_any_cpu_with_the_level(
    block: tuple[nn.Module, torch.Tensor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Note [Code for a level] in backends/llvm/aot.py
    from backends.llvm import aot as llvm_aot

    flags = set(llvm_aot.cpu_fields().get("flags", "").split())
    if not llvm_aot.LEVEL_FLAGS["x86-64-v3"] <= flags:
        pytest.skip("this CPU cannot run x86-64-v3 code")
    model, x = block
    monkeypatch.setenv("TILEFUSE_CPU", "x86-64-v3")
    c = compiler.compile(model, (x,))
    path = c.save(tmp_path / "block")
    monkeypatch.delenv("TILEFUSE_CPU")

    def another_cpu(cpu_flags: set[str]) -> None:
        fields = {
            "vendor_id": "GenuineIntel",
            "model name": "Another CPU",
            "flags": " ".join(cpu_flags),
        }
        monkeypatch.setattr(llvm_aot, "cpu_fields", lambda: fields)
        llvm_aot._fingerprint.cache_clear()

    try:
        another_cpu(set(llvm_aot.LEVEL_FLAGS["x86-64-v3"]) | {"sse4_2"})  # no AVX-512
        loaded = compiler.load(path)
        assert isinstance(loaded._program("llvm").library, llvm_aot.SharedLibrary)
        torch.testing.assert_close(loaded(x)["y"], c(x)["y"], rtol=0, atol=0)

        another_cpu(set(llvm_aot.LEVEL_FLAGS["x86-64-v3"]) - {"avx2", "fma"})
        with caplog.at_level(logging.INFO, logger="tilefuse.artifact"):
            fallback = compiler.load(path)
        assert fallback._program("llvm").library is None
        assert "built for x86-64-v3, which this CPU lacks (avx2, fma)" in caplog.text
    finally:
        llvm_aot._fingerprint.cache_clear()
