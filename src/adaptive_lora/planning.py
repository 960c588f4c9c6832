"""`plan()`: (model, strategy, budget) -> an exact `Allocation`.

Planning owns its inputs: a model name is built on the meta device from its config alone, unless
the strategy measures weights or data (`Strategy.needs`); then the weights, the tokenizer and the
training rows are loaded here, so no caller has to set them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .allocation import ALPHA_POLICIES, Allocation, alphas_for
from .anatomy import Anatomy, inspect_model
from .budget import budget_for_rank, count_params, match_budget
from .config import AllocationConfig, DataConfig, TrainingConfig
from .data import PreparedData, prepare_data
from .environment import load_dtype, resolve_device, resolve_precision
from .errors import UserError
from .io import read_json
from .models import load_model, load_skeleton, load_tokenizer
from .schema import read_allocation
from .strategies import PlanContext, Strategy, get_strategy
from .strategies.custom import custom as custom_ranks

DEFAULTS = AllocationConfig()  # the one source of planning defaults (lora_alpha, min/max rank)


def anatomy_of(
    model: str | nn.Module | Anatomy, target_modules: list[str] | None = None, trust_remote_code: bool = False
) -> Anatomy:
    if isinstance(model, Anatomy):
        return model.select(target_modules)
    if isinstance(model, str):
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
    alpha_policy: str = DEFAULTS.alpha_policy,
    lora_alpha: float = DEFAULTS.lora_alpha,
    lora_r: int | None = None,
    min_rank: int = DEFAULTS.min_rank,
    max_rank: int = DEFAULTS.max_rank,
    target_modules: list[str] | None = None,
    trust_remote_code: bool = False,
    data: PreparedData | str | DataConfig | None = None,
    seed: int = 0,
    sequence_len: int = TrainingConfig.sequence_len,
) -> Allocation:
    """Plan per-module ranks and alphas.

    Without a budget the strategy's ranks are used as defined (the study's mode). With `budget`
    (trainable parameters) or `budget_rank` (what uniform rank r costs) the strategy's shape is
    rescaled to integer ranks in [min_rank, max_rank] (see `budget.match_budget`). Data-driven
    strategies read `data` (prepared rows, a source name or a DataConfig; training split only) with
    probe rows chosen by `seed`.
    """
    if alpha_policy not in ALPHA_POLICIES:
        raise UserError(f"unknown alpha policy {alpha_policy!r}; choose one of: {', '.join(ALPHA_POLICIES)}")
    if budget is not None and budget_rank is not None:
        raise UserError("give either a budget (parameters) or a budget rank, not both")
    if rank is not None and rank < 1:
        raise UserError(f"rank must be >= 1, got {rank}")
    if budget_rank is not None and budget_rank < 1:
        raise UserError(f"budget rank must be >= 1, got {budget_rank}")
    if min_rank < 1 or max_rank < min_rank:
        raise UserError(f"need 1 <= min_rank <= max_rank, got min_rank={min_rank}, max_rank={max_rank}")
    chosen = get_strategy(strategy)
    resolved = chosen.resolve(params, rank)
    context = _plan_context(chosen, model, data, seed, sequence_len, trust_remote_code)
    anatomy = anatomy_of(context.model if context.model is not None else model, target_modules, trust_remote_code)
    output = chosen.plan(anatomy, resolved, context)
    ranks, scores, meta = dict(output.ranks), output.scores, dict(output.meta)
    zero = sorted(name for name, r in ranks.items() if r == 0)
    bad = [(name, r) for name, r in ranks.items() if r < 0 or (r == 0 and not chosen.needs)]
    if bad:
        raise UserError(f"strategy {strategy!r} gave module {bad[0][0]} rank {bad[0][1]}; every rank must be >= 1")
    ranks = {name: r for name, r in ranks.items() if r > 0}
    if zero:
        meta["zero_rank_modules"] = zero
    target = budget if budget is not None else (budget_for_rank(anatomy, budget_rank) if budget_rank is not None else None)
    if target is None and chosen.needs:
        # Data-driven strategies give a shape, not ranks: by default they get uniform lora_r's budget.
        target = budget_for_rank(anatomy, lora_r or rank or DEFAULTS.lora_r)
    meta.setdefault("shape_params", count_params(anatomy, ranks))  # the strategy's own cost, before any rescaling
    if target is not None:
        ranks = match_budget(anatomy, ranks, target, min_rank, max_rank)
    base_rank = lora_r or rank or resolved.get(chosen.rank_param or "rank") or DEFAULTS.lora_r
    alphas = alphas_for(ranks, alpha_policy, lora_alpha, base_rank)
    return Allocation(
        anatomy,
        ranks,
        alphas,
        strategy,
        _jsonable(resolved),
        alpha_policy,
        base_rank,
        lora_alpha,
        {"target": target, "budget_rank": budget_rank},
        scores,
        meta,
    )


def plan_from_config(model: str | nn.Module | Anatomy, cfg: AllocationConfig, **inputs: Any) -> Allocation:
    """`plan` with an AllocationConfig; `inputs` are plan's data, seed, sequence_len, trust_remote_code."""
    return plan(
        model,
        cfg.strategy,
        cfg.params,
        rank=cfg.lora_r if get_strategy(cfg.strategy).rank_param == "rank" else None,
        budget=cfg.budget,
        budget_rank=cfg.budget_rank,
        alpha_policy=cfg.alpha_policy,
        lora_alpha=cfg.lora_alpha,
        lora_r=cfg.lora_r,
        min_rank=cfg.min_rank,
        max_rank=cfg.max_rank,
        target_modules=cfg.target_modules,
        **inputs,
    )


