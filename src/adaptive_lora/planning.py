"""`plan()`: (model, strategy, budget) -> an exact `Allocation`.

Planning needs no weights: a model name is built on the meta device from its config.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .allocation import ALPHA_POLICIES, Allocation, alphas_for
from .anatomy import Anatomy, inspect_model
from .budget import budget_for_rank, count_params, match_budget
from .config import AllocationConfig
from .errors import UserError
from .strategies import StrategyOutput, get_strategy


def anatomy_of(model: str | nn.Module | Anatomy, target_modules: list[str] | None = None, trust_remote_code: bool = False) -> Anatomy:
    if isinstance(model, Anatomy):
        return model.select(target_modules)
    if isinstance(model, str):
        from .models import load_skeleton

        model = load_skeleton(model, trust_remote_code=trust_remote_code)
    return inspect_model(model, target_modules)


def plan(
    model: str | nn.Module | Anatomy = "embedded",
    strategy: str = "uniform",
    params: dict[str, Any] | None = None,
    *,
    rank: int | None = None,
    budget: int | None = None,
    budget_rank: int | None = None,
    alpha_policy: str = "proportional",
    lora_alpha: float = 16.0,
    lora_r: int | None = None,
    min_rank: int = 1,
    max_rank: int = 256,
    target_modules: list[str] | None = None,
    trust_remote_code: bool = False,
    **context: Any,
) -> Allocation:
    """Plan per-module ranks and alphas.

    Without a budget the strategy's ranks are used as defined (the study's mode). With `budget`
    (trainable parameters) or `budget_rank` (what uniform rank r costs) the strategy's shape is
    rescaled to integer ranks in [min_rank, max_rank] within one rank-step of the target.
    `context` passes what data-driven strategies need (model, data, seed ...).
    """
    if alpha_policy not in ALPHA_POLICIES:
        raise UserError(f"unknown alpha policy {alpha_policy!r}; choose one of: {', '.join(ALPHA_POLICIES)}")
    if budget is not None and budget_rank is not None:
        raise UserError("give either a budget (parameters) or a budget rank, not both")
    if rank is not None and rank < 1:
        raise UserError(f"rank must be >= 1, got {rank}")
    if min_rank < 1 or max_rank < min_rank:
        raise UserError(f"need 1 <= min_rank <= max_rank, got min_rank={min_rank}, max_rank={max_rank}")
    anatomy = anatomy_of(model, target_modules, trust_remote_code)
    chosen = get_strategy(strategy)
    resolved = chosen.resolve(params, rank)
    output = chosen.fn(anatomy, **resolved, **_context_for(chosen, context, model))
    if not isinstance(output, StrategyOutput):
        output = StrategyOutput(output)
    ranks, scores, meta = dict(output.ranks), output.scores, dict(output.meta)
    zero = sorted(name for name, r in ranks.items() if r == 0)
    bad = [(name, r) for name, r in ranks.items() if r < 0 or (r == 0 and not chosen.needs)]
    if bad:
        raise UserError(f"strategy {strategy!r} gave module {bad[0][0]} rank {bad[0][1]}; every rank must be >= 1")
    ranks = {name: r for name, r in ranks.items() if r > 0}
    if zero:
        meta["zero_rank_modules"] = zero
    if budget_rank is not None and budget_rank < 1:
        raise UserError(f"budget rank must be >= 1, got {budget_rank}")
    target = budget if budget is not None else (budget_for_rank(anatomy, budget_rank) if budget_rank is not None else None)
    if target is None and chosen.needs:
        # Data-driven strategies give a shape, not ranks: by default they get uniform lora_r's budget.
        target = budget_for_rank(anatomy, lora_r or rank or 8)
    meta.setdefault("shape_params", count_params(anatomy, ranks))  # the strategy's own cost, before any rescaling
    if target is not None:
        ranks = match_budget(anatomy, ranks, target, min_rank, max_rank)
    base_rank = lora_r or rank or resolved.get(chosen.rank_param or "rank") or 8
    alphas = alphas_for(ranks, alpha_policy, lora_alpha, base_rank)
    return Allocation(
        anatomy, ranks, alphas, strategy, _jsonable(resolved), alpha_policy, base_rank, lora_alpha,
        {"target": target, "budget_rank": budget_rank}, scores, meta,
    )


def plan_from_config(model: str | nn.Module | Anatomy, cfg: AllocationConfig, **context: Any) -> Allocation:
    return plan(
        model, cfg.strategy, cfg.params, rank=cfg.lora_r if get_strategy(cfg.strategy).rank_param == "rank" else None,
        budget=cfg.budget, budget_rank=cfg.budget_rank, alpha_policy=cfg.alpha_policy, lora_alpha=cfg.lora_alpha,
        lora_r=cfg.lora_r, min_rank=cfg.min_rank, max_rank=cfg.max_rank, target_modules=cfg.target_modules, **context,
    )


def _context_for(strategy, context: dict[str, Any], model) -> dict[str, Any]:
    if not strategy.needs:
        return {}
    ctx = dict(context)
    if "model" in strategy.needs and "model" not in ctx:
        ctx["model"] = model
    missing = [n for n in strategy.needs if ctx.get(n) is None]
    if missing:
        raise UserError(f"strategy {strategy.name!r} needs {', '.join(missing)} (e.g. --data SRC for a probe on training rows)")
    return {n: ctx[n] for n in strategy.needs}


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is None or isinstance(v, (int, float, str, bool, list, dict))}
