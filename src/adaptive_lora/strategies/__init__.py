"""Rank-allocation strategies: one interface (`base.Strategy`), one file per strategy family.

    static       uniform, linear_decay, linear_increase, attention_heavy, mlp_heavy, empirical (the study's)
    custom       your own ranks: per-layer list, per-module/regex map, or a JSON file
    gradient     gradient_importance: sensitivity / Fisher of the base weights on training batches
    spectrum     spectrum: effective / stable rank of each base weight (no data)
    eva          eva: PEFT's EVA (explained variance of module inputs; EVA initialisation of A)
    adalora      adalora: PEFT's AdaLoRA with its budget in parameters (adalora_budget: its allocator and penalty)
    from_run     from_run: a previous run's allocation, retrained statically
    profile      profile: depth profile x role weights x base rank (the family `adaptive-lora search` explores)

Adding a strategy: write one file that calls `register(Strategy(...))` and import it below.
"""

from . import adalora, custom, eva, from_run, gradient, profile, spectrum, static  # noqa: F401 - they register themselves
from .base import (
    REGISTRY,
    Attached,
    Param,
    PlanContext,
    Ranks,
    Strategy,
    StrategyOutput,
    TrainingContext,
    all_strategies,
    get_strategy,
    hooks_for,
    register,
)

__all__ = [
    "REGISTRY",
    "Attached",
    "Param",
    "PlanContext",
    "Ranks",
    "Strategy",
    "StrategyOutput",
    "TrainingContext",
    "all_strategies",
    "get_strategy",
    "hooks_for",
    "register",
]
