"""The search's own settings (the run settings stay in config.RunConfig, untouched): defaults live here.

Torch-free and Optuna-free: `search --list` and the report can read it anywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..config import from_dict
from ..errors import UserError

PRUNERS = ("median", "halving", "hyperband", "none")
# What makes two searches the same search (a study resumed or shared must agree on these); the rest says
# how long and where this invocation runs, and how its final stage retrains what the study found.
RUN_CONTROL = ("trials", "timeout", "workers", "max_tokens", "storage", "study", "final", "top", "final_seeds", "quiet")


@dataclass
class SearchConfig:
    budget: str = "r8"  # r8 (what uniform rank 8 costs) or a parameter count (1.5M, 2000000)
    trials: int = 30  # trials the study holds when the search stops (complete, pruned or failed), over all workers
    timeout: float | None = None  # seconds for this invocation (Optuna's timeout): no trial starts after it
    workers: int = 1  # worker processes on this machine, sharing the study
    max_tokens: int | None = None  # no trial starts once the study's trials have spent this many training tokens
    storage: str | None = None  # None: sqlite:///SEARCH/study.db; postgresql://user@host/db for several machines
    study: str | None = None  # study name; None: one derived from the search's settings, so equal searches share it
    knots: int = 3  # depth-profile knots over relative depth 0..1 (1: no depth profile)
    roles: str = "grouped"  # grouped (attention, mlp), individual, none, or groups such as "q+k,v,o,up+gate+down"
    weight_min: float = 0.1  # every knot and role weight is log-uniform in [weight_min, 1]
    lr_min: float = 1.0e-4  # learning rate: log-uniform in [lr_min, lr_max] (equal: a fixed rate)
    lr_max: float = 3.0e-3
    uniform_rates: int = 3  # uniform-shape trials enqueued at this many rates: uniform's own rate, chosen alike
    evaluations: int = 6  # intermediate validations per trial (training.eval_steps = steps // evaluations)
    pruner: str = "median"  # median | halving | hyperband | none (docs/search.md says why median)
    prune_after: float = 0.25  # median: no trial is pruned before this fraction of its steps
    startup_trials: int = 8  # TPE samples at random until this many trials exist (the uniform ones count)
    seed: int = 0  # trials train with this seed (and the sampler starts from it)
    shape_rank: int = 256  # the profile's base rank in trials: the shape's resolution before budget matching
    top: int = 3  # final stage: the best k distinct non-uniform allocations
    final_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # final stage seeds: fresh, never `seed`
    final: bool = True  # run the final stage here (false: a worker that only runs trials)
    quiet: bool = False  # log lines instead of a live progress display

    def identity(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUN_CONTROL}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def search_config(values: dict[str, Any] | None = None, where: str = "search") -> SearchConfig:
    """A validated SearchConfig from a mapping (unknown keys and bad values are one-line errors)."""
    cfg = from_dict(SearchConfig, values or {}, where)
    checks = [
        (cfg.trials >= 1, "trials must be at least 1"),
        (cfg.timeout is None or cfg.timeout > 0, "timeout must be a positive number of seconds"),
        (cfg.workers >= 1, "workers must be at least 1"),
        (cfg.max_tokens is None or cfg.max_tokens > 0, "max_tokens must be a positive number of training tokens"),
        (1 <= cfg.knots <= 16, "knots must be from 1 to 16"),
        (0 < cfg.weight_min < 1, "weight_min must be between 0 and 1, e.g. 0.1"),
        (0 < cfg.lr_min <= cfg.lr_max, f"need 0 < lr_min <= lr_max, got {cfg.lr_min:g} and {cfg.lr_max:g}"),
        (cfg.uniform_rates >= 1, "uniform_rates must be at least 1 (uniform needs a learning rate of its own)"),
        (
            not cfg.final or cfg.trials > cfg.uniform_rates,
            f"trials ({cfg.trials}) must exceed uniform_rates ({cfg.uniform_rates}): the first trials are uniform, and the "
            "final stage needs a non-uniform one",
        ),
        (cfg.evaluations >= 1, "evaluations must be at least 1"),
        (cfg.pruner in PRUNERS, f"pruner must be one of {', '.join(PRUNERS)}, got {cfg.pruner!r}"),
        (0 <= cfg.prune_after < 1, "prune_after must be a fraction in [0, 1)"),
        (cfg.startup_trials >= 0, "startup_trials must be >= 0"),
        (cfg.shape_rank >= 1, "shape_rank must be at least 1"),
        (cfg.top >= 1, "top must be at least 1"),
        (bool(cfg.final_seeds), "final_seeds must list at least one seed, e.g. [1, 2, 3]"),
        (cfg.seed not in cfg.final_seeds, f"final_seeds must be fresh: they include the search's seed {cfg.seed}"),
        (len(set(cfg.final_seeds)) == len(cfg.final_seeds), "final_seeds lists a seed twice"),
    ]
    for ok, message in checks:
        if not ok:
            raise UserError(f"{where}: {message}")
    return cfg


def identity_hash(run: dict[str, Any], cfg: SearchConfig) -> str:
    """12 hex digits naming what a search is: its run settings (no output section) and its own identity."""
    data = {"run": {k: v for k, v in run.items() if k != "output"}, "search": cfg.identity()}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]
