"""Causal-LM loss computed only where it is needed.

The vocabulary projection is the most expensive matmul of a small model (SmolLM2: 576 x 49,152),
and instruction tuning supervises only the response tokens. So we run the decoder body, gather the
hidden states at supervised positions, and project only those. Same loss, less compute.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports_sparse_head(causal_lm: nn.Module) -> bool:
    """Models that post-process logits (soft-capping, logit scales) keep the full forward."""
    config = getattr(causal_lm, "config", None)
    if config is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return False
    body = getattr(causal_lm, "base_model", None)
    return body is not None and body is not causal_lm and causal_lm.get_output_embeddings() is not None


def supervised_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token cross-entropy over supervised positions, and their count."""
    labels = batch["labels"]
    targets = labels[:, 1:]
    mask = targets != IGNORE
    causal_lm = causal_lm_of(model)
    if supports_sparse_head(causal_lm):
        hidden = causal_lm.base_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).last_hidden_state
        logits = causal_lm.get_output_embeddings()(hidden[:, :-1][mask])
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits[:, :-1][mask]
    loss_sum = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
    return loss_sum, mask.sum()


@torch.no_grad()
def evaluate_loss(model: nn.Module, dataloader, device: torch.device | str, autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Token-weighted mean cross-entropy over response tokens (never in fp16)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in dataloader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device_type=torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss_sum, n = supervised_loss_sum(model, batch)
        total += float(loss_sum)
        count += int(n)
    model.train(was_training)
    mean = total / count if count else float("nan")
    return {"loss": mean, "perplexity": _safe_exp(mean), "tokens": count}


def _safe_exp(value: float) -> float:
    import math

    try:
        return math.exp(value)
    except OverflowError:
        return float("inf")
