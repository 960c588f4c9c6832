"""Suites: strategies x budgets x learning rates x seeds over shared model/data/training settings.

A suite YAML looks like:

    name: seed-study
    model: {name: embedded}
    data: {source: builtin, max_samples: 200}
    training: {learning_rate: 5.0e-4, max_steps: 20}
    allocation: {alpha_policy: constant, lora_alpha: 32}    # shared allocation settings
    strategies:
      - {strategy: uniform, label: uniform r8, params: {rank: 8}}
      - {strategy: linear_decay, params: {start: 16, end: 4}}
    budgets: []               # [] = each strategy's own ranks; or e.g. [r4, r8, 1.5M, 2000000]
    seeds: [0, 1, 2]
    learning_rates: [1.0e-4, 5.0e-4, 1.0e-3]   # optional: a grid, chosen per strategy x budget on validation loss
    select_lr_on_seeds: 1     # optional: choose on the first N seeds, then run the other seeds at the chosen rate
    baseline: uniform         # the strategy every other is compared with (default uniform)
    # An entry with `budget: own` keeps its own ranks and is trained once, not once per budget.
    # `role: control` marks a control of a strategy (same strategy name, isolating part of its effect);
    # `role: capacity-control` a configuration known to be worse, e.g. rank 1 on v only.
    # `learning_rate: 1.0e-3` trains an entry at its own rate only, outside the grid (e.g. a rate chosen
    # by `adaptive-lora search`); entries without it expand as they always did.
    output: {dir: sweeps/mine}   # optional: the default of `run --out`

Without `select_lr_on_seeds`, every learning rate runs with every seed. Each run gets a stable id
from its resolved config. Torch-free: `adaptive-lora run --list` and the report use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig, apply_overrides, load_yaml
from ..counts import count_label, parse_count
from ..errors import UserError

SUITE_KEYS = {
    "name",
    "description",
    "model",
    "data",
    "training",
    "allocation",
    "strategies",
    "budgets",
    "seeds",
    "learning_rates",
    "select_lr_on_seeds",
    "baseline",
    "output",
    "eval",
}
ENTRY_KEYS = {"strategy", "label", "params", "allocation", "role", "budget", "isolates", "learning_rate"}
ISOLATES = ("allocation", "initialisation", "dynamics")  # what a control keeps of its strategy
DEFAULT_BASELINE = "uniform"
# What an entry is for: a strategy under study, a control that isolates part of a strategy's effect
# (same strategy name, e.g. EVA's initialisation at uniform ranks), or the capacity control: a
# configuration known to be worse (far smaller budget) that must separate from the baseline.
ROLES = ("strategy", "control", "capacity-control")


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
    learning_rate: float | None = None  # None: the suite has no learning-rate grid
    role: str = "strategy"  # "baseline" or one of ROLES
    selection: bool = False  # True: a run of the learning-rate selection stage

    @property
    def group(self) -> tuple[str, str]:
        """(label, budget label): one comparison cell; the learning rate is chosen per group."""
        return self.label, self.budget.label


@dataclass
class Suite:
    name: str
    data: dict[str, Any]  # the raw, resolved suite mapping (saved as suite.yaml)
    runs: list[RunSpec] = field(default_factory=list)  # every run that can exist (all rates x seeds)
    learning_rates: list[float] = field(default_factory=list)
    selection_seeds: list[int] = field(default_factory=list)  # seeds the rate is chosen on (= all seeds without a stage)
    baseline: str = DEFAULT_BASELINE

    @property
    def output_dir(self) -> str:
        """Where `run` writes by default: the suite's output.dir, else sweeps/<name>."""
        return str((self.data.get("output") or {}).get("dir") or f"sweeps/{self.name}")

    @property
    def suite_id(self) -> str:
        return hashlib.sha256(json.dumps(self.data, sort_keys=True, default=str).encode()).hexdigest()[:12]

    @property
    def staged(self) -> bool:
        """True when the rate is chosen on fewer seeds than the suite runs."""
        return len(self.learning_rates) > 1 and set(self.selection_seeds) != {r.seed for r in self.runs}

    def expected_runs(self) -> int:
        """How many runs the sweep will train: all of them, or with a staged grid, the selection
        runs plus one rate's worth of the other seeds."""
        rest = len(self.runs) - len(self.selection_runs())
        return len(self.selection_runs()) + rest // max(1, len(self.learning_rates))

    def selection_runs(self) -> list[RunSpec]:
        """Runs that choose the learning rate (every run when nothing is staged)."""
        return [r for r in self.runs if r.selection]

    def final_runs(self, chosen: dict[tuple[str, str], float]) -> list[RunSpec]:
        """Runs of the other seeds at each group's chosen rate (groups not yet chosen are left out)."""
        return [r for r in self.runs if not r.selection and chosen.get(r.group) == r.learning_rate]


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
    return suite_from_dict(data, overrides, source)


