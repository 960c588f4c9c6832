"""A synthetic search objective with a known optimum (no training), for the search engine's tests.

The loss is the squared distance, in log space, between a trial's rank shape (depth weight x role weight, with
the overall scale removed, as budget matching removes it) and a target shape, plus the squared log distance
of its learning rate from a target rate. Intermediate values follow a falling curve above the final loss, so
the pruner sees the same ranking early as late.

Run as a script, it is one worker process of a shared study:
    python search_synthetic.py STORAGE_URL STUDY TRIALS RAN_FILE
and appends the number of every trial it evaluates to RAN_FILE.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import optuna

from adaptive_lora.search.settings import search_config
from adaptive_lora.search.space import SearchSpace
from adaptive_lora.search.study import run_worker

ROLES = ["q", "k", "v", "o", "up", "gate", "down"]
TARGET_DEPTH = [1.0, 0.3]  # knots at depth 0 and 1
TARGET_ROLES = {"attention": 0.35, "mlp": 1.0}
TARGET_RATE = 1e-3
STEPS, EVAL_EVERY = 12, 3
IDENTITY = {"run": {"synthetic": True}, "search": {}}


def settings(**overrides):
    values = {
        "knots": 2,
        "roles": "grouped",
        "lr_min": 1e-4,
        "lr_max": 1e-2,
        "startup_trials": 8,
        "final": False,
        "final_seeds": [100],
    }
    return search_config(values | overrides)


def log_shape(depth: list[float], attention: float, mlp: float) -> list[float]:
    """Centered log weights of every (knot, group) cell: the shape without its scale."""
    cells = [math.log(d * r) for d in depth for r in (attention, mlp)]
    mean = sum(cells) / len(cells)
    return [c - mean for c in cells]


TARGET = log_shape(TARGET_DEPTH, TARGET_ROLES["attention"], TARGET_ROLES["mlp"])


def distance(space: SearchSpace, values: dict[str, float]) -> float:
    """What the objective returns: 0 exactly at the target shape and rate."""
    params = space.profile_params(values)
    roles = params["roles"]
    shape = log_shape(params["depth"], roles["q"], roles["up"])
    rate = math.log(space.learning_rate(values) / TARGET_RATE)
    return sum((a - b) ** 2 for a, b in zip(shape, TARGET)) + rate**2


class SyntheticObjective:
    def __init__(self, space: SearchSpace, ran: Path | None = None, pause: float = 0.0):
        self.space, self.ran, self.pause = space, ran, pause

    def __call__(self, trial, values: dict[str, float]) -> float:
        if self.ran is not None:
            with open(self.ran, "a", encoding="utf-8") as handle:
                handle.write(f"{trial.number}\n")
        final = distance(self.space, values)
        for step in range(EVAL_EVERY, STEPS, EVAL_EVERY):
            time.sleep(self.pause)  # lets another worker take trials meanwhile
            trial.report(final + (STEPS - step) / STEPS, step)
            trial.set_user_attr("tokens", step * 100)
            if trial.should_prune():
                raise optuna.TrialPruned()
        trial.set_user_attr("tokens", STEPS * 100)
        return final


def run(url: str, study: str, trials: int, ran: Path | None = None, pause: float = 0.0, worker: int = 0, **overrides):
    cfg = settings(trials=trials, **overrides)
    space = SearchSpace(cfg, ROLES)
    return run_worker(cfg, IDENTITY, study, url, space, SyntheticObjective(space, ran, pause), STEPS, EVAL_EVERY, worker=worker)


if __name__ == "__main__":
    url, name, total, ran, worker = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
    run(url, name, total, ran, pause=0.05, worker=worker)
