"""Rank-allocation strategies: pure functions from an `Anatomy` and parameters to ranks.

Each strategy returns {module name: rank}. They are registered by name with documented,
validated parameters, so `adaptive-lora strategies` can list them and `plan` can check input.
The original study's strategies keep its exact semantics (see each docstring); data-driven
strategies that need a model and data live in `adaptive_lora.importance`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .anatomy import Anatomy
from .errors import UserError

Ranks = dict[str, int]


@dataclass
class StrategyOutput:
    """What a data-driven strategy returns: a rank shape plus what it measured."""

    ranks: dict[str, float]  # shape (rescaled to the budget by `plan`); 0 = not adapted
    scores: dict[str, float] | None = None  # per-module importance, saved with the allocation
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. probe_time_s, probe_batches, method details


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    fn: Callable[..., Ranks]
    params: tuple[Param, ...] = ()
    rank_param: str | None = None  # the parameter that `--rank` / lora_r sets
    needs: tuple[str, ...] = ()  # context the strategy needs beyond the anatomy, e.g. ("model", "data")

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def resolve(self, params: dict[str, Any] | None, rank: int | None = None) -> dict[str, Any]:
        """Defaults, then the base rank, then user parameters: validated and type-converted."""
        resolved = self.defaults()
        if rank is not None and self.rank_param:
            resolved[self.rank_param] = rank
        known = {p.name: p for p in self.params}
        for key, value in (params or {}).items():
            if key not in known:
                valid = ", ".join(known) or "none"
                raise UserError(f"strategy {self.name!r} has no parameter {key!r}; its parameters are: {valid}")
            resolved[key] = _convert(known[key], value, self.name)
        for p in self.params:
            value = resolved[p.name]
            if p.minimum is not None and value is not None and value < p.minimum:
                raise UserError(f"strategy {self.name!r}: {p.name} must be >= {p.minimum:g}, got {value}")
        return resolved

    def __call__(self, anatomy: Anatomy, params: dict[str, Any] | None = None, rank: int | None = None, **context) -> Ranks:
        return self.fn(anatomy, **self.resolve(params, rank), **context)


def _convert(param: Param, value: Any, strategy: str) -> Any:
    if value is None or param.type is object:
        return value
    try:
        if param.type is int:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if param.type is bool and isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        converted = param.type(value)
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ValueError
        return converted
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"strategy {strategy!r}: {param.name} must be {param.type.__name__}, got {value!r}") from None


REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    REGISTRY[strategy.name] = strategy
    return strategy


def get_strategy(name: str) -> Strategy:
    if name not in REGISTRY:
        _load_plugins()
    if name not in REGISTRY:
        raise UserError(f"unknown strategy {name!r}; available: {', '.join(sorted(REGISTRY))} (see `adaptive-lora strategies`)")
    return REGISTRY[name]


def all_strategies() -> list[Strategy]:
    _load_plugins()
    return [REGISTRY[name] for name in sorted(REGISTRY)]


def _load_plugins() -> None:
    # Data-driven strategies import torch/PEFT machinery; register them only when asked for.
    from . import importance  # noqa: F401


# --- the study's strategies ---------------------------------------------------------------


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


def custom(anatomy: Anatomy, *, layer_ranks: Any, module_ranks: Any, file: str | None, default: int | None) -> Ranks:
    """Ranks from a per-layer list, a {module name or regex: rank} map, or a JSON file of either."""
    if file:
        layer_ranks, module_ranks = _read_custom_file(file)
    if isinstance(layer_ranks, str):
        layer_ranks = _parse_json_param(layer_ranks, "layer_ranks")
    if isinstance(module_ranks, str):
        module_ranks = _parse_json_param(module_ranks, "module_ranks")
    if layer_ranks is None and module_ranks is None:
        raise UserError("strategy 'custom' needs layer_ranks=[...], module_ranks={...} or file=PATH")
    ranks: Ranks = {}
    if layer_ranks is not None:
        ranks = _ranks_from_layer_list(anatomy, layer_ranks, source=file or "layer_ranks")
    if module_ranks is not None:
        ranks.update(_ranks_from_module_map(anatomy, module_ranks, default, ranks))
    return ranks


def _ranks_from_layer_list(anatomy: Anatomy, layer_ranks: Any, source: str) -> Ranks:
    if not isinstance(layer_ranks, list) or not all(isinstance(r, int) and not isinstance(r, bool) for r in layer_ranks):
        raise UserError(f"{source}: layer_ranks must be a list of integers, one per layer")
    if len(layer_ranks) != anatomy.num_layers:
        raise UserError(f"{source}: layer_ranks has {len(layer_ranks)} entries but the model has {anatomy.num_layers} layers; give one rank per layer")
    return {m.name: layer_ranks[m.layer] for m in anatomy.modules}


def _ranks_from_module_map(anatomy: Anatomy, module_ranks: Any, default: int | None, base: Ranks) -> Ranks:
    if not isinstance(module_ranks, dict):
        raise UserError("module_ranks must be a mapping {module name or regex: rank}")
    checked = {}
    for pattern, rank in module_ranks.items():
        if isinstance(rank, float) and rank.is_integer():
            rank = int(rank)
        if not isinstance(rank, int) or isinstance(rank, bool):
            raise UserError(f"module_ranks[{pattern!r}]: rank must be an integer, got {rank!r}")
        checked[pattern] = rank
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            raise UserError(f"module_ranks key {pattern!r} is neither a module name nor a valid regex ({exc})") from None
    module_ranks = checked
    ranks: Ranks = {}
    used = set()
    for m in anatomy.modules:
        for pattern, rank in module_ranks.items():
            if pattern == m.name or m.name.endswith("." + pattern) or re.fullmatch(pattern, m.name):
                ranks[m.name] = rank
                used.add(pattern)
                break
        else:
            if m.name not in base:
                if default is None:
                    raise UserError(f"module_ranks gives no rank for module {m.name}; add a pattern for it or set default=R")
                ranks[m.name] = default
    unused = [p for p in module_ranks if p not in used]
    if unused:
        raise UserError(f"module_ranks key {unused[0]!r} matches no targeted module; use full names like {anatomy.modules[0].name!r} or a regex")
    return ranks


def _read_custom_file(path: str) -> tuple[Any, Any]:
    """The study's {"strategy_name", "layer_ranks": [...]}, or {"module_ranks": {...}}, or a plain {name: rank} map."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"custom allocation file {path} does not exist")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"custom allocation file {path} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        return data, None
    if not isinstance(data, dict):
        raise UserError(f"custom allocation file {path}: expected an object with layer_ranks or module_ranks")
    if "layer_ranks" in data or "module_ranks" in data:
        return data.get("layer_ranks"), data.get("module_ranks")
    if "modules" in data:  # an allocation.json written by adaptive-lora
        return None, {re.escape(m["name"]): m["rank"] for m in data["modules"]}
    if all(isinstance(v, int) for v in data.values()):
        return None, data
    raise UserError(f"custom allocation file {path}: expected layer_ranks (one int per layer) or module_ranks ({{name: rank}})")


