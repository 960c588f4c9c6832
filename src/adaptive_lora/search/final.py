"""The final stage: the search's best allocations and uniform, each at its own chosen learning rate, retrained
with fresh seeds as an ordinary suite (report, recommend and export read it unchanged), plus search.json: the
search's history for the report (schema.write_search_record).

Choices read validation losses only. Uniform's rate is that of its best trial in the same study (the
enqueued uniform trials, or any trial whose allocation came out uniform), so both sides are tuned alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optuna.trial import TrialState

from ..anatomy import Anatomy
from ..config import RunConfig
from ..counts import count_label
from ..errors import UserError
from ..planning import plan
from ..schema import ATTENTION_ROLES, SEARCH_FORMAT
from ..sweep.suite import Budget
from .settings import SearchConfig
from .space import LR, SearchSpace
from .trial import FAMILY


@dataclass
class Pick:
    number: int  # the trial
    value: float  # its validation loss in the search (one seed, the minimum of many: optimistic)
    rate: float
    params: dict[str, Any]  # the profile's parameters
    ranks: dict[str, int]

    @property
    def label(self) -> str:
        return f"search trial {self.number}"

    def to_dict(self) -> dict[str, Any]:
        return {"trial": self.number, "label": self.label, "value": self.value, "learning_rate": self.rate, "params": self.params}


def ranks_at_budget(anatomy: Anatomy, run: RunConfig, params: dict[str, Any], budget: Budget) -> dict[str, int]:
    a = run.allocation
    return plan(
        anatomy, FAMILY, params, budget=budget.params, budget_rank=budget.rank, min_rank=a.min_rank, max_rank=a.max_rank
    ).ranks


def choose(study, space: SearchSpace, anatomy: Anatomy, run: RunConfig, budget: Budget, top: int) -> tuple[Pick, list[Pick]]:
    """(uniform's best trial, the best `top` trials with distinct non-uniform allocations), on validation loss."""
    uniform_ranks = ranks_at_budget(anatomy, run, space.profile_params(space.uniform_point(space.cfg.lr_min)), budget)
    complete = sorted(
        (t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number)
    )
    uniform, picks, seen = None, [], set()
    for trial in complete:
        params = space.profile_params(trial.params)
        ranks = ranks_at_budget(anatomy, run, params, budget)
        pick = Pick(trial.number, float(trial.value), space.learning_rate(trial.params), params, ranks)
        if ranks == uniform_ranks:
            uniform = uniform or pick
        elif len(picks) < top and tuple(sorted(ranks.items())) not in seen:
            seen.add(tuple(sorted(ranks.items())))
            picks.append(pick)
    if uniform is None:
        raise UserError(
            "search: no uniform trial has finished, so uniform has no learning rate of its own yet; run the search longer (--trials)"
        )
    if not picks:
        raise UserError("search: no non-uniform trial has finished; run the search longer (--trials) before the final stage")
    return uniform, picks


def capacity_role(anatomy: Anatomy) -> str:
    """The capacity control's role: v as in the built-in suites, else the model's first attention role."""
    roles = anatomy.roles()
    return "v" if "v" in roles else next((r for r in roles if r in ATTENTION_ROLES), roles[0])


def final_suite(
    run: RunConfig, cfg: SearchConfig, uniform: Pick, picks: list[Pick], anatomy: Anatomy, name: str
) -> dict[str, Any]:
    """The suite of the final stage: uniform, the picks and the capacity control, at their own rates, on fresh seeds."""
    data = run.to_dict()
    allocation = {k: v for k, v in data["allocation"].items() if k not in ("strategy", "params", "budget", "budget_rank")}
    training = {k: v for k, v in data["training"].items() if k not in ("seed", "eval_steps")}
    role = capacity_role(anatomy)
    strategies = [{"strategy": "uniform", "label": "uniform", "learning_rate": uniform.rate}]
    strategies += [{"strategy": FAMILY, "label": p.label, "params": p.params, "learning_rate": p.rate} for p in picks]
    strategies.append(
        {
            "strategy": "uniform",
            "label": f"control: r1 on {role}",
            "params": {"rank": 1},
            "allocation": {"target_modules": [role]},
            "budget": "own",
            "role": "capacity-control",
            "learning_rate": uniform.rate,
        }
    )
    return {
        "name": name,
        "description": f"adaptive-lora search, final stage: the best {len(picks)} searched allocations and uniform at "
        f"budget {cfg.budget}, each at its own learning rate, retrained on seeds {cfg.final_seeds}",
        "model": data["model"],
        "data": data["data"],
        "training": training,
        "allocation": allocation,
        "eval": data["eval"],
        "strategies": strategies,
        "budgets": [cfg.budget],
        "seeds": list(cfg.final_seeds),
        "baseline": "uniform",
    }


def search_record(
    study, space: SearchSpace, budget: Budget, target: int, uniform: Pick | None, picks: list[Pick], anatomy: Anatomy, extra: dict
) -> dict[str, Any]:
    """search.json: every trial (state, value, intermediate values, tokens, parameters), importances, choices."""
    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "kind": t.user_attrs.get("kind", "search"),
                "status": t.user_attrs.get("status"),
                "value": t.value if t.state == TrialState.COMPLETE else None,
                "intermediate": [[int(step), float(v)] for step, v in sorted(t.intermediate_values.items())],
                "tokens": t.user_attrs.get("tokens"),
                "learning_rate": t.params.get(LR, space.cfg.lr_min) if t.params else None,
                "params": dict(t.params),
                "worker": t.user_attrs.get("worker"),
            }
        )
    best = picks[0] if picks else None
    modules = {m.name: m for m in anatomy.modules}
    return {
        "format": SEARCH_FORMAT,
        "study": study.study_name,
        "budget": {"label": budget.label, "params": target, "params_label": count_label(target)},
        "space": [d.to_dict() for d in space.dimensions],
        "trials": trials,
        "importances": importances(study),
        "uniform": uniform.to_dict() if uniform else None,
        "candidates": [p.to_dict() for p in picks],
        "best": best.to_dict()
        | {"modules": [{"layer": modules[n].layer, "role": modules[n].role, "rank": r} for n, r in best.ranks.items()]}
        if best
        else None,
        **extra,
    }


def importances(study) -> dict[str, float] | None:
    """Optuna's own parameter importances (its default evaluator), or None with too few finished trials."""
    import optuna

    try:
        return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None
