"""The search space: the `profile` family's weights and the learning rate, as Optuna distributions.

    depth_0 .. depth_{K-1}   knot weights over relative depth (absent with one knot: a constant has no shape)
    role_<group>             one weight per role group (absent with a single group)
    learning_rate            log-uniform (absent when the range is one rate)

Every weight is log-uniform in [weight_min, 1]: only ratios matter once the budget rescales the shape,
and a log scale treats "half" and "double" alike. All weights 1 is the uniform point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from ..schema import ATTENTION_ROLES, MLP_ROLES, ROLES
from .settings import SearchConfig

LR = "learning_rate"


@dataclass(frozen=True)
class Dimension:
    name: str
    low: float
    high: float
    log: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "low": self.low, "high": self.high, "log": self.log}


class SearchSpace:
    def __init__(self, cfg: SearchConfig, model_roles: list[str]):
        self.cfg = cfg
        self.groups = role_groups(cfg.roles, model_roles)
        weights = [Dimension(f"depth_{k}", cfg.weight_min, 1.0) for k in range(cfg.knots)] if cfg.knots > 1 else []
        if len(self.groups) > 1:
            weights += [Dimension(f"role_{name}", cfg.weight_min, 1.0) for name, _ in self.groups]
        rate = [Dimension(LR, cfg.lr_min, cfg.lr_max)] if cfg.lr_min < cfg.lr_max else []
        self.dimensions = weights + rate
        if not self.dimensions:
            raise UserError(
                "search: the space is empty (one depth knot, one role group and a fixed learning rate): nothing to search; "
                "use --knots 3, --roles grouped or individual, or a learning-rate range (--lr 1e-4:3e-3)"
            )

    def suggest(self, trial) -> dict[str, float]:
        """Optuna's suggestions for one trial (enqueued trials get their fixed values back)."""
        return {d.name: trial.suggest_float(d.name, d.low, d.high, log=d.log) for d in self.dimensions}

    def distributions(self) -> dict[str, Any]:
        from optuna.distributions import FloatDistribution

        return {d.name: FloatDistribution(d.low, d.high, log=d.log) for d in self.dimensions}

    def learning_rate(self, values: dict[str, float]) -> float:
        return float(values.get(LR, self.cfg.lr_min))

    def profile_params(self, values: dict[str, float]) -> dict[str, Any]:
        """The `profile` strategy's parameters for a point of the space."""
        depth = [float(values[f"depth_{k}"]) for k in range(self.cfg.knots)] if self.cfg.knots > 1 else [1.0]
        roles = {}
        if len(self.groups) > 1:
            roles = {role: float(values[f"role_{name}"]) for name, members in self.groups for role in members}
        return {"rank": self.cfg.shape_rank, "depth": depth, "roles": roles}

    def uniform_point(self, rate: float) -> dict[str, float]:
        """All weights 1 (the family's uniform point) at learning rate `rate`."""
        values = {d.name: 1.0 for d in self.dimensions if d.name != LR}
        return values | ({LR: rate} if any(d.name == LR for d in self.dimensions) else {})

    def uniform_rates(self) -> list[float]:
        """Where the uniform trials go: the middles of n equal slices of the log learning-rate range."""
        n, low, high = self.cfg.uniform_rates, math.log(self.cfg.lr_min), math.log(self.cfg.lr_max)
        if high == low:
            return [self.cfg.lr_min]
        return [float(f"{math.exp(low + (high - low) * (i + 0.5) / n):.3g}") for i in range(n)]

    def describe(self) -> list[str]:
        lines = [f"{d.name:<16} {'log-uniform' if d.log else 'uniform'} [{d.low:g}, {d.high:g}]" for d in self.dimensions]
        if self.cfg.knots > 1:
            lines.append(
                f"depth knots at relative depth {', '.join(f'{k / (self.cfg.knots - 1):g}' for k in range(self.cfg.knots))}"
            )
        groups = "; ".join(f"{name} = {'+'.join(members)}" for name, members in self.groups)
        lines.append(f"role groups: {groups}" + (" (one group: no role weights)" if len(self.groups) == 1 else ""))
        return lines


def role_groups(spec: str, model_roles: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """[(group name, roles)] from grouped | individual | none | "q+k,v,up+gate+down" (every role of the model once)."""
    present = [r for r in ROLES if r in model_roles]
    spec = str(spec).strip()
    if spec == "none":
        return [("all", tuple(present))]
    if spec == "individual":
        return [(role, (role,)) for role in present]
    if spec == "grouped":
        groups = [("attention", ATTENTION_ROLES), ("mlp", MLP_ROLES), ("other", {"other"})]
        found = [(name, tuple(r for r in present if r in members)) for name, members in groups]
        return [(name, members) for name, members in found if members]
    groups, seen = [], []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        members = tuple(r.strip() for r in part.split("+") if r.strip())
        for role in members:
            if role not in ROLES:
                raise UserError(
                    f"search --roles: unknown role {role!r}; use roles ({', '.join(ROLES)}) joined by + into groups, "
                    "or grouped, individual, none"
                )
            if role not in present:
                raise UserError(f"search --roles: this model has no {role!r} modules; its roles are {', '.join(present)}")
            if role in seen:
                raise UserError(f"search --roles: role {role!r} is in two groups")
            seen.append(role)
        groups.append(("+".join(members), members))
    missing = [r for r in present if r not in seen]
    if missing:
        raise UserError(f"search --roles: role {missing[0]!r} of this model is in no group; add it (e.g. {spec},{missing[0]})")
    return groups