def _parse_json_param(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"strategy 'custom': {name} must be JSON, e.g. {name}=[16,12,8]") from None


def _depth(layer: int, num_layers: int) -> float:
    return layer / (num_layers - 1) if num_layers > 1 else 0.0


_R = lambda default, help="base rank": Param("rank", int, default, help, minimum=1)  # noqa: E731

register(Strategy("uniform", "the same rank r for every module (fixed-rank LoRA)", uniform, (_R(8, "rank r"),), rank_param="rank"))
register(Strategy(
    "linear_decay", "rank falls linearly with depth, start -> end (study: 16 -> 4)", linear_decay,
    (Param("start", int, 16, "rank of layer 0", 1), Param("end", int, 4, "rank of the last layer", 1),
     Param("min_rank", int, 1, "floor for any layer", 1)),
    rank_param="start",
))
register(Strategy(
    "linear_increase", "rank grows linearly with depth, start -> end", linear_increase,
    (Param("start", int, 4, "rank of layer 0", 1), Param("end", int, 16, "rank of the last layer", 1),
     Param("min_rank", int, 1, "floor for any layer", 1)),
    rank_param="end",
))
register(Strategy(
    "attention_heavy", "attention modules at the base rank, MLP at mlp_ratio x base (study: 16/8)", attention_heavy,
    (_R(16), Param("mlp_ratio", float, 0.5, "MLP rank as a fraction of the base rank", 0.0)), rank_param="rank",
))
register(Strategy(
    "mlp_heavy", "MLP modules at the base rank, attention at attention_ratio x base", mlp_heavy,
    (_R(16), Param("attention_ratio", float, 0.5, "attention rank as a fraction of the base rank", 0.0)), rank_param="rank",
))
register(Strategy(
    "empirical", "0.6 / 1.2 / 1.0 x base for early (<30%), middle (<70%) and late layers (study)", empirical,
    (_R(16), Param("early", float, 0.6, "multiplier below 30% depth", 0.0), Param("middle", float, 1.2, "multiplier below 70% depth", 0.0),
     Param("late", float, 1.0, "multiplier for the rest", 0.0)),
    rank_param="rank",
))
register(Strategy(
    "custom", "your own ranks: a per-layer list, a per-module/regex map, or a JSON file", custom,
    (Param("layer_ranks", object, None, "JSON list, one rank per layer"),
     Param("module_ranks", object, None, "JSON map {module name or regex: rank}"),
     Param("file", str, None, "JSON file with layer_ranks or module_ranks (the study's format works)"),
     Param("default", int, None, "rank for modules module_ranks does not name", 0)),
))
