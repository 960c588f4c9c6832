"""What the sweep's suite planned, so that nothing it planned disappears from the report: the seeds of
every group (a failed seed shows as "2 of 3 seeds"), and the groups that have no chosen learning rate,
with the reason (they enter no table, test or figure, so the report lists them instead)."""

from __future__ import annotations

from ..sweep.selection import choose_rates
from ..sweep.suite import Suite
from .collect import Run


def planned_seeds(suite: Suite | None) -> dict[tuple[str, str], tuple[int, ...]]:
    """(label, budget label) -> the seeds the suite plans for the group; {} without a suite."""
    if suite is None:
        return {}
    seeds: dict[tuple[str, str], set[int]] = {}
    for spec in suite.runs:
        seeds.setdefault(spec.group, set()).add(spec.seed)
    return {group: tuple(sorted(values)) for group, values in seeds.items()}


def groups_without_rate(runs: list[Run], suite: Suite | None) -> list[dict[str, str]]:
    """[{"label", "budget_label", "reason"}] for every group of a learning-rate grid with no chosen rate."""
    if suite is None or len(suite.learning_rates) < 2:
        return []
    choices = choose_rates(suite, {run.result["run_id"]: run.result for run in runs})
    return [
        {"label": label, "budget_label": budget, "reason": choice.why_none or "no learning rate was chosen"}
        for (label, budget), choice in choices.items()
        if choice.chosen is None
    ]
