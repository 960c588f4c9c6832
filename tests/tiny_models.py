"""Tiny random causal LMs built from configs (no download), shared by the test modules.

    from tiny_models import TINY_ARCHS, tiny_config, tiny_model, meta_model

`tiny_model(arch, seed=0)` returns a freshly initialised fp32 model in eval mode; the same seed
gives bit-identical weights. `tiny_config` gives the config alone (e.g. to `save_pretrained` it
into a directory that holds only config.json), and `meta_model` builds any config on the meta
device (no memory, no weights) for planning-only tests.
"""

from __future__ import annotations

from typing import Any

import torch

VOCAB = 128
HIDDEN = 32
HEADS = 4
KV_HEADS = 2  # grouped-query attention where the architecture has it
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 48
LAYERS = 2

_SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}

# arch -> (config class name, keyword arguments); sizes are tiny but not degenerate
_SPECS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", dict(n_layer=LAYERS, n_embd=HIDDEN, n_head=HEADS, n_positions=64, vocab_size=VOCAB)),
    "llama": (
        "LlamaConfig",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        ),
    ),
    "qwen2": (
        "Qwen2Config",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        ),
    ),
    "mistral": (
        "MistralConfig",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        ),
    ),
    "gemma": (
        "GemmaConfig",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_attention_heads=HEADS,
            num_key_value_heads=KV_HEADS,
            head_dim=HEAD_DIM,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        ),
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_attention_heads=HEADS,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        ),
    ),
    "opt": (
        "OPTConfig",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            ffn_dim=INTERMEDIATE,
            num_attention_heads=HEADS,
            word_embed_proj_dim=HIDDEN,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        ),
    ),
    "phi": (
        "PhiConfig",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            intermediate_size=INTERMEDIATE,
            num_attention_heads=HEADS,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        ),
    ),
    "falcon": (
        "FalconConfig",
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=HIDDEN,
            num_attention_heads=HEADS,
            vocab_size=VOCAB,
            multi_query=True,
            new_decoder_architecture=False,
        ),
    ),
    "bloom": ("BloomConfig", dict(n_layer=LAYERS, hidden_size=HIDDEN, n_head=HEADS, vocab_size=VOCAB)),
}

TINY_ARCHS: tuple[str, ...] = tuple(_SPECS)

# how each config spells the layer count
_LAYER_KEY = {"gpt2": "n_layer", "bloom": "n_layer"}


def tiny_config(arch: str, num_layers: int | None = None, **overrides: Any):
    """The tiny config of `arch` (one of TINY_ARCHS); `num_layers` and keyword overrides replace defaults."""
    import transformers

    if arch not in _SPECS:
        raise KeyError(f"unknown tiny arch {arch!r}; choose one of {', '.join(TINY_ARCHS)}")
    class_name, kwargs = _SPECS[arch]
    kwargs = {**_SPECIAL, **kwargs}
    if num_layers is not None:
        kwargs[_LAYER_KEY.get(arch, "num_hidden_layers")] = num_layers
    kwargs.update(overrides)
    return getattr(transformers, class_name)(**kwargs)


def tiny_model(arch: str, seed: int = 0, num_layers: int | None = None, **overrides: Any):
    """A randomly initialised fp32 causal LM in eval mode; the same (arch, seed, ...) gives identical weights."""
    from transformers import AutoModelForCausalLM

    config = tiny_config(arch, num_layers, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.float().eval()


def meta_model(config):
    """Any config built on the meta device: the module tree and shapes, without memory or weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def tiny_inputs(seed: int = 0, batch: int = 2, length: int = 8) -> torch.Tensor:
    """A fixed batch of token ids valid for every tiny model."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=generator)
