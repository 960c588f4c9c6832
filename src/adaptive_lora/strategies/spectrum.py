"""`spectrum`: score each targeted module from its base weight's singular values; weights only, no data.

    effective_rank  exp(H(p)), p_i = s_i / sum(s): the entropy-based effective rank (Roy & Vetterli, 2007)
    stable_rank     ||W||_F^2 / ||W||_2^2 = sum(s_i^2) / s_1^2

Both are between 1 (a rank-one weight) and min(in, out) (a flat spectrum). With `normalize` (default)
they are divided by min(in, out), i.e. the fraction of its full rank a weight uses, so a wide MLP
projection does not score higher merely for having more singular values.

Which direction helps is an open question: the default (temperature > 0) gives more adapter rank to
weights with a spread spectrum (they use more of their dimensions); a negative temperature gives more
to compressible, near-low-rank weights. Singular values are computed in float32 with
`torch.linalg.svdvals` (about 4 s for SmolLM2-135M's 210 matrices on 2 CPU cores).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..anatomy import Anatomy
from ..errors import UserError
from .base import Param, Strategy, StrategyOutput, register
from .scoring import SHAPE_PARAMS, base_weight, scores_to_shape

MEASURES = ("effective_rank", "stable_rank")


def spectral_score(weight: torch.Tensor, measure: str = "effective_rank") -> float:
    """The effective or stable rank of a 2-D weight (0 for an all-zero weight)."""
    s = torch.linalg.svdvals(weight.detach().float())
    if measure not in MEASURES:
        raise UserError(f"spectrum: measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if float(s.max()) <= 0:
        return 0.0
    if measure == "stable_rank":
        return float((s**2).sum() / s.max() ** 2)
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def spectrum(
    anatomy: Anatomy, *, measure: str, temperature: float, min_rank: float, max_rank: float, normalize: bool, model: nn.Module
) -> StrategyOutput:
    if measure not in MEASURES:
        raise UserError(f"spectrum: measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if isinstance(model, str):
        raise UserError(
            "spectrum needs the model's real weights; load it with adaptive_lora.models.load_model "
            "(`adaptive-lora plan --strategy spectrum` does this)"
        )
    start = time.perf_counter()
    scores = {}
    with torch.no_grad():
        for m in anatomy.modules:
            value = spectral_score(base_weight(model, m.name), measure)
            scores[m.name] = value / min(m.in_features, m.out_features) if normalize else value
    shape = scores_to_shape(scores, temperature, min_rank, max_rank)
    meta = {
        "method": "spectrum",
        "measure": measure,
        "normalize": normalize,
        "probe_time_s": time.perf_counter() - start,
        "probe_batches": 0,
    }
    return StrategyOutput(shape, scores, meta)


register(
    Strategy(
        "spectrum",
        "rank shape from each base weight's singular values: effective rank (entropy) or stable rank; no data",
        spectrum,
        (
            Param("measure", str, "effective_rank", "effective_rank (Roy & Vetterli) or stable_rank (||W||_F^2 / ||W||_2^2)"),
            *SHAPE_PARAMS,
        ),
        needs=("weights",),
    )
)
