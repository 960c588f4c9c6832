"""`from_run`: retrain, as a static allocation, the ranks a previous run learned or measured
("allocate, then retrain"): AdaLoRA's final pattern, a probe's shape, any run's allocation.json.

Without a budget the source ranks are used as they are (same modules, same ranks). With a budget
the source ranks are the shape, rescaled by `match_budget`; at the source's own parameter count that
reproduces them exactly. Modules the source does not adapt (e.g. AdaLoRA pruned them to rank 0)
stay unadapted and are listed in `meta["zero_rank_modules"]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .anatomy import Anatomy
from .errors import UserError
from .io import read_json
from .strategies import StrategyOutput


def read_source_allocation(run: str) -> tuple[dict[str, Any], Path]:
    """The allocation.json of a run directory (or the file itself)."""
    if not run:
        raise UserError("from_run needs run=PATH: a run directory or its allocation.json")
    path = Path(run).expanduser()
    if path.is_dir():
        path = path / "allocation.json"
    if not path.is_file():
        raise UserError(f"from_run: {path} does not exist; give a run directory that holds allocation.json, or the file")
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"from_run: {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("modules"), list):
        raise UserError(f"from_run: {path} is not an adaptive-lora allocation.json (no 'modules' list)")
    return data, path


def from_run(anatomy: Anatomy, *, run: str | None) -> StrategyOutput:
    data, path = read_source_allocation(run or "")
    try:
        ranks = {m["name"]: int(m["rank"]) for m in data["modules"]}
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"from_run: {path}: every module needs a name and a rank ({exc})") from None
    known = set(anatomy.names)
    unknown = sorted(set(ranks) - known)
    if unknown:
        raise UserError(f"from_run: {path} names module {unknown[0]!r}, which this model (with these target_modules) does not have; "
                        "plan for the same model as the source run")
    if not ranks:
        raise UserError(f"from_run: {path} adapts no module")
    meta = {
        "method": "from_run", "source": str(path), "source_strategy": data.get("strategy"),
        "source_trainable_params": data.get("trainable_params"), "source_budget": data.get("budget"),
        "zero_rank_modules": sorted(known - set(ranks)),
    }
    scores = data.get("scores") if isinstance(data.get("scores"), dict) else None
    return StrategyOutput(ranks, scores, meta)
