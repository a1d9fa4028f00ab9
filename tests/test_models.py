"""Whole models within the parity budget: our examples and Hugging Face GPT-2 / LLaMA.

Tiny configs run by default; the examples at their default `build()` sizes are marked slow.
Repro: pytest tests/test_models.py -k "hf_llama and bfloat16"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import compiler
from examples import gpt2, llama

DTYPES = [torch.float32, torch.bfloat16]


def hf_gpt2(dtype: torch.dtype) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=128, use_cache=False
    )
    model = GPT2Model(cfg).eval().to(dtype)
    return model, (torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1)),)


def hf_llama(dtype: torch.dtype) -> tuple[torch.nn.Module, tuple[Any, ...]]:
    from transformers import LlamaConfig, LlamaModel

    torch.manual_seed(0)
    cfg = LlamaConfig(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=160,
        vocab_size=128,
        max_position_embeddings=64,
        use_cache=False,
    )
    model = LlamaModel(cfg).eval().to(dtype)
    return model, (torch.randint(0, 128, (1, 16), generator=torch.Generator().manual_seed(1)),)


MODELS: dict[str, Callable[[torch.dtype], tuple[torch.nn.Module, tuple[Any, ...]]]] = {
    "gpt2": lambda d: gpt2.build(seq=16, hidden=64, heads=4, layers=2, dtype=d),
    "llama": lambda d: llama.build(
        seq=16, hidden=64, heads=4, kv_heads=2, layers=2, intermediate=128, dtype=d
    ),
    "hf_gpt2": hf_gpt2,
    "hf_llama": hf_llama,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("name", list(MODELS))
def test_model_parity(name: str, dtype: torch.dtype) -> None:
    model, inputs = MODELS[name](dtype)
    report = compiler.check_parity(model, inputs, backends=("numpy", "llvm"))
    assert report.ok, f"\n{report}"


def test_hf_mask_code_folds_away() -> None:
    """HF builds its causal mask from arange/compare/index ops: all of it folds to a constant,
    which recognize_attention then reads as `is_causal` (no mask tensor left at all)."""
    model, inputs = hf_llama(torch.float32)
    c = compiler.compile(model, inputs, backend="numpy")
    captured = c.captured.graph.op_counts()
    assert {"index", "cumsum", "arange"} <= set(captured)
    ops = c.graph.op_counts()
    assert "index" not in ops and "cumsum" not in ops
    masks = [n for n in c.graph.nodes if n.op == "constant" and n.type.dtype.value == "bool"]
    assert masks == []
    attention = [n for n in c.graph.nodes if n.op == "sdpa"]
    assert attention and all(n.attr("is_causal") and len(n.inputs) == 3 for n in attention)


def test_hf_output_structure_is_preserved() -> None:
    from transformers.modeling_outputs import BaseModelOutputWithPast

    model, inputs = hf_llama(torch.float32)
    out = compiler.compile(model, inputs, backend="numpy")(*inputs)
    assert isinstance(out, BaseModelOutputWithPast)
    torch.testing.assert_close(
        out.last_hidden_state, model(*inputs).last_hidden_state, rtol=1e-4, atol=1e-4
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("example", [gpt2, llama], ids=["gpt2", "llama"])
def test_examples_at_default_size(example: Any, dtype: torch.dtype) -> None:
    model, inputs = example.build(dtype=dtype)
    report = compiler.check_parity(model, inputs, backends=("numpy", "llvm"))
    assert report.ok, f"\n{report}"