def _plan_context(strategy: Strategy, model, data, seed: int, sequence_len: int, trust_remote_code: bool) -> PlanContext:
    """Load what the strategy reads: real weights for "weights"/"data", and training rows for "data"."""
    if not strategy.needs:
        return PlanContext(seed=seed)
    if isinstance(model, Anatomy):
        raise UserError(f"strategy {strategy.name!r} measures the model's weights; pass the model (or its name), not an Anatomy")
    if isinstance(model, str):
        device = resolve_device("auto")
        loaded = load_model(model, load_dtype(resolve_precision("auto", device)), device, trust_remote_code)
        loaded.requires_grad_(False)
        loaded.eval()
    else:
        loaded = model
    if "data" in strategy.needs and not isinstance(data, PreparedData):
        if data is None:
            raise UserError(f"strategy {strategy.name!r} probes training data: add --data SRC (e.g. --data builtin)")
        if not isinstance(model, str):
            raise UserError(
                f"strategy {strategy.name!r}: pass prepared data (adaptive_lora.data.prepare_data) with a loaded model"
            )
        config = data if isinstance(data, DataConfig) else DataConfig(source=str(data))
        data = prepare_data(config, load_tokenizer(model, trust_remote_code), sequence_len)
    return PlanContext(model=loaded, data=data, seed=seed)


def load_allocation(
    path: str | Path,
    anatomy: Anatomy,
    alpha_policy: str = DEFAULTS.alpha_policy,
    lora_alpha: float = DEFAULTS.lora_alpha,
    lora_r: int = DEFAULTS.lora_r,
) -> Allocation:
    """An allocation.json, the study's {"strategy_name", "layer_ranks"} file, or a {module: rank} map, onto `anatomy`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"allocation file {path} does not exist")
    try:
        data = read_json(path)
    except ValueError as exc:
        raise UserError(f"allocation file {path} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("modules"), (list, dict)):  # a list, or the table adaptive-lora writes
        return Allocation.from_record(read_allocation(path), anatomy, str(path))
    ranks = custom_ranks(anatomy, layer_ranks=None, module_ranks=None, file=str(path), default=None)
    name = data.get("strategy_name", "custom") if isinstance(data, dict) else "custom"
    return Allocation(
        anatomy,
        ranks,
        alphas_for(ranks, alpha_policy, lora_alpha, lora_r),
        name,
        {"file": str(path)},
        alpha_policy,
        lora_r,
        lora_alpha,
    )


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is None or isinstance(v, (int, float, str, bool, list, dict))}
