"""The `Allocation` value: module -> (rank, alpha), its exact parameter count, summaries,
JSON round-trip, export to a PEFT `LoraConfig`, and `verify` after PEFT wrapping.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .anatomy import Anatomy, LinearModule
from .config import AllocationConfig
from .errors import UserError
from .schema import ROLES, AllocationRecord, ModuleRecord, read_allocation, write_allocation

ALPHA_POLICIES = ("proportional", "constant", "rslora")
_DEFAULTS = AllocationConfig()


def alphas_for(ranks: dict[str, int], policy: str, lora_alpha: float, lora_r: int) -> dict[str, float]:
    """proportional: alpha = (lora_alpha / lora_r) * r, the same scaling alpha/r everywhere;
    constant: alpha = lora_alpha, so scaling alpha/r varies with r (the study's behaviour);
    rslora: alpha = lora_alpha with PEFT's rank-stabilised scaling alpha/sqrt(r)."""
    if policy == "proportional":
        return {name: float(lora_alpha) / lora_r * r for name, r in ranks.items()}
    if policy in ("constant", "rslora"):
        return {name: float(lora_alpha) for name in ranks}
    raise UserError(f"unknown alpha policy {policy!r}; choose one of: {', '.join(ALPHA_POLICIES)}")


@dataclass
class Allocation:
    anatomy: Anatomy
    ranks: dict[str, int]  # module name -> rank (>= 1); modules absent here are not adapted
    alphas: dict[str, float]
    strategy: str = "custom"
    params: dict[str, Any] = field(default_factory=dict)
    alpha_policy: str = _DEFAULTS.alpha_policy
    lora_r: int = _DEFAULTS.lora_r
    lora_alpha: float = _DEFAULTS.lora_alpha
    budget: dict[str, Any] = field(default_factory=dict)  # target, budget_rank
    scores: dict[str, float] | None = None  # importance scores from data-driven strategies
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. zero-rank modules, probe cost

    def __post_init__(self):
        known = self.anatomy.by_name()
        for name, rank in self.ranks.items():
            if name not in known:
                raise UserError(f"allocation names module {name!r}, which the model does not have")
            if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
                raise UserError(f"module {name}: rank must be an integer >= 1, got {rank!r}")
        if set(self.alphas) != set(self.ranks):
            raise ValueError("alphas and ranks must name the same modules")

    # --- counts and summaries ---
    @property
    def modules(self) -> list[LinearModule]:
        return [m for m in self.anatomy.modules if m.name in self.ranks]

    @property
    def trainable_params(self) -> int:
        return sum(self.ranks[m.name] * m.params_per_rank for m in self.modules)

    @property
    def total_params(self) -> int:
        return self.anatomy.total_params

    @property
    def efficiency_pct(self) -> float:
        return 100.0 * self.trainable_params / self.total_params if self.total_params else 0.0

    def scaling(self, name: str) -> float:
        rank, alpha = self.ranks[name], self.alphas[name]
        return alpha / math.sqrt(rank) if self.alpha_policy == "rslora" else alpha / rank

    def layer_role_table(self) -> dict[int, dict[str, float]]:
        """layer -> role -> rank (mean when a layer has several modules of one role)."""
        cells: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for m in self.modules:
            cells[m.layer][m.role].append(self.ranks[m.name])
        return {layer: {role: sum(v) / len(v) for role, v in roles.items()} for layer, roles in sorted(cells.items())}

    def summary(self) -> dict[str, Any]:
        ranks = list(self.ranks.values())
        by_role: dict[str, list[int]] = defaultdict(list)
        by_layer: dict[int, int] = defaultdict(int)
        for m in self.modules:
            by_role[m.role].append(self.ranks[m.name])
            by_layer[m.layer] += self.ranks[m.name] * m.params_per_rank
        return {
            "mean_rank": sum(ranks) / len(ranks),
            "min_rank": min(ranks),
            "max_rank": max(ranks),
            "ranks_by_role": {r: sum(by_role[r]) / len(by_role[r]) for r in ROLES if by_role.get(r)},
            "params_by_layer": [by_layer.get(i, 0) for i in range(self.anatomy.num_layers)],
        }

    # --- JSON (allocation.json, via schema) ---
    def to_record(self) -> AllocationRecord:
        modules = [
            ModuleRecord(m.name, m.layer, m.role, m.in_features, m.out_features, self.ranks[m.name], self.alphas[m.name])
            for m in self.modules
        ]
        return AllocationRecord(
            strategy=self.strategy,
            modules=modules,
            params=self.params,
            alpha_policy=self.alpha_policy,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            model_type=self.anatomy.model_type,
            num_layers=self.anatomy.num_layers,
            trainable_params=self.trainable_params,
            total_params=self.total_params,
            efficiency_pct=self.efficiency_pct,
            budget={"target": None, "budget_rank": None, **self.budget, "achieved": self.trainable_params},
            scores=self.scores,
            meta=self.meta,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.to_record().to_dict()

    def save(self, path: str | Path) -> None:
        write_allocation(path, self.to_record())

    @classmethod
    def load(cls, path: str | Path, anatomy: Anatomy) -> Allocation:
        """Load an allocation.json written by adaptive-lora onto `anatomy` (other formats: planning.load_allocation)."""
        return cls.from_record(read_allocation(path), anatomy, str(path))

    @classmethod
    def from_record(cls, record: AllocationRecord, anatomy: Anatomy, where: str) -> Allocation:
        # Same names are not enough: a plan for a 4-layer model must not silently load onto a deeper or
        # wider one of the same family (it would adapt only some layers, or count parameters wrongly).
        if record.num_layers is not None and record.num_layers != anatomy.num_layers:
            raise UserError(
                f"allocation file {where} was planned for a {record.num_layers}-layer model; this model has {anatomy.num_layers} layers"
            )
        known = anatomy.by_name()
        for m in record.modules:
            if m.alpha is None:
                raise UserError(
                    f"allocation file {where}: every entry of 'modules' needs name, rank and alpha ({m.name} has no alpha)"
                )
            here = known.get(m.name)
            shape = (m.in_features, m.out_features)
            if here is not None and None not in shape and shape != (here.in_features, here.out_features):
                raise UserError(
                    f"allocation file {where}: module {m.name} was planned as {shape[0]}->{shape[1]}, "
                    f"but this model's is {here.in_features}->{here.out_features}; plan again for this model"
                )
        budget = {k: v for k, v in record.budget.items() if k in ("target", "budget_rank")}
        return cls(
            anatomy,
            record.ranks,
            {m.name: m.alpha for m in record.modules},
            record.strategy,
            record.params,
            record.alpha_policy or _DEFAULTS.alpha_policy,
            record.lora_r or _DEFAULTS.lora_r,
            _DEFAULTS.lora_alpha if record.lora_alpha is None else record.lora_alpha,
            budget,
            record.scores,
            dict(record.meta),
        )

    # --- PEFT ---
    def to_peft_config(self, lora_dropout: float = 0.0, **kwargs: Any):
        """A LoraConfig whose keys are full, regex-escaped module names.

        PEFT matches pattern keys as `(.*\\.)?(key)$` and takes the first that fits; full escaped
        names never overlap (`layers.1.` cannot match `layers.11.`), so order and PEFT's re-sorting
        on save cannot change which rank a module gets.
        """
        from peft import LoraConfig

        names = [m.name for m in self.modules]
        rank_pattern = {re.escape(n): self.ranks[n] for n in names}
        alpha_pattern = {re.escape(n): self.alphas[n] for n in names}
        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            target_modules=names,
            rank_pattern=rank_pattern,
            alpha_pattern=alpha_pattern,
            lora_dropout=lora_dropout,
            use_rslora=self.alpha_policy == "rslora",
            bias="none",
            task_type="CAUSAL_LM",
            fan_in_fan_out=any(m.conv1d for m in self.modules),  # GPT-2 Conv1D stores W as (in, out)
            **kwargs,
        )


def verify(peft_model, allocation: Allocation, adapter_name: str = "default") -> None:
    """Check, after get_peft_model, that every module's LoRA shapes and scaling equal the plan and
    that the trainable count equals the planned count. Raises RuntimeError on any mismatch."""
    problems: list[str] = []
    seen = set()
    planned = allocation.anatomy.by_name()
    for key, module in adapted_modules(peft_model, "lora_A", adapter_name):
        seen.add(key)
        if key not in allocation.ranks:
            problems.append(f"{key}: adapted but not in the plan")
            continue
        m, rank = planned[key], allocation.ranks[key]
        a, b = module.lora_A[adapter_name].weight, module.lora_B[adapter_name].weight
        if tuple(a.shape) != (rank, m.in_features) or tuple(b.shape) != (m.out_features, rank):
            problems.append(
                f"{key}: lora_A {tuple(a.shape)} / lora_B {tuple(b.shape)}, planned rank {rank} for {m.in_features}->{m.out_features}"
            )
        scaling = module.scaling[adapter_name]
        if not math.isclose(scaling, allocation.scaling(key), rel_tol=1e-6):
            problems.append(f"{key}: scaling {scaling:g}, planned {allocation.scaling(key):g}")
    missing = sorted(set(allocation.ranks) - seen)
    if missing:
        problems.append(f"{len(missing)} planned modules have no adapter, e.g. {missing[0]}")
    # A model loaded for inference has no trainable parameters; then count the LoRA weights themselves.
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if ".lora_A." in n or ".lora_B." in n)
    if lora != allocation.trainable_params or (trainable and trainable != allocation.trainable_params):
        problems.append(f"trainable parameters {trainable or lora:,} != planned {allocation.trainable_params:,}")
    if problems:
        raise RuntimeError(f"the PEFT model does not match the allocation ({len(problems)} problems): " + "; ".join(problems[:5]))


def adapted_modules(peft_model, attribute: str = "lora_A", adapter_name: str = "default"):
    """(name in the base model, module) for every module that carries this adapter's `attribute`."""
    for name, module in peft_model.named_modules():
        if adapter_name in getattr(module, attribute, {}):
            yield _strip_peft_prefix(name), module


def _strip_peft_prefix(name: str) -> str:
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
