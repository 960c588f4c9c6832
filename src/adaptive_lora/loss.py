"""Causal-LM loss computed only where it is needed.

The vocabulary projection is the most expensive matmul of a small model (SmolLM2: 576 x 49,152),
and instruction tuning supervises only the response tokens. So we run the decoder body, gather the
hidden states at supervised positions, and project only those: same loss, less compute and memory.

Some models transform their logits after the projection (Gemma 2 soft-caps them, Cohere scales
them, Granite divides by `logits_scaling`, ...). The known transforms keep the full forward; for
everything else the response-only head proves itself on its first batch: one row's loss, both ways,
must agree, or the model falls back to the full forward for good (and the log says so).

    loss_sum, n_tokens = supervised_loss_sum(model, batch)    # batch: input_ids, attention_mask, labels (B, T)
                                                              # or packed: input_ids, position_ids, labels (1, T)
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from .schema import IGNORE_INDEX

log = logging.getLogger(__name__)

# Config attributes of logit transforms known to need the full forward; others are caught by the check.
KNOWN_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale")
_VERIFIED = "_adaptive_lora_sparse_head"  # attribute on the causal LM: True / False once checked


def causal_lm_of(model: nn.Module) -> nn.Module:
    """The transformers *ForCausalLM inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _could_use_sparse_head(causal_lm: nn.Module) -> bool:
    config = getattr(causal_lm, "config", None)
    if config is None or any(getattr(config, key, None) for key in KNOWN_LOGIT_TRANSFORMS):
        return False
    body = getattr(causal_lm, "base_model", None)
    return body is not None and body is not causal_lm and causal_lm.get_output_embeddings() is not None


def supports_sparse_head(causal_lm: nn.Module) -> bool:
    """Whether the response-only head is used for this model (False once it failed its check)."""
    return _could_use_sparse_head(causal_lm) and getattr(causal_lm, _VERIFIED, True)


def _model_inputs(batch: dict) -> dict:
    """input_ids with the attention mask, or with position_ids for packed rows (restarting at each example);
    no KV cache: transformers recognises packed rows only without one."""
    return {
        "input_ids": batch["input_ids"],
        "attention_mask": batch.get("attention_mask"),
        "position_ids": batch.get("position_ids"),
        "use_cache": False,
    }


def _sparse_logits(causal_lm: nn.Module, batch: dict, mask: torch.Tensor) -> torch.Tensor:
    hidden = causal_lm.base_model(**_model_inputs(batch)).last_hidden_state
    return causal_lm.get_output_embeddings()(hidden[:, :-1][mask])  # (n_supervised, V)


def _full_logits(model: nn.Module, batch: dict, mask: torch.Tensor) -> torch.Tensor:
    return model(**_model_inputs(batch)).logits[:, :-1][mask]


def supervised_loss_sum(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of next-token cross-entropy over supervised positions, and their count.

    labels (B, T) are unshifted, as in transformers: logits at t predict labels at t + 1.
    """
    targets = batch["labels"][:, 1:]  # (B, T-1)
    mask = targets != IGNORE_INDEX
    causal_lm = causal_lm_of(model)
    use_sparse = supports_sparse_head(causal_lm)
    if use_sparse and not hasattr(causal_lm, _VERIFIED):
        use_sparse = _verify_sparse_head(model, causal_lm, batch)
    logits = _sparse_logits(causal_lm, batch, mask) if use_sparse else _full_logits(model, batch, mask)
    loss_sum = F.cross_entropy(logits.float(), targets[mask], reduction="sum")
    return loss_sum, mask.sum()


@torch.no_grad()
def _verify_sparse_head(model: nn.Module, causal_lm: nn.Module, batch: dict) -> bool:
    """Compare the response-only loss with the model's own full-logit loss on the first supervised row."""
    targets = batch["labels"][:, 1:]
    rows = (targets != IGNORE_INDEX).any(dim=1).nonzero()
    if len(rows) == 0:
        return True  # nothing supervised in this batch: decide on a later one
    row = int(rows[0])
    one = {k: v[row : row + 1] for k, v in batch.items() if isinstance(v, torch.Tensor)}
    mask = one["labels"][:, 1:] != IGNORE_INDEX
    was_training = model.training
    model.eval()  # dropout would make the two passes differ
    try:
        sparse = F.cross_entropy(_sparse_logits(causal_lm, one, mask).float(), one["labels"][:, 1:][mask])
        full_logits = _full_logits(model, one, mask)
        full = F.cross_entropy(full_logits.float(), one["labels"][:, 1:][mask])
    finally:
        model.train(was_training)
    tolerance = 1e-4 if full_logits.dtype == torch.float32 else 2e-2  # relative; bf16 rounds at ~4e-3
    ok = math.isclose(float(sparse), float(full), rel_tol=tolerance, abs_tol=tolerance)
    setattr(causal_lm, _VERIFIED, ok)
    if not ok:
        log.warning(
            "the response-only head gives loss %.6f but %s's own forward gives %.6f (its logits are transformed "
            "after the projection); using the full forward for this model",
            float(sparse),
            getattr(causal_lm.config, "model_type", type(causal_lm).__name__),
            float(full),
        )
    return ok


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, dataloader, device: torch.device | str, autocast_dtype: torch.dtype | None = None
) -> dict[str, float]:
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
    return {"loss": mean, "perplexity": safe_exp(mean), "tokens": count}


def safe_exp(value: float) -> float:
    try:
        return math.exp(value)
    except OverflowError:
        return float("inf")