def suite_from_dict(data: dict[str, Any], overrides: list[str] | None = None, source: str = "suite") -> Suite:
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise UserError(f"suite {source}: unknown key {unknown[0]!r}; valid keys are: {', '.join(sorted(SUITE_KEYS))}")
    data = json.loads(json.dumps(data))  # a private copy: overrides must not leak into the caller's mapping
    apply_overrides(data, overrides or [], where=f"suite {source}")
    data.setdefault("name", Path(source).stem)
    seeds = data.get("seeds") or [0]
    if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise UserError(f"suite {source}: seeds must be a list of integers, e.g. [0, 1, 2]")
    rates = _learning_rates(data, source)
    n_select = data.get("select_lr_on_seeds")
    if n_select is not None and (not isinstance(n_select, int) or isinstance(n_select, bool) or not 1 <= n_select <= len(seeds)):
        raise UserError(
            f"suite {source}: select_lr_on_seeds must be a whole number from 1 to the number of seeds ({len(seeds)}), got {n_select!r}"
        )
    selection_seeds = seeds[:n_select] if n_select and len(rates) > 1 else list(seeds)
    output = data.get("output") or {}
    if not isinstance(output, dict) or set(output) - {"dir"}:
        raise UserError(f"suite {source}: output takes only dir, e.g. output: {{dir: sweeps/mine}}; got {output!r}")
    runs = expand(data, source, seeds, rates, selection_seeds)
    return Suite(str(data["name"]), data, runs, rates, selection_seeds, str(data.get("baseline") or DEFAULT_BASELINE))


def _learning_rates(data: dict[str, Any], source: str) -> list[float]:
    rates = data.get("learning_rates")
    if rates is None:
        return []
    parsed = [_positive_float(r) for r in rates] if isinstance(rates, list) else []
    if not parsed or None in parsed:
        raise UserError(
            f"suite {source}: learning_rates must be a list of positive numbers, e.g. [1.0e-4, 5.0e-4], got {rates!r}"
        )
    if len(set(parsed)) != len(parsed):
        raise UserError(f"suite {source}: learning_rates lists a rate twice: {rates}")
    data["learning_rates"] = parsed  # YAML 1.1 reads 1e-4 (no dot) as a string; record numbers
    return parsed


def _positive_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and math.isfinite(number) else None


def expand(data: dict[str, Any], where: str, seeds: list[int], rates: list[float], selection_seeds: list[int]) -> list[RunSpec]:
    strategies = data.get("strategies") or []
    if not strategies:
        raise UserError(f"suite {where}: 'strategies' is empty; list at least one, e.g. [{{strategy: uniform}}]")
    if not isinstance(strategies, list):
        raise UserError(f"suite {where}: 'strategies' must be a list, e.g. [{{strategy: uniform}}], got {strategies!r}")
    if not isinstance(data.get("budgets") or [], list):
        raise UserError(f"suite {where}: 'budgets' must be a list, e.g. [r4, r8, 3.1M], got {data['budgets']!r}")
    budgets = [parse_budget(b, where) for b in (data.get("budgets") or [])] or [Budget("own")]
    runs = []
    for index, entry in enumerate(strategies):
        own = isinstance(entry, dict) and entry.get("budget") is not None
        if own and entry.get("budget") != "own":
            raise UserError(
                f"suite {where}: strategies[{index}].budget can only be 'own' (its own ranks, trained once), got {entry['budget']!r}"
            )
        entry_rates = _entry_rate(entry, f"{where}: strategies[{index}]")
        for budget in [Budget("own")] if own else budgets:
            for rate in entry_rates or rates or [None]:
                for seed in seeds:
                    spec = _run_spec(data, entry, budget, seed, rate, f"{where}: strategies[{index}]")
                    runs.append(_with_selection(spec, seed in selection_seeds or len(rates) < 2))
    ids = [r.run_id for r in runs]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise UserError(f"suite {where}: two entries resolve to the same run ({duplicate}); give them different params or labels")
    return runs


