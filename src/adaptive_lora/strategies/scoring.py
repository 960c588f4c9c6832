"""Shared pieces of the data-driven strategies: per-module scores -> a rank *shape*, probe batches
drawn from the training split, and access to the base weights a score is measured on.

A shape only has to be proportional to the ranks we want: `plan()` rescales it to the parameter
budget with `budget.match_budget`, so every data-driven strategy spends exactly what a static one does.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..data import Collator
from ..errors import UserError
from .base import Param

SHAPE_PARAMS = (
    Param("temperature", float, 1.0, "shape = score ** temperature (0 uniform, >1 sharper, <0 inverted)"),
    Param(
        "min_rank", float, 1.0, "shape floor: with max_rank bounds the largest/smallest rank ratio before budget matching", 0.0
    ),
    Param("max_rank", float, 32.0, "shape of the best-scored module (only the ratio to min_rank matters)", 0.0),
    Param("normalize", bool, True, "divide each score by its size (per-parameter mean / fraction of full rank)"),
)
PROBE_PARAMS = (
    Param("probe_batches", int, 4, "training batches the probe reads (never the eval split)", 1),
    Param("probe_batch_size", int, 4, "rows per probe batch", 1),
)


def scores_to_shape(scores: dict[str, float], temperature: float, min_rank: float, max_rank: float) -> dict[str, float]:
    """shape = clamp(max_rank * (s / s_top) ** temperature, min_rank, max_rank).

    The best-scored module gets `max_rank`; `min_rank` bounds the ratio between the largest and the
    smallest shape entry (before budget matching rescales everything). temperature 0 is uniform,
    1 proportional, > 1 sharper; negative inverts (more rank where the score is low). A score <= 0
    (e.g. a module that does not affect the loss) gets `min_rank`, which may be 0 = not adapted.
    """
    if max_rank <= 0 or min_rank < 0 or min_rank > max_rank:
        raise UserError(f"need 0 <= min_rank <= max_rank and max_rank > 0, got min_rank={min_rank}, max_rank={max_rank}")
    positive = {n: float(s) for n, s in scores.items() if s is not None and math.isfinite(s) and s > 0}
    if not positive:  # nothing measured (all gradients zero): fall back to a uniform shape
        return {n: float(max_rank) for n in scores}
    powered = {n: s**temperature for n, s in positive.items()}
    top = max(powered.values())
    return {n: (min(max_rank, max(min_rank, max_rank * powered[n] / top)) if n in powered else float(min_rank)) for n in scores}


def base_weight(model: nn.Module, name: str) -> torch.Tensor:
    """The weight of targeted module `name` (GPT-2 Conv1D keeps it as in x out; scores do not care)."""
    try:
        weight = model.get_submodule(name).weight
    except AttributeError:
        raise UserError(f"the model has no module {name!r}; plan with the same model the strategy measures") from None
    if weight.device.type == "meta":
        raise UserError(
            "this strategy measures the real weights, but the model was built without them (meta device); "
            "load it with adaptive_lora.models.load_model (the CLI does this for you)"
        )
    return weight


def model_device(model: nn.Module) -> torch.device:
    for param in model.parameters():
        if param.device.type != "meta":
            return param.device
    return torch.device("cpu")


def pad_id_of(model: nn.Module) -> int:
    """Any id works for padding: padded positions get attention 0 and label -100 by position."""
    config = getattr(model, "config", None)
    for key in ("pad_token_id", "eos_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return 0


def probe_rows(n_train: int, seed: int, batches: int, batch_size: int) -> list[list[int]]:
    """Indices into the TRAINING split: a seeded permutation, cut into `batches` batches of `batch_size`.

    The same (n_train, seed, batches, batch_size) always gives the same rows; the eval split is never read.
    """
    if n_train <= 0:
        raise UserError("the probe needs training rows, but the training split is empty")
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(n_train, generator=generator).tolist()[: batches * batch_size]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def draw_probe_batches(
    data: Any, model: nn.Module, seed: int, batches: int, batch_size: int
) -> tuple[list[dict], list[list[int]]]:
    """Collated probe batches of training rows (on the model's device) and the row indices used."""
    rows = probe_rows(len(data.train), seed, batches, batch_size)
    collate = Collator(pad_id_of(model))
    device = model_device(model)
    collated = [{k: v.to(device) for k, v in collate([data.train[i] for i in chunk]).items()} for chunk in rows]
    return collated, rows
