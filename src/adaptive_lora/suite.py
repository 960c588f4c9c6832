"""Suites: strategies x budgets x seeds over shared model/data/training settings.

A suite YAML looks like:

    name: seed-study
    model: {name: embedded}
    data: {source: builtin, max_samples: 200}
    training: {learning_rate: 5.0e-4, max_steps: 20}
    allocation: {alpha_policy: constant, lora_alpha: 32}    # shared allocation settings
    strategies:
      - {strategy: uniform, label: uniform r8, params: {rank: 8}}
      - {strategy: linear_decay, params: {start: 16, end: 4}}
    budgets: []          # [] = each strategy's own ranks; or e.g. [r4, r8, 1.5M, 2000000]
    seeds: [0, 1, 2]

The sweep is the product strategies x budgets x seeds; each run gets a stable id from its
resolved config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig, apply_overrides, load_yaml
from .errors import UserError
from .training import config_id

SUITE_KEYS = {"name", "description", "model", "data", "training", "allocation", "strategies", "budgets", "seeds", "output"}


@dataclass(frozen=True)
class Budget:
    label: str  # "own", "r8", "1.5M"
    params: int | None = None
    rank: int | None = None


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    label: str
    budget: Budget
    seed: int
    config: RunConfig


@dataclass
class Suite:
    name: str
    data: dict[str, Any]  # the raw, resolved suite mapping (saved as suite.yaml)
    runs: list[RunSpec] = field(default_factory=list)


def builtin_suites() -> list[str]:
    folder = resources.files("adaptive_lora") / "suites"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_suite(source: str | None = None, overrides: list[str] | None = None) -> Suite:
    """A built-in suite name (default `seed-study`) or a suite YAML file, with dotted overrides."""
    source = source or "seed-study"
    if source in builtin_suites():
        data = yaml.safe_load((resources.files("adaptive_lora") / "suites" / f"{source}.yaml").read_text(encoding="utf-8"))
    elif Path(source).is_file():
        data = load_yaml(source)
    else:
        raise UserError(f"suite {source!r} is neither a built-in suite ({', '.join(builtin_suites())}) nor a YAML file")
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise UserError(f"suite {source}: unknown key {unknown[0]!r}; valid keys are: {', '.join(sorted(SUITE_KEYS))}")
    apply_overrides(data, overrides or [], where=f"suite {source}")
    data.setdefault("name", Path(source).stem)
    return Suite(str(data["name"]), data, expand(data, source))


def expand(data: dict[str, Any], where: str) -> list[RunSpec]:
    strategies = data.get("strategies") or []
    if not strategies:
        raise UserError(f"suite {where}: 'strategies' is empty; list at least one, e.g. [{{strategy: uniform}}]")
    budgets = [parse_budget(b, where) for b in (data.get("budgets") or [])] or [Budget("own")]
    seeds = data.get("seeds") or [0]
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"suite {where}: seeds must be a list of integers, e.g. [0, 1, 2]")
    runs = []
    for index, entry in enumerate(strategies):
        for budget in budgets:
            for seed in seeds:
                runs.append(_run_spec(data, entry, budget, seed, f"{where}: strategies[{index}]"))
    ids = [r.run_id for r in runs]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise UserError(f"suite {where}: two entries resolve to the same run ({duplicate}); give them different params or labels")
    return runs


def _run_spec(data: dict[str, Any], entry: Any, budget: Budget, seed: int, where: str) -> RunSpec:
    if isinstance(entry, str):
        entry = {"strategy": entry}
    if not isinstance(entry, dict) or "strategy" not in entry:
        raise UserError(f"{where}: each strategy needs a 'strategy' name, e.g. {{strategy: uniform, params: {{rank: 8}}}}")
    extra = set(entry) - {"strategy", "label", "params", "allocation"}
    if extra:
        raise UserError(f"{where}: unknown key {sorted(extra)[0]!r}; use strategy, label, params or allocation")
    allocation = {**(data.get("allocation") or {}), **(entry.get("allocation") or {})}
    allocation.update(strategy=entry["strategy"], params=entry.get("params") or {}, budget=budget.params, budget_rank=budget.rank)
    raw = {"model": data.get("model") or {}, "data": data.get("data") or {}, "allocation": allocation,
           "training": {**(data.get("training") or {}), "seed": seed}}
    config = RunConfig.from_dict(raw, where=where)
    label = entry.get("label") or default_label(entry["strategy"], entry.get("params") or {})
    run_id = f"{slug(label)}__{budget.label}__s{seed}-{config_id(config)[:8]}"
    return RunSpec(run_id, label, budget, seed, config)


def parse_budget(value: Any, where: str) -> Budget:
    """`r8` / {budget_rank: 8} -> the budget of uniform rank 8; `1.5M` / 1500000 -> parameters."""
    if isinstance(value, dict):
        if "budget_rank" in value:
            return Budget(f"r{int(value['budget_rank'])}", rank=int(value["budget_rank"]))
        if "params" in value:
            return parse_budget(value["params"], where)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return Budget(_count_label(value), params=value)
    if isinstance(value, str):
        match = re.fullmatch(r"r(\d+)", value.strip())
        if match and int(match.group(1)) > 0:
            return Budget(value.strip(), rank=int(match.group(1)))
        match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmM]?)", value.strip())
        if match:
            count = int(float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6}[match.group(2).lower()])
            return Budget(_count_label(count), params=count)
    raise UserError(f"suite {where}: budget {value!r} is not a parameter count (e.g. 1500000 or 1.5M) or a budget rank (e.g. r8)")


def default_label(strategy: str, params: dict[str, Any]) -> str:
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    return f"{strategy} {shown}".strip()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "run"


def _count_label(count: int) -> str:
    return f"{count / 1e6:.3g}M" if count >= 1e6 else f"{count / 1e3:.3g}k"
