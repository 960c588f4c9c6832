"""Shared fixtures: a tiny random Llama with the embedded tokenizer, and a small instruction file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tiny_models import tiny_config

ROWS = [
    {"instruction": f"Add {a} and {b}.", "input": "", "output": f"{a} plus {b} is {a + b}."} for a in range(6) for b in range(6)
] + [
    {"instruction": "Repeat the word.", "input": word, "output": f"{word} {word}"}
    for word in ("apple", "river", "stone", "cloud", "maple", "tiger", "lemon", "piano")
]


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama with hidden size 32 and the embedded model's tokenizer (and chat template)."""
    from transformers import AutoModelForCausalLM

    from adaptive_lora.models import load_tokenizer

    tokenizer = load_tokenizer("embedded")
    path = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = tiny_config(
        "llama",
        vocab_size=len(tokenizer),
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n", encoding="utf-8")
    return path
