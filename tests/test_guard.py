"""The guard (compiler/guard.py): a module changed since the compile in what the graph read as
constants makes `compile`d models raise, naming what changed, and `jit` recompile; a change the
graph follows (weights, a module swapped for one of the same class and shapes) is run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import compiler


class Gated(nn.Module):
    """A custom module the guard knows nothing of: a flag, a dict and a list `forward` reads."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.adapters = nn.ModuleDict({"a": nn.Linear(8, 8), "b": nn.Linear(8, 8)})
        self.active = "a"
        self.use_gate = True
        self.scales = {"a": 1.0, "b": 0.5}
        self.merged: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        if self.active not in self.merged:
            y = y + self.adapters[self.active](x) * self.scales[self.active]
        return torch.sigmoid(y) * x if self.use_gate else y


def _model() -> tuple[Gated, torch.Tensor]:
    torch.manual_seed(0)
    return Gated().eval(), torch.randn(4, 8)


def _new_linear() -> nn.Module:
    return nn.Linear(8, 8).eval()


CHANGES: dict[str, tuple[Callable[[Gated], None], str]] = {
    "a flag forward branches on": (
        lambda m: setattr(m, "use_gate", False), "<root>.use_gate True -> False"
    ),
    "the active adapter": (lambda m: setattr(m, "active", "b"), "<root>.active 'a' -> 'b'"),
    "a value in a dict": (
        lambda m: m.scales.update(a=2.0),
        "<root>.scales {'a': 1.0, 'b': 0.5} -> {'a': 2.0, 'b': 0.5}",
    ),
    "an item appended to a list": (lambda m: m.merged.append("a"), "<root>.merged [] -> ['a']"),
    "training mode": (lambda m: m.train(), "<root>.training False -> True"),
    "a submodule of another class": (
        lambda m: setattr(m, "proj", nn.Sequential(_new_linear(), nn.ReLU())),
        "proj (its class) Linear -> Sequential",
    ),
    "a parameter of another shape": (
        lambda m: setattr(m.proj, "bias", nn.Parameter(torch.zeros(1))),
        "proj.bias (parameter) a float32 tensor [8] -> a float32 tensor [1]",
    ),
    "a module added to a ModuleDict": (
        lambda m: m.adapters.update({"c": _new_linear()}),
        "adapters (its children) ('a', 'b') -> ('a', 'b', 'c')",
    ),
}  # fmt: skip


@pytest.mark.parametrize("backend", ["llvm", "numpy"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_a_change_the_graph_does_not_follow(backend: str, change: str) -> None:
    model, x = _model()
    c = compiler.compile(model, (x,), backend=backend)
    f = compiler.jit(model, backend=backend)
    torch.testing.assert_close(f(x), c(x))
    act, what = CHANGES[change]
    act(model)
    with pytest.raises(compiler.ModuleChangedError) as caught:
        c(x)
    assert what in str(caught.value), str(caught.value)
    assert "Gated: the module changed since it was compiled" in str(caught.value)
    if change != "a parameter of another shape":  # eager itself fails then
        torch.testing.assert_close(f(x), model(x), rtol=1e-5, atol=1e-5)
        assert f.stats["compiles"] == 2


def test_changes_the_graph_follows_are_run() -> None:
    model, x = _model()
    c = compiler.compile(model, (x,), backend="llvm")
    with torch.no_grad():
        model.proj.weight.mul_(2)  # weights are inputs
    model.proj = _new_linear()  # same class, same shapes, eval: its weights are read
    model.adapters["a"].bias = nn.Parameter(torch.ones(8))  # same shape
    model.use_gate = True  # written, not changed
    torch.testing.assert_close(c(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_change_undone_runs_again() -> None:
    model, x = _model()
    c = compiler.compile(model, (x,), backend="llvm")
    model.use_gate = False
    with pytest.raises(compiler.ModuleChangedError):
        c(x)
    model.use_gate = True
    torch.testing.assert_close(c(x), model(x), rtol=1e-5, atol=1e-5)


def test_a_module_a_function_closes_over_is_guarded() -> None:
    model, x = _model()
    c = compiler.compile(lambda x: model(x) * 2, (x,), backend="llvm")
    model.active = "b"
    with pytest.raises(compiler.ModuleChangedError, match=r"captured_0\.active 'a' -> 'b'"):
        c(x)


def test_a_loaded_artifact_has_no_module_to_watch(tmp_path: Path) -> None:
    model, x = _model()
    want = compiler.compile(model, (x,), backend="llvm")(x)
    loaded = compiler.load(compiler.compile(model, (x,), backend="llvm").save(tmp_path / "g"))
    model.use_gate = False  # the artifact owns its weights and structure
    torch.testing.assert_close(loaded(x), want, rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute")  # a 2nd adapter
def test_peft_adapters_on_a_diffusers_unet() -> None:
    """set_adapter, disable_adapters and enable_adapters on a UNet with two LoRA adapters:
    `compile` raises naming the layer's adapter state, `jit` recompiles and matches eager."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, norm_num_groups=8,
    ).eval()  # fmt: skip
    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    unet.add_adapter(LoraConfig(r=4, target_modules=targets, init_lora_weights=False), "a")
    unet.add_adapter(LoraConfig(r=2, target_modules=targets[:2], init_lora_weights=False), "b")
    unet.set_adapter("a")
    args = (torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 7, 32))
    c = compiler.compile(unet, args, backend="llvm")
    f = compiler.jit(unet, backend="llvm")
    f(*args)
    steps = [
        (lambda: unet.set_adapter("b"), r"_active_adapter \['a'\] -> \['b'\]"),
        (unet.disable_adapters, "_disable_adapters False -> True"),
        (unet.enable_adapters, r"_active_adapter \['a'\] -> \['b'\]"),
    ]
    for act, what in steps:
        act()
        with pytest.raises(compiler.ModuleChangedError, match=what):
            c(*args)
        want = unet(*args).sample
        torch.testing.assert_close(f(*args).sample, want, rtol=1e-4, atol=1e-4)
    assert f.stats["compiles"] == 4


def test_torch_compile_of_the_same_model_is_no_change_and_sees_no_guard() -> None:
    """torch.compile sets `_is_torch_compile` on the module (added, never read by our graph),
    and its traces of code that registers modules (a ModuleList slice) must not see the
    guard's count: no recompiles."""
    from torch._dynamo.utils import counters

    class Layers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers[:2]:
                x = layer(x)
            return x

    torch.manual_seed(0)
    model, x = Layers().eval(), torch.randn(2, 8)
    c = compiler.compile(model, (x,), backend="llvm")
    torch._dynamo.reset()
    counters.clear()
    inductor = torch.compile(model)
    for _ in range(4):
        inductor(x)
    assert dict(counters["frames"]) == {"total": 1, "ok": 1}, dict(counters["frames"])
    torch.testing.assert_close(c(x), model(x), rtol=1e-5, atol=1e-5)
