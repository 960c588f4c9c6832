"""Micro-batches within a token budget, and padding-free packing.

The optimizer step keeps its rows (the sampler's batch of `micro_batch_size` rows); only how many
tokens one forward/backward pass holds changes. Activations grow with tokens (about 1.4 MB per token
for SmolLM2-135M in fp32 with LoRA on every linear module), so a step over 8 x 212 tokens at once
peaks several GB above the model; the same rows in passes of <= `token_budget` tokens, whose
gradients accumulate, give the same step in a fraction of the memory.

    chunks = micro_batches(batch, token_budget=256, packing=False)   # list of batches

Packing concatenates a chunk's examples into one row with `position_ids` restarting at 0 per
example and no attention mask: transformers then builds the block-diagonal causal mask (sdpa,
eager) or runs flash-attention's varlen kernel, so no token attends across examples and no pad
token is computed. Each example's first label is ignored (nothing before it belongs to it).
"""

from __future__ import annotations

import torch

from ..schema import IGNORE_INDEX


def row_lengths(batch: dict[str, torch.Tensor]) -> list[int]:
    """Tokens of each row of a right-padded batch (through its last attended position)."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    if mask is None:
        return [ids.shape[1]] * ids.shape[0]
    positions = torch.arange(1, ids.shape[1] + 1, device=mask.device)
    return (mask.ne(0) * positions).amax(dim=1).tolist()


def supervised_count(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Supervised targets of a batch: labels[:, 1:] that are not ignored (what Trainer's num_items_in_batch counts)."""
    return batch["labels"][:, 1:].ne(IGNORE_INDEX).sum()


def group_rows(lengths: list[int], token_budget: int, packing: bool) -> list[list[int]]:
    """Row indices in groups of at most `token_budget` tokens, longest rows first (so groups pad little).

    A group costs rows x longest row when padded, the sum of its lengths when packed; a row longer
    than the budget gets a group of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        candidate = current + [i]
        cost = sum(lengths[j] for j in candidate) if packing else len(candidate) * lengths[candidate[0]]
        if current and cost > token_budget:
            groups.append(current)
            candidate = [i]
        current = candidate
    if current:
        groups.append(current)
    return groups


def select_rows(batch: dict[str, torch.Tensor], rows: list[int], length: int) -> dict[str, torch.Tensor]:
    index = torch.tensor(rows, device=batch["input_ids"].device)
    return {k: v.index_select(0, index)[:, :length] if v.dim() == 2 else v for k, v in batch.items()}


def pack_rows(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One row (1, sum of lengths) holding every example of a right-padded batch, with restarting position_ids."""
    lengths = row_lengths(batch)
    rows = range(len(lengths))
    labels = [batch["labels"][i, : lengths[i]].clone() for i in rows]
    for row in labels:
        row[0] = IGNORE_INDEX  # its first token follows the previous example: no logit predicts it
    device = batch["input_ids"].device
    return {
        "input_ids": torch.cat([batch["input_ids"][i, : lengths[i]] for i in rows]).unsqueeze(0),
        "labels": torch.cat(labels).unsqueeze(0),
        "position_ids": torch.cat([torch.arange(n, device=device) for n in lengths]).unsqueeze(0),
    }


def micro_batches(batch: dict[str, torch.Tensor], token_budget: int | None, packing: bool) -> list[dict[str, torch.Tensor]]:
    """The batch as forward passes of at most `token_budget` tokens (None: one pass), packed or padded.

    A batch that fits in one padded pass is returned as it is, so an unsplit step is unchanged.
    """
    lengths = row_lengths(batch)
    if not packing and (token_budget is None or len(lengths) * max(lengths) <= token_budget):
        return [batch]
    budget = token_budget if token_budget is not None else sum(lengths)
    chunks = []
    for rows in group_rows(lengths, budget, packing):
        chunk = select_rows(batch, rows, max(lengths[i] for i in rows))
        chunks.append(pack_rows(chunk) if packing else chunk)
    return chunks


class PackingCollator:
    """Collates examples ({"input_ids", "labels"} lists) into one packed row: no padding, no attention mask."""

    def __init__(self, collator):
        self.collator = collator  # the padding Collator: pads, masks position 0, then the rows are packed

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        return pack_rows(self.collator(features))
