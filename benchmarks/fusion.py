"""Fusion figures per model: kernels, kernels per block, planned vs eager intermediate memory.

python benchmarks/fusion.py            # the examples at their default sizes + HF models
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import compiler  # noqa: E402
from examples import dit, gpt2, llama, unet  # noqa: E402
from tests.test_fusion import kernels_per_block  # noqa: E402


def hf_gpt2() -> tuple[Any, tuple[Any, ...]]:
    from transformers import GPT2Config, GPT2Model

    cfg = GPT2Config(
        n_layer=4, n_embd=512, n_head=8, n_positions=1024, vocab_size=1024, use_cache=False
    )
    return GPT2Model(cfg).eval(), (torch.randint(0, 1024, (1, 128)),)


def hf_llama() -> tuple[Any, tuple[Any, ...]]:
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(
        num_hidden_layers=4,
        hidden_size=512,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=1408,
        vocab_size=1024,
        use_cache=False,
    )
    return LlamaModel(cfg).eval(), (torch.randint(0, 1024, (1, 128)),)


MODELS: dict[str, tuple[Callable[[], tuple[Any, tuple[Any, ...]]], str]] = {
    "gpt2": (gpt2.build, "h."),
    "llama": (llama.build, "layers."),
    "unet": (unet.build, "resnets."),
    "dit": (dit.build, "blocks."),
    "hf GPT2Model": (hf_gpt2, "h."),
    "hf LlamaModel": (hf_llama, "layers."),
}


def main() -> None:
    torch.manual_seed(0)
    print(
        f"{'model':14} {'nodes':>6} {'kernels':>8} {'per block':>10} {'planned MiB':>12} "
        f"{'eager MiB':>10} {'ours s':>7}"
    )
    for name, (build, prefix) in MODELS.items():
        model, inputs = build()
        c = compiler.compile(model, inputs, backend="numpy")
        blocks = {b: n for b, n in kernels_per_block(c).items() if b.startswith(prefix)}
        per_block = max(blocks.values()) if blocks else 0
        s = c.stats
        print(
            f"{name:14} {s['nodes']:6} {s['kernels']:8} {per_block:10} "
            f"{s['planned_bytes'] / 2**20:12.2f} {s['eager_peak_bytes'] / 2**20:10.2f} "
            f"{s['compile_s']:7.3f}"
        )
    print("per block: max kernels attributed to one block (unet: the ResNet block)")


if __name__ == "__main__":
    main()
