"""Deterministic train/eval split and the content hash.

Order of operations (documented choice): the kept rows are shuffled with `split_seed`, the
first `max_samples` of that order are used (so caps are nested: the 200-row set is inside the
400-row set), and the first `n_eval` of those are the eval rows, the rest train. Only
`split_seed`, the kept rows and these two settings decide the split: the training seed, the
model and the prompt format do not (rows later dropped as too long just leave their side).
"""

from __future__ import annotations

import hashlib
import random

from ..errors import UserError
from .records import canonical_json


def eval_count(val_set_size: float, n: int) -> int:
    """`val_set_size` < 1 is a fraction of `n` (at least 1 row), >= 1 a row count."""
    if isinstance(val_set_size, bool) or not isinstance(val_set_size, (int, float)) or val_set_size <= 0:
        raise UserError(f"data.val_set_size must be a fraction in (0, 1) or a row count >= 1, got {val_set_size!r}")
    if val_set_size < 1:
        return max(1, int(val_set_size * n + 0.5))
    if val_set_size != int(val_set_size):
        raise UserError(f"data.val_set_size >= 1 is a row count and must be a whole number, got {val_set_size}")
    return int(val_set_size)


def split_indices(n: int, val_set_size: float, max_samples: int | None, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, eval indices) into the kept rows."""
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2):
        raise UserError(f"data.max_samples must be a whole number >= 2 (1 train + 1 eval row) or null, got {max_samples!r}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    if max_samples is not None:
        order = order[:max_samples]
    n_eval = eval_count(val_set_size, len(order))
    if n_eval >= len(order):
        raise UserError(
            f"data.val_set_size={val_set_size} takes {n_eval} eval rows out of {len(order)}, leaving none to train on: "
            f"lower data.val_set_size or use more rows"
        )
    return order[n_eval:], order[:n_eval]


def content_hash(train: list[dict], eval_: list[dict]) -> str:
    """sha256 over the normalized rows, in order, each tagged with its split."""
    digest = hashlib.sha256()
    for split, records in (("eval", eval_), ("train", train)):
        for record in records:
            digest.update(f"{split}\t{canonical_json(record)}\n".encode())
    return digest.hexdigest()
