"""Deterministic train/validation/test split and the content hashes.

Order of operations (documented choice):
1. the kept rows are shuffled with `split_seed`;
2. the first `max_samples` of that order are used (so caps are nested: the 200-row set is inside
   the 400-row set);
3. the first `n_val` of those are the validation rows (so with test_set_size=0 the validation and
   train splits are exactly what they were before the test split existed);
4. the next `n_test` are the test rows;
5. the rest are train.
`val_set_size` and `test_set_size` are each a fraction (< 1) of the rows after the cap, or a row
count (>= 1). Only `split_seed`, the kept rows and these three settings decide the split: the
training seed, the model and the prompt format do not (rows later dropped as too long just leave
their split).
"""

from __future__ import annotations

import hashlib
import random
from typing import NamedTuple

from ..errors import UserError
from .records import canonical_json


class SplitIndices(NamedTuple):
    """Indices into the kept rows, disjoint."""

    train: list[int]
    validation: list[int]
    test: list[int]


def row_count(size: float, n: int, key: str, allow_zero: bool = False) -> int:
    """`size` < 1 is a fraction of `n` (at least 1 row), >= 1 a row count; 0 (if allowed) is none."""
    zero = "0 (none), " if allow_zero else ""
    if isinstance(size, bool) or not isinstance(size, (int, float)) or size < 0 or (size == 0 and not allow_zero):
        raise UserError(f"data.{key} must be {zero}a fraction in (0, 1) or a row count >= 1, got {size!r}")
    if size == 0:
        return 0
    if size < 1:
        return max(1, int(size * n + 0.5))
    if size != int(size):
        raise UserError(f"data.{key} >= 1 is a row count and must be a whole number, got {size}")
    return int(size)


def eval_count(val_set_size: float, n: int) -> int:
    """Validation rows out of `n`."""
    return row_count(val_set_size, n, "val_set_size")


def split_indices(n: int, val_set_size: float, max_samples: int | None, seed: int, test_set_size: float = 0.0) -> SplitIndices:
    """(train, validation, test) indices into the `n` kept rows, in the order described above."""
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2):
        raise UserError(f"data.max_samples must be a whole number >= 2 (1 train + 1 eval row) or null, got {max_samples!r}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    if max_samples is not None:
        order = order[:max_samples]
    n_val = eval_count(val_set_size, len(order))
    n_test = row_count(test_set_size, len(order), "test_set_size", allow_zero=True)
    if n_val + n_test >= len(order) and n_test:
        raise UserError(
            f"data.val_set_size={val_set_size} and data.test_set_size={test_set_size} take {n_val} validation and {n_test} "
            f"test rows out of {len(order)}, leaving none to train on: lower them or use more rows"
        )
    if n_val >= len(order):
        raise UserError(
            f"data.val_set_size={val_set_size} takes {n_val} eval rows out of {len(order)}, leaving none to train on: "
            f"lower data.val_set_size or use more rows"
        )
    return SplitIndices(order[n_val + n_test :], order[:n_val], order[n_val : n_val + n_test])


def content_hash(train: list[dict], eval_: list[dict], test: list[dict] = ()) -> str:
    """sha256 over the normalized rows, in order, each tagged with its split.

    Test rows come last, so without a test split the hash is what it was before test splits existed.
    """
    digest = hashlib.sha256()
    for split, records in (("eval", eval_), ("train", train), ("test", test)):
        for record in records:
            digest.update(f"{split}\t{canonical_json(record)}\n".encode())
    return digest.hexdigest()


def split_hash(records: list[dict]) -> str:
    """sha256 over one split's normalized rows as a set (sorted), so it names the rows, not their order."""
    digest = hashlib.sha256()
    for line in sorted(canonical_json(record) for record in records):
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()
