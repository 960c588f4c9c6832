"""Choosing the learning rate per strategy x budget, on validation loss only.

For each group (label, budget) of a suite with a learning-rate grid, the chosen rate is the one with
the lowest mean validation loss over the selection seeds. A run that failed (diverged, oom, error)
counts as infinitely bad, so a rate that diverges on any selection seed is never chosen while another
finished everywhere. Test metrics are never read here. Torch-free: the sweep and the report share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..schema import FAILED_STATUSES, is_number
from .suite import Suite


@dataclass
class RateChoice:
    group: tuple[str, str]  # (label, budget label)
    chosen: float | None  # None until every selection run of the group has ended
    mean_validation_loss: dict[float, float | None] = field(default_factory=dict)  # rate -> mean (None: failed or missing)
    finished: dict[float, int] = field(default_factory=dict)  # rate -> selection runs that ended
    why_none: str | None = None  # when chosen is None: why, in words


def validation_loss(result: dict[str, Any] | None) -> float | None:
    """The validation loss of a finished run (result.json's `validation.loss`, or `eval_loss`)."""
    if not result or result.get("status") != "done":
        return None
    validation = result.get("validation")
    value = validation.get("loss") if isinstance(validation, dict) else result.get("eval_loss")
    return float(value) if is_number(value) else None


def choose_rates(suite: Suite, results: dict[str, dict[str, Any] | None]) -> dict[tuple[str, str], RateChoice]:
    """`results`: run_id -> result.json (None when the run has not ended). One RateChoice per group."""
    choices: dict[tuple[str, str], RateChoice] = {}
    for spec in suite.selection_runs():
        if spec.learning_rate is None:
            continue
        choice = choices.setdefault(spec.group, RateChoice(spec.group, None))
        rate = spec.learning_rate
        result = results.get(spec.run_id)
        losses = choice.mean_validation_loss.setdefault(rate, 0.0)
        ended = bool(result) and (result.get("status") == "done" or result.get("status") in FAILED_STATUSES)
        choice.finished[rate] = choice.finished.get(rate, 0) + int(ended)
        loss = validation_loss(result)
        choice.mean_validation_loss[rate] = (losses + loss) if (losses is not None and loss is not None) else None
    n_seeds = len(suite.selection_seeds)
    for choice in choices.values():
        means = {r: (total / n_seeds if total is not None else None) for r, total in choice.mean_validation_loss.items()}
        choice.mean_validation_loss = means
        if all(choice.finished.get(r, 0) == n_seeds for r in means):
            finite = {r: m for r, m in means.items() if m is not None and math.isfinite(m)}
            choice.chosen = min(finite, key=lambda r: (finite[r], r)) if finite else None
            if not finite:
                choice.why_none = "no learning rate of the grid finished on every selection seed (see Failed runs)"
        else:
            ended, planned = sum(choice.finished.values()), n_seeds * len(means)
            choice.why_none = f"its learning-rate selection has not finished: {ended} of {planned} selection runs ended"
    return choices


def chosen_rates(choices: dict[tuple[str, str], RateChoice]) -> dict[tuple[str, str], float]:
    return {group: c.chosen for group, c in choices.items() if c.chosen is not None}
