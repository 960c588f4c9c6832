"""`profile`: a parametric family of rank shapes, a depth profile times per-role weights times a base rank.

    rank(module) = max(1, int(depth(layer) * roles[role]))
    depth(layer) = rank x depth[k], interpolated linearly between K knots spread evenly over relative depth 0..1

Weights are relative: with a budget, planning rescales the shape to it like any other (budget.match_budget),
so only their ratios matter there. The static shapes are points of the family (tests/test_profile.py
checks that they give the same ranks, at their own ranks and budget-matched):

    uniform r                     rank=r, depth=[1]
    linear_decay start -> end     rank=start, depth=[1, end/start]
    linear_increase start -> end  rank=end, depth=[start/end, 1]
    attention_heavy (mlp_ratio)   rank=r, roles={mlp: mlp_ratio, other: mlp_ratio}
    mlp_heavy (attention_ratio)   rank=r, roles={attention: attention_ratio}

`adaptive-lora search` explores this family (search/space.py).
"""

from __future__ import annotations

import math
from typing import Any

from ..anatomy import Anatomy
from ..errors import UserError
from ..schema import ATTENTION_ROLES, MLP_ROLES, ROLES
from .base import Param, Ranks, Strategy, base_rank_param, register

ROLE_GROUPS = {"attention": ATTENTION_ROLES, "mlp": MLP_ROLES}  # a role's own weight overrides its group's


def profile(anatomy: Anatomy, *, rank: int, depth: Any, roles: Any) -> Ranks:
    """max(1, int(interpolated depth weight x rank x role weight)) for every module."""
    knots = [rank * w for w in depth_weights(depth)]
    weight = role_weights(roles)
    per_layer = [_interpolate(knots, layer, anatomy.num_layers) for layer in range(anatomy.num_layers)]
    return {m.name: max(1, int(per_layer[m.layer] * weight.get(m.role, 1.0))) for m in anatomy.modules}


def _interpolate(knots: list[float], layer: int, num_layers: int) -> float:
    """knots[k] at relative depth k/(K-1), linear in between. Evaluated as a + ((b - a) * n) / (L - 1) with
    integer n, the product first, as linear_decay evaluates start - (start - end) * i / (L - 1), so that
    the static shapes come out rank for rank (another order rounds differently, and int() then truncates)."""
    if len(knots) == 1:
        return knots[0]
    last = max(1, num_layers - 1)
    segments = len(knots) - 1
    k = min(segments - 1, (layer * segments) // last)
    n = layer * segments - k * last  # position inside segment k, in units of 1/(L-1)
    a, b = knots[k], knots[k + 1]
    return a + ((b - a) * n) / last


def depth_weights(value: Any) -> list[float]:
    """The depth knots: a list of one or more non-negative numbers (a single number is one knot)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    weights = [_weight(v) for v in items]
    if not weights or None in weights:
        raise UserError(f"strategy 'profile': depth must be a list of non-negative numbers, e.g. [1, 0.5, 0.25]; got {value!r}")
    return weights  # type: ignore[return-value]


def role_weights(value: Any) -> dict[str, float]:
    """{role: weight} from a mapping of roles and groups (attention, mlp); a role's own entry wins over its group's."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"strategy 'profile': roles must be a mapping such as {{mlp: 0.5}}, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in ROLES and k not in ROLE_GROUPS)
    if unknown:
        raise UserError(
            f"strategy 'profile': unknown role {unknown[0]!r} in roles; use {', '.join(ROLES)} or the groups {', '.join(ROLE_GROUPS)}"
        )
    weights: dict[str, float] = {}
    for key in [k for k in value if k in ROLE_GROUPS] + [k for k in value if k in ROLES]:
        weight = _weight(value[key])
        if weight is None:
            raise UserError(f"strategy 'profile': roles.{key} must be a non-negative number, got {value[key]!r}")
        weights.update({role: weight for role in ROLE_GROUPS.get(key, {key})})
    return weights


def _weight(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


register(
    Strategy(
        "profile",
        "depth profile (weights at knots over relative depth) x per-role weights x base rank; what `search` explores",
        profile,
        (
            base_rank_param(8),
            Param("depth", object, [1.0], "weights at K knots spread evenly over relative depth 0..1 (linear in between)"),
            Param("roles", object, {}, "weight per role (q, k, v, o, qkv, up, gate, down, other) or group (attention, mlp)"),
        ),
        rank_param="rank",
    )
)
