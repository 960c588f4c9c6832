"""One search trial = one training run of the `profile` family at the budget, on the training and validation
splits only: the base its worker shares has no test rows at all, generation and the forgetting measure are
off, and the run reports each intermediate validation to the trial, whose pruner may stop it (`pruned`).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import optuna

from ..config import RunConfig
from ..sweep.suite import Budget
from ..training import BaseContext, Pruned, prepare_base, train
from .progress import TrialProgress
from .settings import SearchConfig
from .space import SearchSpace
from .study import TrialFailed

FAMILY = "profile"  # the strategy whose parameters the search explores (strategies/profile.py)
TRIALS_DIR = "trials"


def trial_config(
    run: RunConfig, cfg: SearchConfig, space: SearchSpace, budget: Budget, values: dict, eval_every: int, run_dir: Path
) -> RunConfig:
    """The run config of a trial: the family's point at the budget, the trial's rate, the search's seed."""
    return run.with_overrides(
        {
            "allocation.strategy": FAMILY,
            "allocation.params": space.profile_params(values),
            "allocation.budget": budget.params,
            "allocation.budget_rank": budget.rank,
            "training.learning_rate": space.learning_rate(values),
            "training.seed": cfg.seed,
            "training.eval_steps": eval_every,
            "eval.generate": False,
            "eval.on_validation": False,
            "eval.forgetting": None,
            "output.dir": str(run_dir),
            "output.overwrite": True,
            "output.save_adapter": False,
        }
    )


def training_steps(n_train: int, run: RunConfig) -> int:
    """Optimizer steps of one trial, as the Trainer counts them (max_steps, else epochs x batches)."""
    t = run.training
    if t.max_steps and t.max_steps > 0:
        return t.max_steps
    batches = math.ceil(n_train / max(1, t.micro_batch_size))
    per_epoch = max(1, math.ceil(batches / max(1, t.gradient_accumulation_steps)))
    return max(1, math.ceil(t.num_epochs * per_epoch))


def without_test_split(base: BaseContext) -> BaseContext:
    """The base with its test rows removed, so no trial can score (or select on) the test split."""
    base.data = dataclasses.replace(base.data, test=[], test_records=[])
    return base


class TrainingObjective:
    """objective(trial, values) for search/study.py: train the trial, report validations, return the final one."""

    def __init__(
        self,
        run: dict[str, Any],
        cfg: SearchConfig,
        space: SearchSpace,
        budget: Budget,
        search_dir: str,
        steps: int,
        eval_every: int,
        label: str = "",
    ):
        self.run, self.cfg, self.space, self.budget = RunConfig.from_dict(run), cfg, space, budget
        self.search_dir, self.steps, self.eval_every = Path(search_dir), steps, eval_every
        self.progress = TrialProgress(steps, quiet=cfg.quiet, prefix=label)
        self.base: BaseContext | None = None

    def __call__(self, trial, values: dict[str, float]) -> float:
        run_dir = self.search_dir / TRIALS_DIR / f"trial-{trial.number:04d}"
        config = trial_config(self.run, self.cfg, self.space, self.budget, values, self.eval_every, run_dir)
        if self.base is None or not self.base.compatible_with(config):
            self.base = without_test_split(prepare_base(config))
        trial.set_user_attr("run_dir", str(run_dir.relative_to(self.search_dir)))
        kind = trial.user_attrs.get("kind", "search")
        line = self.progress.start(trial.number, kind, self.space.learning_rate(values))

        def on_eval(step: int, loss: float, tokens: int) -> None:
            trial.report(loss, step)
            trial.set_user_attr("tokens", tokens)
            pruned = trial.should_prune()
            line.evaluated(step, loss, pruned)
            if pruned:
                raise Pruned(step)

        try:
            result = train(
                config,
                base=self.base,
                progress=line.step,
                run_id=run_dir.name,
                labels={"label": f"trial {trial.number}", "budget_label": self.budget.label},
                keep_failures=True,
                on_eval=on_eval,
            )
        except KeyboardInterrupt:
            line.finish("interrupted")
            raise
        trial.set_user_attr("tokens", int(result.get("tokens_seen") or 0))
        trial.set_user_attr("steps", int(result.get("steps") or 0))
        trial.set_user_attr("trainable_params", result.get("trainable_params"))
        status = result["status"]
        if status == "pruned":
            line.finish("pruned")
            raise optuna.TrialPruned()
        if status != "done":
            line.finish(f"{status}: {result.get('error')}")
            raise TrialFailed(f"{status}: {result.get('error')}")
        value = float(result["eval_loss"])
        if result.get("steps"):
            trial.report(value, int(result["steps"]))  # the curve's last point (after the last pruning decision)
        line.finish("kept", value)
        return value
