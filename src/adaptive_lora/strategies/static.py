"""The original study's strategies (and their mirror images): pure functions of the anatomy.

Each keeps the study's exact semantics where it had one (see each docstring).
"""

from __future__ import annotations

from ..anatomy import Anatomy
from .base import Param, Ranks, Strategy, base_rank_param, register


def uniform(anatomy: Anatomy, *, rank: int) -> Ranks:
    """Every module gets rank r."""
    return {m.name: rank for m in anatomy.modules}


def linear_decay(anatomy: Anatomy, *, start: int, end: int, min_rank: int) -> Ranks:
    """rank_i = max(min_rank, int(start - (start - end) * i / (L - 1))): the study's 16 -> 4."""
    # Evaluated exactly as the study wrote it, (start - end) * i / (L - 1): the product first, then one
    # division. (start - end) * (i / (L - 1)) rounds differently and int() then truncates e.g. 12 to 11.
    last = max(1, anatomy.num_layers - 1)
    per_layer = [max(min_rank, int(start - (start - end) * i / last)) for i in range(anatomy.num_layers)]
    return {m.name: per_layer[m.layer] for m in anatomy.modules}


def linear_increase(anatomy: Anatomy, *, start: int, end: int, min_rank: int) -> Ranks:
    """The mirror of linear_decay: rank grows from `start` at layer 0 to `end` at the last layer."""
    last = max(1, anatomy.num_layers - 1)
    per_layer = [max(min_rank, int(start + (end - start) * i / last)) for i in range(anatomy.num_layers)]
    return {m.name: per_layer[m.layer] for m in anatomy.modules}


def attention_heavy(anatomy: Anatomy, *, rank: int, mlp_ratio: float) -> Ranks:
    """Attention modules (q/k/v/o/qkv) at the base rank, MLP and other modules at ratio x base (16/8)."""
    light = max(1, int(rank * mlp_ratio))
    return {m.name: rank if m.is_attention else light for m in anatomy.modules}


def mlp_heavy(anatomy: Anatomy, *, rank: int, attention_ratio: float) -> Ranks:
    """MLP and other modules at the base rank, attention modules at ratio x base."""
    light = max(1, int(rank * attention_ratio))
    return {m.name: light if m.is_attention else rank for m in anatomy.modules}


def empirical(anatomy: Anatomy, *, rank: int, early: float, middle: float, late: float) -> Ranks:
    """int(early x base) for relative depth i/(L-1) < 0.3, int(middle x base) below 0.7, int(late x base) after."""

    def layer_rank(i: int) -> int:
        depth = _depth(i, anatomy.num_layers)
        factor = early if depth < 0.3 else middle if depth < 0.7 else late
        return max(1, int(rank * factor))

    return {m.name: layer_rank(m.layer) for m in anatomy.modules}


def _depth(layer: int, num_layers: int) -> float:
    return layer / (num_layers - 1) if num_layers > 1 else 0.0


register(
    Strategy(
        "uniform",
        "the same rank r for every module (fixed-rank LoRA)",
        uniform,
        (base_rank_param(8, "rank r"),),
        rank_param="rank",
    )
)
register(
    Strategy(
        "linear_decay",
        "rank falls linearly with depth, start -> end (study: 16 -> 4)",
        linear_decay,
        (
            Param("start", int, 16, "rank of layer 0", 1),
            Param("end", int, 4, "rank of the last layer", 1),
            Param("min_rank", int, 1, "floor for any layer", 1),
        ),
        rank_param="start",
    )
)
register(
    Strategy(
        "linear_increase",
        "rank grows linearly with depth, start -> end",
        linear_increase,
        (
            Param("start", int, 4, "rank of layer 0", 1),
            Param("end", int, 16, "rank of the last layer", 1),
            Param("min_rank", int, 1, "floor for any layer", 1),
        ),
        rank_param="end",
    )
)
register(
    Strategy(
        "attention_heavy",
        "attention modules at the base rank, MLP at mlp_ratio x base (study: 16/8)",
        attention_heavy,
        (base_rank_param(16), Param("mlp_ratio", float, 0.5, "MLP rank as a fraction of the base rank", 0.0)),
        rank_param="rank",
    )
)
register(
    Strategy(
        "mlp_heavy",
        "MLP modules at the base rank, attention at attention_ratio x base",
        mlp_heavy,
        (base_rank_param(16), Param("attention_ratio", float, 0.5, "attention rank as a fraction of the base rank", 0.0)),
        rank_param="rank",
    )
)
register(
    Strategy(
        "empirical",
        "0.6 / 1.2 / 1.0 x base for early (<30%), middle (<70%) and late layers (study)",
        empirical,
        (
            base_rank_param(16),
            Param("early", float, 0.6, "multiplier below 30% depth", 0.0),
            Param("middle", float, 1.2, "multiplier below 70% depth", 0.0),
            Param("late", float, 1.0, "multiplier for the rest", 0.0),
        ),
        rank_param="rank",
    )
)
