"""`adalora`: PEFT's AdaLoRA (Zhang et al., 2023) as the dynamic baseline, at the same parameter budget.

AdaLoRA parameterises each update as P diag(E) Q (PEFT: lora_B, lora_E, lora_A), starts every module
at `init_r`, and during training masks the triplets (one singular value with its two vectors) with
the lowest smoothed sensitivity |w * dL/dw| until the budget is reached, on a cubic schedule:
`tinit` warm-up steps at full rank, budgeting until `total_step - tfinal`, then fixed ranks.

Budget matching. PEFT's RankAllocator counts its budget in summed ranks (`target_r * n_modules`),
but one rank of an MLP projection costs more parameters than one of a k-projection, so its final
pattern could cost anything. By default (`budget_unit=params`) we keep PEFT's scores, schedule and
masking and count the budget in parameters: triplets are kept in order of importance while their
cost (in + out per rank, what a static LoRA rank costs) fits the budget, so the final pattern costs
at most the budget and at least the budget minus one rank-step, like `match_budget`. The budget is
the plan's target (e.g. uniform r8's parameters), or the planned uniform allocation's cost.
`budget_unit=rank` keeps PEFT's allocator unchanged (target_r = round(budget / sum(in + out))).
E adds one scalar per kept rank (`meta["e_params"]`); the reported trainable parameters are the
final ranks' LoRA-equivalent count sum(r * (in + out)), comparable with every static run; during
training AdaLoRA holds init_r ranks everywhere (`meta["trainable_params_during_training"]`).

`init_r` defaults to ceil(init_ratio x the budget's mean rank); `target_r` is that mean rank,
rounded (informational under budget_unit=params). `tinit`/`tfinal` below 1 are fractions of the
Trainer's max_steps (set in on_train_begin), else step counts. `update_and_allocate` runs in
`on_optimizer_step` (after optimizer.step(), before zero_grad) with the 1-based step just taken.
The orthogonality penalty is added to the training loss only (`extra_loss`); eval loss stays plain
cross-entropy. Scaling: PEFT divides by the fixed `init_r`; we set AdaLoRA's alpha so that this
equals the run's LoRA scaling at rank init_r (proportional: lora_alpha / lora_r).
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from torch import nn

from ..allocation import Allocation, adapted_modules, alphas_for
from ..anatomy import Anatomy
from ..errors import UserError
from .adalora_budget import ADAPTER, module_of, orthogonality_penalty, param_budget_allocator
from .base import Attached, Param, Strategy, TrainingContext, register

log = logging.getLogger(__name__)
BUDGET_UNITS = ("params", "rank")


def adalora(
    anatomy: Anatomy,
    *,
    rank: int,
    init_ratio: float,
    init_r: int | None,
    tinit: float,
    tfinal: float,
    deltaT: int,
    beta1: float,
    beta2: float,
    orth_reg_weight: float,
    budget_unit: str,
    history_points: int,
    prune: bool,
) -> dict[str, int]:
    """The plan: uniform rank r, i.e. the budget AdaLoRA's final pattern is matched to (with a budget: rescaled)."""
    if budget_unit not in BUDGET_UNITS:
        raise UserError(f"adalora: budget_unit must be one of {', '.join(BUDGET_UNITS)}, got {budget_unit!r}")
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if not 0 < value < 1:
            raise UserError(f"adalora: {name} must be in (0, 1), got {value}")
    if init_ratio < 1:
        raise UserError(f"adalora: init_ratio must be >= 1 (AdaLoRA only removes rank), got {init_ratio}")
    return {m.name: rank for m in anatomy.modules}


def current_ranks(adalora_model, names: list[str], init_r: int) -> dict[str, int]:
    pattern = adalora_model.peft_config[ADAPTER].rank_pattern
    if not pattern:
        return {n: init_r for n in names}
    ranks = {module_of(k): int(sum(bool(x) for x in v)) for k, v in pattern.items()}
    return {n: ranks.get(n, init_r) for n in names}


# --- attach, callback, finalize ----------------------------------------------------------------


