"""The one interface every rank-allocation strategy implements, and the registry.

A strategy is a `Strategy` (or a subclass) registered under its name:

    plan(anatomy, params, context)  -> ranks {module: int}, or a StrategyOutput whose ranks are a shape
    attach(model, allocation, ctx)  -> Attached: the PEFT model plus optional Trainer callbacks and an
                                       extra training-loss term (default: plain LoRA, checked by `verify`)
    finalize(attached, allocation)  -> the allocation to record after training (default: unchanged)

`needs` says what `plan` reads beyond the model's config ("weights", "data"); `planning` loads
exactly that. `changes` says what a strategy changes compared with uniform LoRA besides where rank
goes ("initialisation", "dynamics"); `controls` lists the suite entries that isolate those effects,
and the built-in suites must carry them. Nothing else in the package asks for a strategy by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..allocation import Allocation, verify
from ..anatomy import Anatomy
from ..errors import UserError

Ranks = dict[str, int]


@dataclass
class StrategyOutput:
    """What a data-driven strategy returns: a rank shape plus what it measured."""

    ranks: dict[str, float]  # shape (rescaled to the budget by `plan`); 0 = not adapted
    scores: dict[str, float] | None = None  # per-module importance, saved with the allocation
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. probe_time_s, probe_batches, method details


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None


@dataclass
class PlanContext:
    """What a strategy's `plan` may read besides the anatomy (filled by `planning` as `needs` says)."""

    model: nn.Module | None = None  # real weights (needs "weights" or "data")
    data: Any = None  # adaptive_lora.data.PreparedData (needs "data"): probes read its training split only
    seed: int = 0  # which training rows a probe reads


@dataclass
class TrainingContext:
    """What `attach` may use: the run's data and schedule."""

    data: Any = None  # PreparedData of the run
    seed: int = 0
    max_steps: int | None = None  # None or -1: known only when the Trainer starts
    lora_dropout: float = 0.0


@dataclass
class Attached:
    model: nn.Module  # the PEFT model
    callbacks: list = field(default_factory=list)  # extra transformers TrainerCallbacks
    extra_loss: Callable[[nn.Module], Any] | None = None  # added to the training loss only, never to eval
    state: Any = None  # whatever `finalize` needs (e.g. AdaLoRA's tracker)
    notes: dict[str, Any] = field(default_factory=dict)  # merged into allocation.meta by the default finalize
    extra_probe_time_s: float = 0.0  # attach-time measuring (e.g. EVA's SVD), counted as probe time


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    plan_fn: Callable[..., Ranks | StrategyOutput]
    params: tuple[Param, ...] = ()
    rank_param: str | None = None  # the parameter that `--rank` / lora_r sets
    needs: tuple[str, ...] = ()  # "weights", "data": what plan() reads besides the config
    changes: tuple[str, ...] = ()  # besides the allocation: "initialisation", "dynamics"
    controls: tuple[dict[str, Any], ...] = ()  # suite entries isolating `changes` (same init at uniform ranks, ...)

    # --- parameters ---
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, params: dict[str, Any] | None, rank: int | None = None) -> dict[str, Any]:
        """Defaults, then the base rank, then user parameters: validated and type-converted."""
        resolved = self.defaults()
        if rank is not None and self.rank_param:
            resolved[self.rank_param] = rank
        known = {p.name: p for p in self.params}
        for key, value in (params or {}).items():
            if key not in known:
                valid = ", ".join(known) or "none"
                raise UserError(f"strategy {self.name!r} has no parameter {key!r}; its parameters are: {valid}")
            resolved[key] = _convert(known[key], value, self.name)
        for p in self.params:
            value = resolved[p.name]
            if p.minimum is not None and value is not None and value < p.minimum:
                raise UserError(f"strategy {self.name!r}: {p.name} must be >= {p.minimum:g}, got {value}")
        return resolved

    # --- the interface ---
    def plan(self, anatomy: Anatomy, params: dict[str, Any], context: PlanContext | None = None) -> StrategyOutput:
        """The strategy's ranks (or rank shape) for `anatomy`; `params` are already resolved."""
        context = context or PlanContext()
        kwargs: dict[str, Any] = {}
        if "weights" in self.needs or "data" in self.needs:
            kwargs["model"] = context.model
        if "data" in self.needs:
            kwargs.update(data=context.data, seed=context.seed)
        output = self.plan_fn(anatomy, **params, **kwargs)
        return output if isinstance(output, StrategyOutput) else StrategyOutput(dict(output))

    def attach(self, model: nn.Module, allocation: Allocation, context: TrainingContext) -> Attached:
        """Wrap `model` (in place) with plain LoRA at the allocation's ranks and alphas, checked by `verify`."""
        from peft import get_peft_model

        peft_model = get_peft_model(model, allocation.to_peft_config(lora_dropout=context.lora_dropout))
        verify(peft_model, allocation)
        return Attached(peft_model)

    def changes_in(self, params: dict[str, Any]) -> tuple[str, ...]:
        """What a run with these (recorded) parameters changed besides the ranks: `changes`, unless a
        parameter turns it off."""
        return self.changes

    def finalize(self, attached: Attached, allocation: Allocation) -> Allocation:
        """The allocation to record once training is over."""
        allocation.meta.update(attached.notes)
        if attached.extra_probe_time_s:
            allocation.meta["probe_time_s"] = float(allocation.meta.get("probe_time_s") or 0.0) + attached.extra_probe_time_s
        return allocation

    def __call__(self, anatomy: Anatomy, params: dict[str, Any] | None = None, rank: int | None = None, **context) -> Ranks:
        """Shorthand for tests and notebooks: resolve parameters and plan, returning the raw ranks."""
        return self.plan(anatomy, self.resolve(params, rank), PlanContext(**context)).ranks


def _convert(param: Param, value: Any, strategy: str) -> Any:
    if value is None or param.type is object:
        return value
    try:
        if param.type is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if param.type is bool and isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        converted = param.type(value)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ValueError
        return converted
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"strategy {strategy!r}: {param.name} must be {param.type.__name__}, got {value!r}") from None


# --- registry -----------------------------------------------------------------------------------

REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    REGISTRY[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    if name not in REGISTRY:
        raise UserError(f"unknown strategy {name!r}; available: {', '.join(sorted(REGISTRY))} (see `adaptive-lora strategies`)")
    return REGISTRY[name]


def all_strategies() -> list[Strategy]:
    return [REGISTRY[name] for name in sorted(REGISTRY)]


def hooks_for(name: str) -> Strategy:
    """The strategy whose attach/finalize train an allocation named `name`: plain LoRA for names that are
    not registered (an allocation loaded from the study's file, say)."""
    return REGISTRY.get(name) or PLAIN_LORA


def base_rank_param(default: int, help: str = "base rank") -> Param:
    return Param("rank", int, default, help, minimum=1)


PLAIN_LORA = Strategy(
    "plain_lora", "static LoRA at given ranks (not registered: used for allocations from files)", lambda anatomy: {}
)
