"""`from_run`: retrain, as a static allocation, the ranks a previous run learned or measured
("allocate, then retrain"): AdaLoRA's final pattern, a probe's shape, any run's allocation.json.

Without a budget the source ranks are used as they are (same modules, same ranks). With a budget
the source ranks are the shape, rescaled by `match_budget`; at the source's own parameter count that
reproduces them exactly. Modules the source does not adapt (e.g. AdaLoRA pruned them to rank 0)
stay unadapted and are listed in `meta["zero_rank_modules"]`.
"""

from __future__ import annotations

from ..anatomy import Anatomy
from ..errors import UserError
from ..schema import allocation_path, read_allocation
from .base import Param, Strategy, StrategyOutput, register


def from_run(anatomy: Anatomy, *, run: str | None) -> StrategyOutput:
    if not run:
        raise UserError("from_run needs run=PATH: a run directory or its allocation.json")
    source = read_allocation(run)
    ranks = source.ranks
    known = set(anatomy.names)
    unknown = sorted(set(ranks) - known)
    if unknown:
        raise UserError(
            f"from_run: {run} names module {unknown[0]!r}, which this model (with these target_modules) does not have; "
            "plan for the same model as the source run"
        )
    if not ranks:
        raise UserError(f"from_run: {run} adapts no module")
    meta = {
        "method": "from_run",
        "source": str(allocation_path(run)),
        "source_strategy": source.strategy,
        "source_trainable_params": source.trainable_params,
        "source_budget": source.budget,
        "zero_rank_modules": sorted(known - set(ranks)),
    }
    return StrategyOutput(ranks, source.scores, meta)


register(
    Strategy(
        "from_run",
        "a previous run's allocation (e.g. AdaLoRA's final ranks), retrained statically; with a budget: rescaled",
        from_run,
        (Param("run", str, None, "run directory or allocation.json of the source run"),),
    )
)
