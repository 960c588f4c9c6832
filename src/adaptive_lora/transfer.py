"""Carry a recommended rank shape to another model ("allocate small, train big").

    moved = transfer_allocation(source, "HuggingFaceTB/SmolLM2-360M", "r8")
    moved.meta["transfer"]["not_transferred"]       # roles of the source the target has no counterpart for

The target adapts the roles the source adapted and no others: a recommendation from a q,v-only sweep
stays on q and v, and its budget is the target's uniform cost on those modules. A fused qkv module
stands for q, k and v together, so it counts as their counterpart only when the source adapted all
three (and separate q, k, v modules are the counterpart of a source's fused qkv). A role the target
cannot take is listed in `meta["transfer"]["not_transferred"]`, and `recommend` prints it.
"""

from __future__ import annotations

import re

from .allocation import Allocation, alphas_for
from .anatomy import Anatomy
from .budget import budget_for_rank, match_budget
from .errors import UserError
from .planning import DEFAULTS, anatomy_of
from .schema import ROLES

FUSED_QKV, SEPARATE_QKV = "qkv", ("q", "k", "v")


def counterpart(role: str, source_roles: set[str]) -> set[str]:
    """The source roles whose ranks a target module of `role` takes (empty: none, it is not adapted)."""
    if role in source_roles:
        return {role}
    if role == FUSED_QKV and set(SEPARATE_QKV) <= source_roles:
        return set(SEPARATE_QKV)
    if role in SEPARATE_QKV and FUSED_QKV in source_roles:
        return {FUSED_QKV}
    return set()


def adapted_roles(allocation: Allocation) -> set[str]:
    return {m.role for m in allocation.modules if allocation.ranks[m.name] > 0}


def not_transferred(source: Allocation, target: Anatomy) -> list[str]:
    """The source's adapted roles that no target module takes its ranks from, in display order."""
    source_roles = adapted_roles(source)
    used = set().union(*(counterpart(role, source_roles) for role in target.roles()))
    return [role for role in ROLES if role in source_roles - used]


def transfer_shape(source: Allocation, target: Anatomy) -> dict[str, float]:
    """Target module -> source rank at the same relative depth and role.

    A target module at layer l of L takes the mean rank of its role's counterpart at the source layer
    nearest to relative depth l / (L - 1). Target modules of a role without a counterpart are left out.
    """
    cells: dict[tuple[int, str], list[int]] = {}
    for m in source.modules:
        cells.setdefault((m.layer, m.role), []).append(source.ranks[m.name])
    source_roles = adapted_roles(source)
    shape = {}
    for m in target.modules:
        roles = counterpart(m.role, source_roles)
        layers = sorted({layer for layer, role in cells if role in roles})
        if not layers:
            continue
        depth = _depth(m.layer, target.num_layers)
        nearest = min(layers, key=lambda layer: (abs(_depth(layer, source.anatomy.num_layers) - depth), layer))
        ranks = [r for role in roles for r in cells.get((nearest, role), [])]
        shape[m.name] = sum(ranks) / len(ranks)
    if not shape:
        raise UserError(
            f"the recommended allocation adapts roles {', '.join(sorted(source_roles))}, and the {target.model_type} model "
            f"has none of them (its roles: {', '.join(target.roles())}); transfer it to a model with those roles"
        )
    return shape


def _depth(layer: int, num_layers: int) -> float:
    return layer / (num_layers - 1) if num_layers > 1 else 0.0


def budget_rank_of(allocation: Allocation, budget_label: str) -> int | None:
    """The uniform rank a budget stands for (r8 -> 8); None for `own` and parameter-count budgets."""
    if allocation.budget.get("budget_rank"):
        return int(allocation.budget["budget_rank"])
    match = re.fullmatch(r"r(\d+)", budget_label)
    return int(match.group(1)) if match else None


def transfer_allocation(source: Allocation, target_model: str | Anatomy, budget_label: str) -> Allocation:
    """The source's rank shape on another model's counterpart modules, rescaled to the target's budget on
    those modules: uniform rank r of them for budget rN, else the same fraction of their parameters
    per rank as the source spent."""
    target = target_model if isinstance(target_model, Anatomy) else anatomy_of(target_model)
    shape = transfer_shape(source, target)
    adapted = Anatomy(target.model_type, target.num_layers, tuple(m for m in target.modules if m.name in shape), 0)
    rank = budget_rank_of(source, budget_label)
    if rank is not None:
        budget = budget_for_rank(adapted, rank)
    else:
        budget = round(source.trainable_params / source.anatomy.params_per_rank() * adapted.params_per_rank())
    ranks = match_budget(adapted, shape, budget, DEFAULTS.min_rank, DEFAULTS.max_rank)
    meta = {
        "transferred_from": {"model_type": source.anatomy.model_type, "num_layers": source.anatomy.num_layers},
        "transfer": {"roles": adapted.roles(), "not_transferred": not_transferred(source, target)},
    }
    return Allocation(
        target,
        ranks,
        alphas_for(ranks, source.alpha_policy, source.lora_alpha, source.lora_r),
        source.strategy,
        dict(source.params),
        source.alpha_policy,
        source.lora_r,
        source.lora_alpha,
        {"target": budget, "budget_rank": rank},
        None,
        meta,
    )