def _entry_rate(entry: Any, where: str) -> list[float]:
    """[the entry's own learning rate], or [] when it has none (then it follows the suite's grid)."""
    if not isinstance(entry, dict) or entry.get("learning_rate") is None:
        return []
    rate = _positive_float(entry["learning_rate"])
    if rate is None:
        raise UserError(f"{where}: learning_rate must be a positive number, e.g. 1.0e-3, got {entry['learning_rate']!r}")
    return [rate]


def _with_selection(spec: RunSpec, selection: bool) -> RunSpec:
    return RunSpec(spec.run_id, spec.label, spec.budget, spec.seed, spec.config, spec.learning_rate, spec.role, selection)


def _run_spec(data: dict[str, Any], entry: Any, budget: Budget, seed: int, rate: float | None, where: str) -> RunSpec:
    if isinstance(entry, str):
        entry = {"strategy": entry}
    if not isinstance(entry, dict) or "strategy" not in entry:
        raise UserError(f"{where}: each strategy needs a 'strategy' name, e.g. {{strategy: uniform, params: {{rank: 8}}}}")
    extra = set(entry) - ENTRY_KEYS
    if extra:
        raise UserError(f"{where}: unknown key {sorted(extra)[0]!r}; use {', '.join(sorted(ENTRY_KEYS))}")
    role = entry.get("role") or "strategy"
    if role not in ROLES:
        raise UserError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
    if entry.get("isolates") is not None and (role != "control" or entry["isolates"] not in ISOLATES):
        raise UserError(
            f"{where}: isolates ({', '.join(ISOLATES)}) belongs to entries with role: control, got {entry['isolates']!r}"
        )
    allocation = {**(data.get("allocation") or {}), **(entry.get("allocation") or {})}
    allocation.update(strategy=entry["strategy"], params=entry.get("params") or {}, budget=budget.params, budget_rank=budget.rank)
    training = {**(data.get("training") or {}), "seed": seed}
    if rate is not None:
        training["learning_rate"] = rate
    raw = {
        "model": data.get("model") or {},
        "data": data.get("data") or {},
        "allocation": allocation,
        "training": training,
        "eval": data.get("eval") or {},
    }
    config = RunConfig.from_dict(raw, where=where)
    label = str(entry.get("label") or default_label(entry["strategy"], entry.get("params") or {}))
    rate_part = f"__lr{rate:g}" if rate is not None else ""
    run_id = f"{slug(label)}__{budget.label}{rate_part}__s{seed}-{config.config_id()[:8]}"
    if role == "strategy" and is_baseline(data, label, entry["strategy"]):
        role = "baseline"
    return RunSpec(run_id, label, budget, seed, config, rate, role)


def is_baseline(data: dict[str, Any], label: str, strategy: str) -> bool:
    """The suite's `baseline` names a label (e.g. "all modules") or, when no entry has that label, a strategy."""
    baseline = str(data.get("baseline") or DEFAULT_BASELINE)
    labels = {str(e.get("label")) for e in data.get("strategies") or [] if isinstance(e, dict) and e.get("label")}
    return label == baseline if baseline in labels else strategy == baseline


def parse_budget(value: Any, where: str) -> Budget:
    """`r8` / {budget_rank: 8} -> the budget of uniform rank 8; `1.5M` / 1500000 -> parameters."""
    if isinstance(value, dict):
        if "budget_rank" in value:
            return Budget(f"r{int(value['budget_rank'])}", rank=int(value["budget_rank"]))
        if "params" in value:
            return parse_budget(value["params"], where)
    if isinstance(value, str):
        match = re.fullmatch(r"r(\d+)", value.strip())
        if match and int(match.group(1)) > 0:
            return Budget(value.strip(), rank=int(match.group(1)))
    try:
        count = parse_count(value, f"suite {where}: budget")
    except UserError:
        raise UserError(
            f"suite {where}: budget {value!r} is not a parameter count (e.g. 1500000 or 1.5M) or a budget rank (e.g. r8)"
        ) from None
    return Budget(count_label(count), params=count)


def default_label(strategy: str, params: dict[str, Any]) -> str:
    shown = " ".join(f"{k}={v}" for k, v in params.items())
    return f"{strategy} {shown}".strip()


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower() or "run"
