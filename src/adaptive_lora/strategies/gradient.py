"""`gradient_importance`: a short gradient probe on a few training batches scores every targeted module.

    sensitivity  sum |W * dL/dW|   the first-order Taylor estimate of the loss change when W is
                                   removed: AdaLoRA's importance signal (Zhang et al., 2023), here on
                                   the frozen base weights instead of the adapter's
    fisher       sum (dL/dW)^2     a diagonal empirical Fisher; batch-level (the gradient of each
                                   probe batch's mean loss, squared), not per example

Scores are summed over the probe batches. With `normalize` (default) each module's score is divided
by its weight count (a per-parameter mean), so an MLP projection with 2.7x the parameters of a
k-projection does not win by size alone; budget matching already charges it for its size.

The base model is left exactly as it was: gradients are taken with `torch.autograd.grad` (no `.grad`
is written), and every parameter's `requires_grad` and the train/eval mode are restored afterwards.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..anatomy import Anatomy
from ..errors import UserError
from ..loss import supervised_loss_sum
from .base import Param, Strategy, StrategyOutput, register
from .scoring import PROBE_PARAMS, SHAPE_PARAMS, base_weight, draw_probe_batches, scores_to_shape

SCORES = ("sensitivity", "fisher")


def gradient_scores(
    model: nn.Module, names: list[str], batches: list[dict], score: str = "sensitivity"
) -> tuple[dict[str, float], int]:
    """Per-module score summed over `batches`, and the number of supervised tokens seen."""
    if score not in SCORES:
        raise UserError(f"gradient_importance: score must be one of {', '.join(SCORES)}, got {score!r}")
    weights = [base_weight(model, name) for name in names]
    saved = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    totals = torch.zeros(len(names), dtype=torch.float64)
    tokens = 0
    try:
        model.eval()  # no dropout: the probe measures the model as it is
        for p, _ in saved:
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        with torch.enable_grad():
            for batch in batches:
                loss_sum, count = supervised_loss_sum(model, batch)
                if int(count) == 0:
                    continue
                tokens += int(count)
                grads = torch.autograd.grad(loss_sum / count, weights)
                with torch.no_grad():
                    for i, (w, g) in enumerate(zip(weights, grads)):
                        g = g.float()
                        value = (w.float() * g).abs().sum() if score == "sensitivity" else g.pow(2).sum()
                        totals[i] += float(value)
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
        model.train(was_training)
    return {name: float(totals[i]) for i, name in enumerate(names)}, tokens


def gradient_importance(
    anatomy: Anatomy,
    *,
    score: str,
    probe_batches: int,
    probe_batch_size: int,
    temperature: float,
    min_rank: float,
    max_rank: float,
    normalize: bool,
    model: nn.Module,
    data: Any,
    seed: int,
) -> StrategyOutput:
    """Rank shape proportional to each module's gradient importance ** temperature (see the module doc)."""
    start = time.perf_counter()
    batches, rows = _probe(data, model, seed, probe_batches, probe_batch_size)
    raw, tokens = gradient_scores(model, anatomy.names, batches, score)
    if tokens == 0:
        raise UserError("gradient_importance: the probe batches hold no supervised (response) tokens; raise probe_batches")
    sizes = {m.name: m.in_features * m.out_features for m in anatomy.modules}
    scores = {n: s / sizes[n] for n, s in raw.items()} if normalize else raw
    shape = scores_to_shape(scores, temperature, min_rank, max_rank)
    meta = {
        "method": "gradient_importance",
        "score": score,
        "normalize": normalize,
        "probe_time_s": time.perf_counter() - start,
        "probe_batches": len(batches),
        "probe_rows": [i for chunk in rows for i in chunk],
        "probe_tokens": tokens,
    }
    return StrategyOutput(shape, scores, meta)


def _probe(data: Any, model: nn.Module, seed: int, batches: int, batch_size: int):
    if isinstance(model, str):
        raise UserError("gradient_importance needs the loaded model (real weights), not a model name")
    return draw_probe_batches(data, model, seed, batches, batch_size)


register(
    Strategy(
        "gradient_importance",
        "rank shape from a gradient probe on training batches: sensitivity |W*dL/dW| or Fisher (dL/dW)^2",
        gradient_importance,
        (Param("score", str, "sensitivity", "sensitivity (AdaLoRA's |W*grad|) or fisher (grad^2)"), *PROBE_PARAMS, *SHAPE_PARAMS),
        needs=("weights", "data"),
    )
)
