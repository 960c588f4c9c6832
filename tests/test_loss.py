"""The response-only head gives the model's own loss, or steps aside (issue 9, item 4).

Projecting only supervised positions is exact for a plain Llama. Models that transform their
logits after the projection must get the full forward: Gemma 2 (soft-capping, a known transform)
from the start, Granite (`logits_scaling`, not in the known list) after the first-batch check.
"""

from __future__ import annotations

import logging

import pytest
import torch
import transformers

from adaptive_lora.loss import supervised_loss_sum, supports_sparse_head
from tiny_models import tiny_inputs

SIZES = dict(
    num_hidden_layers=2,
    hidden_size=32,
    intermediate_size=48,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=128,
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**SIZES),
    "granite": lambda: transformers.GraniteConfig(**SIZES, logits_scaling=4.0),
    "gemma2": lambda: transformers.Gemma2Config(**SIZES, head_dim=8, final_logit_softcapping=5.0),
}


def tiny(arch: str, seed: int = 0):
    torch.manual_seed(seed)
    return transformers.AutoModelForCausalLM.from_config(CONFIGS[arch](), dtype=torch.float32).eval()


def masked_batch(seed: int) -> dict[str, torch.Tensor]:
    """Three rows of 10 tokens: a 4-token prompt without loss, and the last row padded after 7."""
    input_ids = tiny_inputs(seed, batch=3, length=10)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 7:] = 0
    labels = input_ids.clone()
    labels[:, :4] = -100
    labels[attention_mask == 0] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def own_loss(model, batch) -> float:
    """The model's own mean next-token loss over the full logits (transformers shifts the labels)."""
    with torch.no_grad():
        return float(model(**batch).loss)


class HeadInputs:
    """Records the shape of every input to the vocabulary projection."""

    def __init__(self, model):
        self.shapes: list[tuple[int, ...]] = []
        model.get_output_embeddings().register_forward_hook(lambda module, args, output: self.shapes.append(tuple(args[0].shape)))


@pytest.mark.parametrize("arch, sparse", [("llama", True), ("granite", False), ("gemma2", False)])
def test_loss_equals_the_models_own_full_logit_loss(arch, sparse, caplog):
    model = tiny(arch)
    head = HeadInputs(model)
    with caplog.at_level(logging.WARNING, logger="adaptive_lora.loss"):
        for seed in (0, 1):  # the first batch is checked; the second shows the path the model keeps
            batch = masked_batch(seed)
            head.shapes.clear()
            with torch.no_grad():
                loss_sum, count = supervised_loss_sum(model, batch)
            projected = list(head.shapes)
            assert int(count) == int((batch["labels"][:, 1:] != -100).sum())
            assert float(loss_sum) / int(count) == pytest.approx(own_loss(model, batch), rel=1e-5, abs=1e-6), (arch, seed)
    # Fast path: only the supervised positions reach the projection, (n_supervised, hidden).
    assert projected == ([(int(count), 32)] if sparse else [(3, 10, 32)]), arch
    assert supports_sparse_head(model) is sparse
    fallbacks = [r for r in caplog.records if "full forward" in r.getMessage()]
    assert len(fallbacks) == (1 if arch == "granite" else 0), [r.getMessage() for r in caplog.records]
    if fallbacks:
        assert "granite" in fallbacks[0].getMessage() and "\n" not in fallbacks[0].getMessage()


def test_granite_inside_a_peft_wrapper_falls_back_and_trains_on_the_right_loss():
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("granite"), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    model.train()  # as in training: the check must not be upset by dropout
    batch = masked_batch(0)
    loss_sum, count = supervised_loss_sum(model, batch)
    loss_sum.backward()
    model.eval()
    assert float(loss_sum.detach()) / int(count) == pytest.approx(own_loss(model, batch), rel=1e-5)
    grads = [p.grad for name, p in model.named_parameters() if "lora_" in name]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
