"""explain: per-kernel rows and totals, the eager/lower-bound/model-minimum references, several
GPUs ranked, the CLI, and the gpt2 fp16 figures on h100."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import compiler
from compiler import cli
from compiler.explain import eager_bytes, model_min_bytes
from examples import gpt2
from tests.helpers import ir


@pytest.fixture(scope="module")
def mlp() -> compiler.Compiled:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.LayerNorm(128)).eval()
    return compiler.compile(model, (torch.randn(8, 64),), backend="numpy")


def test_report_prints_a_table_and_totals(mlp: compiler.Compiled) -> None:
    report = mlp.explain("h100")
    text = str(report)
    for k in mlp.kernels:
        assert k.name in text
    assert "on h100" in text and "total:" in text and "eager" in text
    d = report.to_dict()
    assert d["gpu"] == "h100" and len(d["kernels"]) == len(mlp.kernels)
    totals = d["totals"]
    for key in ("bytes", "eager_bytes", "lower_bound_bytes", "model_min_bytes", "flops"):
        assert totals[key] > 0, key
    assert totals["est_time_s"] == pytest.approx(sum(r["est_time_s"] for r in d["kernels"]))
    assert totals["model_min_bytes"] <= totals["lower_bound_bytes"] <= totals["bytes"]
    assert totals["flops"] >= 2 * 8 * 64 * 128
    row = d["kernels"][0]
    assert (
        row["kind"] == "matmul"
        and "matmul" in row["ops"]
        and row["bound"]
        in (
            "memory",
            "compute",
        )
    )


def test_default_gpu_and_several_gpus(mlp: compiler.Compiled) -> None:
    if not torch.cuda.is_available():
        assert mlp.explain().to_dict()["gpu"] == "h100"
    report = mlp.explain(["h100", "l4", "mi300x"])
    d = report.to_dict()
    assert set(d["per_gpu"]) == {"h100", "l4", "mi300x"}
    assert sorted(d["ranking"]["time"]) == ["h100", "l4", "mi300x"]
    assert d["ranking"]["energy"][0] == "l4"  # 72 W
    assert all(g["totals"]["fits"] for g in d["per_gpu"].values())
    assert "ranking" in str(report)
    with pytest.raises(ValueError, match="known: a100"):
        mlp.explain("v100")


def test_eager_bytes_views_and_sources_are_free() -> None:
    g = ir("""
def f(x: f32[4,8], w: f32[16,8]):
    v0: f32[8,16] = permute(w, dims=(1, 0))
    v1: f32[4,16] = matmul(x, v0)
    v2: f32[()] = full(value=2.0, shape=(), dtype=f32)
    v3: f32[4,16] = mul(v1, v2)
    return (v3,)
""")
    # matmul reads x, w (through the permute), writes v1; mul reads v1 and the 0-d full
    assert eager_bytes(g) == (32 + 128 + 64) * 4 + (64 + 1 + 64) * 4
    assert model_min_bytes(g) == (32 + 128 + 64) * 4


def test_gpt2_fp16_h100_traffic() -> None:
    """The explain target: plan <= 0.75x eager op-by-op and <= 1.3x the plan's lower bound."""
    model, inputs = gpt2.build(seq=1024, hidden=768, heads=12, dtype=torch.float16)
    c = compiler.compile(model, inputs, backend="numpy")
    t = c.explain("h100").to_dict()["totals"]
    ratios = (t["bytes"] / t["eager_bytes"], t["bytes"] / t["lower_bound_bytes"])
    print(f"gpt2 fp16 h100: plan/eager {ratios[0]:.3f}, plan/lower bound {ratios[1]:.3f}")
    assert ratios[0] <= 0.75 and ratios[1] <= 1.3, ratios


def test_hf_gpt2_fp16_h100_traffic() -> None:
    """The explain target: HF GPT2Model (GELU and masks decomposed in the captured graph) at the
    same size moves <= 0.5x eager op-by-op."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(
        n_layer=4, n_embd=768, n_head=12, n_positions=1024, use_cache=False
    )
    torch.manual_seed(0)
    hf = transformers.GPT2Model(cfg).eval().to(torch.float16)
    c = compiler.compile(hf, (torch.randint(0, 1024, (1, 1024)),), backend="numpy")
    t = c.explain("h100").to_dict()["totals"]
    assert t["bytes"] / t["eager_bytes"] <= 0.5, t
    assert t["bytes"] / t["lower_bound_bytes"] <= 1.3, t


FACTORY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build(dtype=torch.float32):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.LayerNorm(16)).eval().to(dtype)
        return model, (torch.randn(2, 8).to(dtype),)
    """
)


