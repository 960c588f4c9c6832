"""`custom`: your own ranks, as a per-layer list, a {module name or regex: rank} map, or a JSON file.

The study's `{"strategy_name", "layer_ranks"}` files, plain `{name: rank}` maps and adaptive-lora's
own allocation.json all load here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..anatomy import Anatomy
from ..errors import UserError
from ..schema import allocation_from_dict
from .base import Param, Ranks, Strategy, register


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
        raise UserError(
            f"{source}: layer_ranks has {len(layer_ranks)} entries but the model has {anatomy.num_layers} layers; give one rank per layer"
        )
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
        raise UserError(
            f"module_ranks key {unused[0]!r} matches no targeted module; use full names like {anatomy.modules[0].name!r} or a regex"
        )
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
        return None, {re.escape(m.name): m.rank for m in allocation_from_dict(data, f"custom allocation file {path}").modules}
    if all(isinstance(v, int) for v in data.values()):
        return None, data
    raise UserError(f"custom allocation file {path}: expected layer_ranks (one int per layer) or module_ranks ({{name: rank}})")


def _parse_json_param(text: str, name: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise UserError(f"strategy 'custom': {name} must be JSON, e.g. {name}=[16,12,8]") from None


register(
    Strategy(
        "custom",
        "your own ranks: a per-layer list, a per-module/regex map, or a JSON file",
        custom,
        (
            Param("layer_ranks", object, None, "JSON list, one rank per layer"),
            Param("module_ranks", object, None, "JSON map {module name or regex: rank}"),
            Param("file", str, None, "JSON file with layer_ranks or module_ranks (the study's format works)"),
            Param("default", int, None, "rank for modules module_ranks does not name", 0),
        ),
    )
)
