"""Forgetting: the response loss on held-out text the adapter was not trained on, scored before
and after training (a rise means the base model's other abilities were damaged)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.report import BadRow
from ..data.tokenization import Collator, build_example
from ..loss import evaluate_loss


def held_out_loss(
    model: nn.Module,
    tokenizer,
    records: list[dict],
    prompt_format: str,
    sequence_len: int,
    batch_size: int,
    device: torch.device | str,
    autocast: torch.dtype | None = None,
) -> dict:
    """{"loss": token-weighted mean response cross-entropy or None, "tokens": supervised tokens scored}.

    Rows are built as in training (prompt masked, over-long responses truncated); a row whose prompt
    alone fills sequence_len has nothing to score and is skipped.
    """
    examples = []
    for record in records:
        try:
            examples.append(build_example(record, tokenizer, prompt_format, sequence_len, overlength="truncate"))
        except BadRow:
            continue
    examples.sort(key=lambda e: len(e["input_ids"]))  # similar lengths together: little padding
    collate = Collator(tokenizer)
    batches = (collate(examples[i : i + batch_size]) for i in range(0, len(examples), batch_size))
    result = evaluate_loss(model, batches, device, autocast)
    return {"loss": result["loss"] if result["tokens"] else None, "tokens": result["tokens"]}