def test_cli_profiles_and_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["profiles"]) == 0
    out = capsys.readouterr().out
    assert "mi300x" in out and "989.4" in out
    f = tmp_path / "tiny.py"
    f.write_text(FACTORY)
    assert cli.main(["explain", f"{f}:build", "--gpu", "h100,mi300x"]) == 0
    out = capsys.readouterr().out
    assert "on h100" in out and "on mi300x" in out and "ranking" in out
    assert cli.main(["explain", f"{f}:build", "--gpu", "l4", "--json"]) == 0
    assert '"gpu": "l4"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="unknown GPU profile"):
        cli.main(["explain", f"{f}:build", "--gpu", "v100"])


def test_shape_advisor_names_the_padded_dimension() -> None:
    torch.manual_seed(0)
    model = nn.Linear(1000, 1000).eval().half()
    c = compiler.compile(model, (torch.randn(4096, 1000).half(),), backend="numpy")
    advice = c.explain("h100").advice
    assert any(a.startswith("N 1000 pads to 1024") and "N 896 would save it" in a for a in advice)
    assert "advice:" in str(c.explain("h100"))
    aligned = nn.Linear(1024, 1024).eval().half()
    c = compiler.compile(aligned, (torch.randn(4096, 1024).half(),), backend="numpy")
    assert c.explain("h100").advice == ()


def test_compile_for_a_gpu_tiles_every_kernel() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.LayerNorm(128)).eval()
    x = torch.randn(8, 64)
    lazy = compiler.compile(model, (x,), backend="numpy")
    assert all(k.tile is None for k in lazy.kernels)  # without gpu=, compile does not tile
    c = compiler.compile(model, (x,), backend="numpy", gpu="mi300x")
    assert all(k.tile is not None and k.tile.gpu == "mi300x" for k in c.kernels)
    text = str(c.schedule)
    assert text.count("tile (mi300x): ") == len(c.kernels) and text.count("why: ") == len(c.kernels)
    d = c.explain().to_dict()  # no argument: the compiled-for GPU, with the compiled tiles
    assert d["gpu"] == "mi300x"
    assert [r["tile"] for r in d["kernels"]] == [k.tile.short for k in c.kernels]
    assert d == lazy.explain("mi300x").to_dict()  # tiling now or lazily: the same plan
    torch.testing.assert_close(c(x), model(x))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_roofline_plot(mlp: compiler.Compiled, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    report = mlp.explain(["h100", "mi300x", "l4"])
    path = report.plot(tmp_path / "sub" / "roofline.png")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 20_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 1000  # 2 x 2 panels for three GPUs


def test_roofline_plot_without_matplotlib(
    mlp: compiler.Compiled, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] == "matplotlib":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(RuntimeError, match="needs matplotlib"):
        mlp.explain("h100").plot(tmp_path / "r.png")
    assert not (tmp_path / "r.png").exists()


def test_cli_explain_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    f = tmp_path / "tiny.py"
    f.write_text(FACTORY)
    png = tmp_path / "roofline.png"
    assert cli.main(["explain", f"{f}:build", "--gpu", "h100,mi300x", "--plot", str(png)]) == 0
    captured = capsys.readouterr()
    assert "on mi300x" in captured.out and str(png) in captured.err
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 20_000


def test_cli_explain_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--targets` adds the per-kernel target table after the plan (also as JSON, also for
    a saved artifact, whose tiles for its compiled-for GPU are the ones compiled); progress
    goes to stderr. A few seconds cold (two kernels for sm_80)."""
    monkeypatch.setenv("TILEFUSE_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "tiny.py"
    f.write_text(FACTORY)
    argv = ["explain", f"{f}:build", "--gpu", "a100", "--dtype", "float16", "--targets"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    plan, _, targets = captured.out.partition("target verification")
    assert "on a100" in plan and "total:" in plan
    assert "a100 (cuda:80/32): 2 kernels" in targets and "HMMA:" in targets
    assert "2/2 kernels, 2 compiled" in captured.err
    assert cli.main([*argv, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    entries = d["targets"]["kernels"]
    assert [e["kernel"] for e in entries] == [r["name"] for r in d["kernels"]]
    assert all(e["ok"] and e["spill_bytes"] == 0 for e in entries)
    model, inputs = cli.build_example(f"{f}:build", "float16")
    path = compiler.compile(model, inputs, gpu="a100", backend="numpy").save(tmp_path / "art")
    assert cli.main(["explain", str(path), "--targets"]) == 0
    captured = capsys.readouterr()
    assert "a100 (cuda:80/32): 2 kernels" in captured.out
    assert "0 compiled, 2 from the cache" in captured.err  # the same kernels and tiles
