"""Budget matching: rescale a strategy's rank *shape* to a trainable-parameter budget.

Budgets are in parameters, not summed ranks, because one unit of rank costs `in + out`
parameters and modules differ in size (an MLP down-projection costs more than a k-projection).
"""

from __future__ import annotations

import math

from .anatomy import Anatomy
from .errors import UserError

Ranks = dict[str, int]


def count_params(anatomy: Anatomy, ranks: Ranks) -> int:
    by_name = anatomy.by_name()
    return sum(rank * by_name[name].params_per_rank for name, rank in ranks.items())


def budget_for_rank(anatomy: Anatomy, rank: int) -> int:
    """The budget of uniform rank r over the targeted modules."""
    return rank * anatomy.params_per_rank()


def match_budget(anatomy: Anatomy, shape: Ranks, target: int, min_rank: int = 1, max_rank: int = 256) -> Ranks:
    """Integer ranks proportional to `shape`, within [min_rank, max_rank], never above `target`.

    1. Find the scale s where sum(clamp(s * shape)) * cost hits the target (bisection).
    2. Floor the scaled ranks, then hand out single ranks, largest remainder first, while they fit.
    3. Repeat that pass until no module fits one more rank.
    Guarantee: the count is <= target, and the fill is maximal: no module can take one more rank
    without passing the target or max_rank (so the count is within one of the cheapest fitting
    module's rank-step of the target).
    """
    modules = [m for m in anatomy.modules if shape.get(m.name, 0) > 0]
    if not modules:
        raise UserError("budget matching needs at least one module with a positive rank")
    lowest = sum(min_rank * m.params_per_rank for m in modules)
    highest = sum(max_rank * m.params_per_rank for m in modules)
    if target < lowest:
        raise UserError(
            f"budget {target:,} is below the smallest possible ({lowest:,} = rank {min_rank} everywhere); raise --budget or lower min_rank"
        )
    if target > highest:
        raise UserError(
            f"budget {target:,} is above the largest possible ({highest:,} = rank {max_rank} everywhere); lower --budget or raise max_rank"
        )

    def scaled(scale: float) -> dict[str, float]:
        return {m.name: min(max_rank, max(min_rank, scale * shape[m.name])) for m in modules}

    def cost(ranks: dict[str, float]) -> float:
        return sum(ranks[m.name] * m.params_per_rank for m in modules)

    lo, hi = 0.0, max_rank / min(shape[m.name] for m in modules)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(scaled(mid)) <= target else (lo, mid)
    exact = scaled(lo)
    ranks = {name: max(min_rank, math.floor(value)) for name, value in exact.items()}
    spent = count_params(anatomy, ranks)
    # Largest remainder first; ties go to earlier modules so the result is deterministic.
    order = sorted(modules, key=lambda m: (-(exact[m.name] - ranks[m.name]), m.name))
    added = True
    while added:  # later passes fill what the first could not (after clamping, or with cheap modules left)
        added = False
        for m in order:
            if ranks[m.name] < max_rank and spent + m.params_per_rank <= target:
                ranks[m.name] += 1
                spent += m.params_per_rank
                added = True
    return ranks
