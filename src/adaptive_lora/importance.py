"""Data-driven and dynamic rank allocation, registered as strategies (imported lazily by `strategies`).

    gradient_importance  probes.py     gradient sensitivity / Fisher of the base weights on training batches
    spectrum             spectrum.py   effective / stable rank of each base weight (no data)
    eva                  eva.py        PEFT's EVA: explained variance of each module's inputs; EVA init of A
    adalora              adalora.py    PEFT's AdaLoRA, budget in parameters; the final pattern is recorded
    from_run             from_run.py   a previous run's (learned) allocation, retrained statically

Data-driven strategies return a shape that `plan()` rescales to the parameter budget (by default
uniform lora_r's), so they are compared at exactly the budget the static strategies get.
"""

from __future__ import annotations

from .strategies import Param, Strategy, register


def _lazy(module: str, name: str):
    """Import the implementation on first call: registering must not pull in PEFT's EVA/AdaLoRA code."""
    def call(*args, **kwargs):
        from importlib import import_module

        return getattr(import_module(f"adaptive_lora.{module}"), name)(*args, **kwargs)

    call.__name__ = name
    return call


_SHAPE = (
    Param("temperature", float, 1.0, "shape = score ** temperature (0 uniform, >1 sharper, <0 inverted)"),
    Param("min_rank", float, 1.0, "shape floor: with max_rank bounds the largest/smallest rank ratio before budget matching", 0.0),
    Param("max_rank", float, 32.0, "shape of the best-scored module (only the ratio to min_rank matters)", 0.0),
    Param("normalize", bool, True, "divide each score by its size (per-parameter mean / fraction of full rank)"),
)
_PROBE = (
    Param("probe_batches", int, 4, "training batches the probe reads (never the eval split)", 1),
    Param("probe_batch_size", int, 4, "rows per probe batch", 1),
)

register(Strategy(
    "gradient_importance", "rank shape from a gradient probe on training batches: sensitivity |W*dL/dW| or Fisher (dL/dW)^2",
    _lazy("probes", "gradient_importance"),
    (Param("score", str, "sensitivity", "sensitivity (AdaLoRA's |W*grad|) or fisher (grad^2)"), *_PROBE, *_SHAPE),
    needs=("model", "data", "seed"),
))
register(Strategy(
    "spectrum", "rank shape from each base weight's singular values: effective rank (entropy) or stable rank; no data",
    _lazy("spectrum", "spectrum"),
    (Param("measure", str, "effective_rank", "effective_rank (Roy & Vetterli) or stable_rank (||W||_F^2 / ||W||_2^2)"), *_SHAPE),
    needs=("model",),
))
register(Strategy(
    "eva", "PEFT's EVA: rank pattern from the explained variance of each module's inputs (rho > 1), A initialised by EVA",
    _lazy("eva", "eva"),
    (Param("rank", int, 8, "r EVA redistributes (summed over modules); the shape is then budget-matched", 1),
     Param("rho", float, 2.0, "a module may take up to rho x r components (1 = no redistribution)", 1.0),
     Param("tau", float, 0.99, "cosine similarity at which PEFT's incremental SVD counts as converged", 0.0),
     *_PROBE,
     Param("passes", int, 2, "passes over the probe batches after which the SVD counts as converged", 1),
     Param("use_label_mask", bool, True, "SVD over response tokens only"),
     Param("whiten", bool, False, "whiten the components (EVA option)"),
     Param("init", bool, True, "initialise LoRA A with EVA components at the final ranks when training")),
    rank_param="rank", needs=("model", "data", "seed"),
))
register(Strategy(
    "adalora", "PEFT's AdaLoRA: starts at init_r, prunes to the parameter budget during training; the final ranks are saved",
    _lazy("adalora", "adalora"),
    (Param("rank", int, 8, "the budget is uniform rank r's parameters (or allocation.budget / budget_rank)", 1),
     Param("init_ratio", float, 1.5, "init_r = ceil(init_ratio x the budget's mean rank)", 1.0),
     Param("init_r", int, None, "initial rank of every module (overrides init_ratio)", 1),
     Param("tinit", float, 0.1, "warm-up steps at init_r (< 1: fraction of max_steps)", 0.0),
     Param("tfinal", float, 0.2, "final steps at the fixed final ranks (< 1: fraction of max_steps)", 0.0),
     Param("deltaT", int, 1, "steps between two budget allocations", 1),
     Param("beta1", float, 0.85, "EMA of the sensitivity"),
     Param("beta2", float, 0.85, "EMA of the uncertainty"),
     Param("orth_reg_weight", float, 0.1, "orthogonality penalty weight (training loss only; paper 0.1, PEFT default 0.5)", 0.0),
     Param("budget_unit", str, "params", "params (final pattern within the parameter budget) or rank (PEFT's target_r x modules)"),
     Param("history_points", int, 20, "rank-pattern snapshots kept in meta['rank_history']", 1)),
    rank_param="rank",
))
register(Strategy(
    "from_run", "a previous run's allocation (e.g. AdaLoRA's final ranks), retrained statically; with a budget: rescaled",
    _lazy("from_run", "from_run"),
    (Param("run", str, None, "run directory or allocation.json of the source run"),),
))