class AdaLoraStrategy(Strategy):
    """Plans uniform rank r (the budget); training runs PEFT's AdaLoRA, and `finalize` records where rank ended."""

    def attach(self, model: nn.Module, allocation: Allocation, context: TrainingContext) -> Attached:
        from peft import AdaLoraConfig, get_peft_model

        p = self.resolve(
            {k: v for k, v in (allocation.params or {}).items() if k in {q.name for q in self.params} and k != "rank"}
        )
        per_rank = sum(m.params_per_rank for m in allocation.modules)
        budget = int(allocation.budget.get("target") or allocation.trainable_params)
        mean_rank = budget / per_rank
        if p["prune"]:
            init_r = int(p["init_r"] or max(math.ceil(p["init_ratio"] * mean_rank), math.floor(mean_rank) + 1))
        else:  # the control: AdaLoRA's parameterisation and penalty at fixed, uniform ranks within the budget
            init_r = max(1, math.floor(mean_rank))
        if init_r * per_rank < budget and p["prune"]:
            raise UserError(
                f"adalora: init_r={init_r} starts below the budget ({budget:,} parameters = mean rank {mean_rank:.2f}); raise init_r"
            )
        scaling = _scaling(allocation, init_r)
        max_steps = context.max_steps if context.max_steps and context.max_steps > 0 else 1000  # replaced on_train_begin
        config = AdaLoraConfig(
            init_r=init_r,
            target_r=max(1, round(mean_rank)),
            tinit=0,
            tfinal=0,
            deltaT=int(p["deltaT"]),
            beta1=p["beta1"],
            beta2=p["beta2"],
            orth_reg_weight=p["orth_reg_weight"],
            total_step=max_steps,
            lora_alpha=scaling * init_r,
            lora_dropout=context.lora_dropout,
            target_modules=[m.name for m in allocation.modules],
            task_type="CAUSAL_LM",
            bias="none",
            fan_in_fan_out=any(m.conv1d for m in allocation.modules),
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            peft_model = get_peft_model(model, config)
        # On a bf16 base, PEFT's cast of the adapters to fp32 re-creates AdaLoRA's `ranknum` (a constant that
        # divides the scaling) as a trainable Parameter; the optimizer would then train it.
        for name, param in peft_model.named_parameters():
            if ".ranknum." in name:
                param.requires_grad_(False)
        check_adalora(peft_model, allocation, init_r)
        inner = peft_model.base_model  # the AdaLoraModel
        if p["budget_unit"] == "params":
            inner.rankallocator = param_budget_allocator()(inner.model, inner.peft_config[ADAPTER], ADAPTER, budget)
        tracker = AdaLoraTracker(inner, [m.name for m in allocation.modules], init_r, p, budget)
        info = {
            "init_r": init_r,
            "target_r": config.target_r,
            "budget_params": budget,
            "budget_unit": p["budget_unit"],
            "prune": p["prune"],
            "lora_alpha_adalora": scaling * init_r,
            "scaling": scaling,
            "trainable_params_during_training": sum(init_r * (m.params_per_rank + 1) for m in allocation.modules),
        }
        return Attached(
            peft_model,
            callbacks=[tracker.callback()],
            extra_loss=orthogonality_penalty(p["orth_reg_weight"]),
            state=(tracker, info),
        )

    def finalize(self, attached: Attached, allocation: Allocation) -> Allocation:
        tracker, info = attached.state
        return finalize_adalora(allocation, tracker, info)


def check_adalora(peft_model, allocation, init_r: int) -> None:
    """AdaLoRA's own `verify`: every planned module has P (out x init_r), E (init_r x 1), Q (init_r x in)."""
    planned, seen, problems = allocation.anatomy.by_name(), set(), []
    for key, module in adapted_modules(peft_model, "lora_E", ADAPTER):
        seen.add(key)
        if key not in allocation.ranks:
            problems.append(f"{key}: adapted but not planned")
            continue
        m = planned[key]
        shapes = tuple(tuple(getattr(module, part)[ADAPTER].shape) for part in ("lora_A", "lora_E", "lora_B"))
        if shapes != ((init_r, m.in_features), (init_r, 1), (m.out_features, init_r)):
            problems.append(f"{key}: A/E/B shapes {shapes}, expected init_r={init_r} for {m.in_features}->{m.out_features}")
    missing = sorted(set(allocation.ranks) - seen)
    if missing:
        problems.append(f"{len(missing)} planned modules have no AdaLoRA adapter, e.g. {missing[0]}")
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    expected = sum(init_r * (m.params_per_rank + 1) for m in allocation.modules)
    if trainable != expected:
        problems.append(f"trainable parameters {trainable:,} != {expected:,} (init_r x (in + out + 1) per module)")
    if problems:
        raise RuntimeError(
            f"the AdaLoRA model does not match the allocation ({len(problems)} problems): " + "; ".join(problems[:5])
        )


class AdaLoraTracker:
    """Drives `update_and_allocate` and records the rank pattern over training."""

    def __init__(self, adalora_model, names: list[str], init_r: int, params: dict[str, Any], budget: int):
        self.model, self.names, self.init_r, self.params, self.budget = adalora_model, names, init_r, params, budget
        self.history: list[tuple[int, list[int]]] = []
        self.schedule: dict[str, int] = {}
        self.every = 1

    def begin(self, total: int) -> None:
        config = self.model.peft_config[ADAPTER]
        tinit, tfinal = _steps(self.params["tinit"], total), _steps(self.params["tfinal"], total)
        fixed_tfinal = min(tfinal, max(total - 1, 0))
        fixed_tinit = min(tinit, max(total - fixed_tfinal - 1, 0))
        if (fixed_tinit, fixed_tfinal) != (tinit, tfinal):
            log.warning(
                "adalora: tinit=%s tfinal=%s leave no budgeting phase in %d steps; using tinit=%d tfinal=%d",
                tinit,
                tfinal,
                total,
                fixed_tinit,
                fixed_tfinal,
            )
        config.total_step, config.tinit, config.tfinal = total, fixed_tinit, fixed_tfinal
        self.schedule = {"total_step": total, "tinit": fixed_tinit, "tfinal": fixed_tfinal, "deltaT": config.deltaT}
        self.every = max(1, math.ceil(total / max(1, int(self.params["history_points"]))))
        self.history = [(0, [self.init_r] * len(self.names))]

    def step(self, step: int) -> None:
        if self.params["prune"]:
            self.model.update_and_allocate(step)
        if step % self.every == 0 or step == self.schedule.get("total_step"):
            ranks = current_ranks(self.model, self.names, self.init_r)
            self.history.append((step, [ranks[n] for n in self.names]))

    def callback(self):
        from transformers import TrainerCallback

        tracker = self

        class AdaLoraCallback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                tracker.begin(int(state.max_steps))

            def on_optimizer_step(self, args, state, control, **kwargs):
                tracker.step(state.global_step + 1)  # global_step is incremented after this event

        return AdaLoraCallback()


def finalize_adalora(allocation, tracker: AdaLoraTracker, info: dict[str, Any]):
    """The allocation AdaLoRA ended with: ranks = kept triplets per module, 0-rank modules listed."""
    ranks = current_ranks(tracker.model, tracker.names, tracker.init_r)
    final = {n: r for n, r in ranks.items() if r > 0}
    meta = {
        **allocation.meta,
        "method": "adalora",
        **info,
        "schedule": tracker.schedule,
        "initial_ranks": {n: tracker.init_r for n in tracker.names},
        "rank_history": {
            "modules": tracker.names,
            "steps": [s for s, _ in tracker.history],
            "ranks": [r for _, r in tracker.history],
        },
        "zero_rank_modules": sorted(n for n, r in ranks.items() if r == 0),
        "e_params": sum(final.values()),
        "planned_trainable_params": allocation.trainable_params,
    }
    scores = getattr(tracker.model.rankallocator, "last_scores", None) or allocation.scores
    if not final:
        allocation.meta.update(meta, final_pattern_empty=True)
        return allocation
    return Allocation(
        allocation.anatomy,
        final,
        alphas_for(final, allocation.alpha_policy, allocation.lora_alpha, allocation.lora_r),
        allocation.strategy,
        allocation.params,
        allocation.alpha_policy,
        allocation.lora_r,
        allocation.lora_alpha,
        allocation.budget,
        dict(scores) if scores else None,
        meta,
    )


# --- helpers --------------------------------------------------------------------------------------


def _scaling(allocation, init_r: int) -> float:
    """The LoRA scaling this run's alpha policy gives at rank init_r (AdaLoRA divides by init_r throughout)."""
    if allocation.alpha_policy == "proportional":
        return allocation.lora_alpha / allocation.lora_r
    if allocation.alpha_policy == "rslora":
        return allocation.lora_alpha / math.sqrt(init_r)
    return allocation.lora_alpha / init_r


def _steps(value: float, total: int) -> int:
    return int(value * total) if 0 <= value < 1 else int(value)


register(
    AdaLoraStrategy(
        "adalora",
        "PEFT's AdaLoRA: starts at init_r, prunes to the parameter budget during training; the final ranks are saved",
        adalora,
        (
            Param("rank", int, 8, "the budget is uniform rank r's parameters (or allocation.budget / budget_rank)", 1),
            Param("init_ratio", float, 1.5, "init_r = ceil(init_ratio x the budget's mean rank)", 1.0),
            Param("init_r", int, None, "initial rank of every module (overrides init_ratio)", 1),
            Param("tinit", float, 0.1, "warm-up steps at init_r (< 1: fraction of max_steps)", 0.0),
            Param("tfinal", float, 0.2, "final steps at the fixed final ranks (< 1: fraction of max_steps)", 0.0),
            Param("deltaT", int, 1, "steps between two budget allocations", 1),
            Param("beta1", float, 0.85, "EMA of the sensitivity"),
            Param("beta2", float, 0.85, "EMA of the uncertainty"),
            Param(
                "orth_reg_weight",
                float,
                0.1,
                "orthogonality penalty weight (training loss only; paper 0.1, PEFT default 0.5)",
                0.0,
            ),
            Param(
                "budget_unit",
                str,
                "params",
                "params (final pattern within the parameter budget) or rank (PEFT's target_r x modules)",
            ),
            Param("history_points", int, 20, "rank-pattern snapshots kept in meta['rank_history']", 1),
            Param(
                "prune",
                bool,
                True,
                "reallocate rank during training (false: AdaLoRA's parameterisation at fixed uniform ranks, the control)",
            ),
        ),
        rank_param="rank",
        changes=("dynamics",),
        controls=({"label": "adalora dynamics, uniform ranks", "params": {"prune": False}, "isolates": "dynamics"},),
    )
)
