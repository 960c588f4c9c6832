"""Reading a sweep's runs into one table, and the order every table and figure uses.

    df, skipped = collect_runs("sweeps/seed-study")

Only `result.json` is trusted as a run's outcome (docs/run-format.md); a directory without a
readable, complete one is listed as skipped with the reason, never fatal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..errors import UserError
from ..schema import CONFIG_FILE, RESULT_FILE, ROLES, SUITE_FILE, read_result
from ..sweep.selection import choose_rates, chosen_rates
from ..sweep.suite import Suite, suite_from_dict

BASELINE_STRATEGY = "uniform"  # the baseline of runs without a suite (a suite's `baseline` key overrides it)
OWN_BUDGET = "own"
INT_COLUMNS = (
    "seed",
    "budget_target",
    "budget_achieved",
    "trainable_params",
    "total_params",
    "steps",
    "diverged_step",
    "n_train",
    "n_eval",
    "n_test",
    "test_n_rows",
)
# results.csv columns before the per-role rank columns, and after them.
_HEAD_COLUMNS = (
    "run_id",
    "status",
    "error",
    "strategy",
    "label",
    "role",
    "budget_label",
    "budget_target",
    "budget_achieved",
    "seed",
    "learning_rate",
    "at_chosen_rate",
    "eval_loss",
    "perplexity",
    "base_eval_loss",
    "base_perplexity",
    "improvement",
    "improvement_pct",
    "test_loss",
    "base_test_loss",
    "test_improvement",
    "test_exact_match",
    "base_test_exact_match",
    "test_rouge_l",
    "base_test_rouge_l",
    "test_n_rows",
    "forgetting_source",
    "forgetting_base_loss",
    "forgetting_loss",
    "forgetting_delta",
    "final_train_loss",
    "trainable_params",
    "total_params",
    "efficiency_pct",
    "mean_rank",
    "min_rank",
    "max_rank",
)
_TAIL_COLUMNS = (
    "steps",
    "tokens_seen",
    "train_time_s",
    "probe_time_s",
    "eval_time_s",
    "wall_time_s",
    "tokens_per_s",
    "supervised_tokens_per_s",
    "peak_memory_mb",
    "diverged_step",
    "last_finite_loss",
    "data_hash",
    "data_source",
    "n_train",
    "n_eval",
    "n_test",
    "model",
    "run_dir",
)


@dataclass
class Run:
    path: Path
    result: dict[str, Any]
    role: str = ""  # baseline | strategy | control (from the suite; else baseline when the strategy is uniform)

    def __post_init__(self):
        if not self.role:
            self.role = "baseline" if self.result.get("strategy") == BASELINE_STRATEGY else "strategy"


# --- reading runs ------------------------------------------------------------------------------


def _run_dirs(sweep: Path) -> list[Path]:
    """SWEEP/runs/* when present; SWEEP itself when it is one run; else run-like subdirectories of SWEEP."""
    runs = sweep / "runs"
    if (sweep / "result.json").is_file() and not runs.is_dir():
        return [sweep]
    if runs.is_dir():
        return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(p for p in sweep.iterdir() if p.is_dir() and any((p / f).exists() for f in (RESULT_FILE, CONFIG_FILE)))


def _number(value: Any) -> float | None:
    """A finite number, or None (strings, bools, NaN and inf are not measurements)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def load_run(run_dir: Path) -> tuple[Run | None, str | None]:
    """(Run, None) for a usable run directory, (None, reason) otherwise."""
    result, problem = read_result(run_dir)
    return (None, problem) if result is None else (Run(run_dir, result), None)


def scan_runs(sweep_dir: str | Path) -> tuple[list[Run], list[dict[str, str]]]:
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        what = "is a file, not a sweep directory" if sweep.exists() else "does not exist"
        raise UserError(f"sweep directory {sweep} {what}; pass the folder that holds suite.yaml and runs/")
    runs, skipped = [], []
    for run_dir in _run_dirs(sweep):
        run, reason = load_run(run_dir)
        if run is None:
            skipped.append({"path": str(run_dir), "reason": reason})
        else:
            runs.append(run)
    return runs, skipped


def _sub(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


def run_row(run: Run) -> dict[str, Any]:
    """One flat results.csv row from a result.json."""
    r = run.result
    row: dict[str, Any] = {k: r.get(k) for k in ("run_id", "status", "error", "strategy", "model")}
    row.update(label=str(r["label"]), budget_label=str(r["budget_label"]), role=run.role, seed=int(r["seed"]))
    row["learning_rate"] = _number(_sub(_sub(r.get("config"), "training"), "learning_rate"))
    row["at_chosen_rate"] = True  # set by the report when the suite has a learning-rate grid
    row["budget_target"] = _number(_sub(r.get("budget"), "target"))
    row["budget_achieved"] = _number(_sub(r.get("budget"), "achieved"))
    for key in (
        "eval_loss",
        "perplexity",
        "base_eval_loss",
        "base_perplexity",
        "improvement",
        "improvement_pct",
        "final_train_loss",
        "trainable_params",
        "total_params",
        "efficiency_pct",
        "steps",
        "train_time_s",
        "probe_time_s",
        "eval_time_s",
        "wall_time_s",
        "tokens_per_s",
        "supervised_tokens_per_s",
        "peak_memory_mb",
        "diverged_step",
        "last_finite_loss",
    ):
        row[key] = _number(r.get(key))
    test, base_test = _sub(r, "test"), _sub(_sub(r, "base"), "test")
    for key in ("loss", "exact_match", "rouge_l"):
        row[f"test_{key}"], row[f"base_test_{key}"] = _number(_sub(test, key)), _number(_sub(base_test, key))
    row["test_n_rows"] = _number(_sub(test, "n_rows"))
    both = row["test_loss"] is not None and row["base_test_loss"] is not None
    row["test_improvement"] = row["base_test_loss"] - row["test_loss"] if both else None
    forgetting = _sub(r, "forgetting")
    row["forgetting_source"] = _sub(forgetting, "source")
    for key in ("base_loss", "loss", "delta"):
        row[f"forgetting_{key}"] = _number(_sub(forgetting, key))
    summary = r.get("allocation_summary") if isinstance(r.get("allocation_summary"), dict) else {}
    for key in ("mean_rank", "min_rank", "max_rank"):
        row[key] = _number(summary.get(key))
    by_role = summary.get("ranks_by_role") if isinstance(summary.get("ranks_by_role"), dict) else {}
    for role, rank in by_role.items():
        row[f"rank_{role}"] = _number(rank)
    data = r.get("data") if isinstance(r.get("data"), dict) else {}
    row.update(
        data_hash=data.get("hash"),
        data_source=data.get("source"),
        n_train=_number(data.get("n_train")),
        n_eval=_number(data.get("n_eval")),
        n_test=_number(data.get("n_test")),
    )
    row["tokens_seen"] = _number(r.get("tokens_seen"))
    row["run_dir"] = str(run.path)
    return row


def _role_columns(columns) -> list[str]:
    roles = [c for c in columns if c.startswith("rank_")]
    known = [f"rank_{r}" for r in ROLES if f"rank_{r}" in roles]
    return known + sorted(set(roles) - set(known))


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    rows = [run_row(run) for run in runs]
    df = pd.DataFrame(rows)
    for column in _HEAD_COLUMNS + _TAIL_COLUMNS:
        if column not in df:
            df[column] = None
    df = df[list(_HEAD_COLUMNS) + _role_columns(df.columns) + list(_TAIL_COLUMNS)]
    for column in INT_COLUMNS:  # nullable ints: CSV shows 3145728, not 3145728.0, and blanks for missing
        df[column] = pd.to_numeric(df[column]).round().astype("Int64")
    if df.empty:
        return df
    return sort_runs(df)


def collect_runs(sweep_dir: str | Path) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Rows for valid runs (results.csv columns) and [{"path", "reason"}] for unusable run directories."""
    runs, skipped = scan_runs(sweep_dir)
    return runs_frame(runs), skipped


# --- ordering ---------------------------------------------------------------------------------


def budget_order(df: pd.DataFrame) -> list[str]:
    """`own` first, then budgets by size (target, else achieved), so r4 comes before r16."""
    size = df["budget_target"].astype("Float64").fillna(df["budget_achieved"].astype("Float64"))
    medians = size.groupby(df["budget_label"]).median()

    def key(label: str):
        value = medians.get(label)
        return (label != OWN_BUDGET, math.inf if pd.isna(value) else float(value), label)

    return sorted(df["budget_label"].unique(), key=key)


def label_order(df: pd.DataFrame) -> list[str]:
    """Baseline (uniform) labels first, smallest first, then the other labels alphabetically."""
    params = df.groupby("label")["trainable_params"].median()
    uniform = set(df.loc[df["role"] == "baseline", "label"])

    def key(label: str):
        value = params.get(label)
        return (label not in uniform, math.inf if label not in uniform or pd.isna(value) else float(value), label)

    return sorted(df["label"].unique(), key=key)


def sort_runs(df: pd.DataFrame) -> pd.DataFrame:
    budgets = {b: i for i, b in enumerate(budget_order(df))}
    labels = {lab: i for i, lab in enumerate(label_order(df))}
    keys = pd.DataFrame({"b": df["budget_label"].map(budgets), "l": df["label"].map(labels), "s": df["seed"]})
    return df.loc[keys.sort_values(["b", "l", "s"]).index].reset_index(drop=True)


def done_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "done") & df["eval_loss"].notna()]


# --- the sweep's suite -------------------------------------------------------------------------


@dataclass
class SweepRuns:
    """A sweep directory, read: its suite's runs, runs of other configurations, and unusable directories."""

    runs: list[Run]
    others: list[dict[str, str]]  # {"path", "label", "seed", "reason"}: runs not of the recorded suite
    skipped: list[dict[str, str]]  # {"path", "reason"}: no usable result.json
    suite: Suite | None  # None: no readable suite.yaml (a single run, or a folder of runs)
    suite_error: str | None = None


def read_suite(sweep: Path) -> tuple[Suite | None, str | None]:
    """The sweep's recorded suite, or (None, why not)."""
    path = sweep / SUITE_FILE
    if not path.is_file():
        return None, None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return suite_from_dict(data if isinstance(data, dict) else {}, source=str(path)), None
    except (OSError, UnicodeDecodeError, yaml.YAMLError, UserError) as exc:
        return None, f"{path} could not be read as a suite ({exc}); every run directory is reported"


def read_sweep(sweep_dir: str | Path) -> SweepRuns:
    sweep = Path(sweep_dir)
    runs, skipped = scan_runs(sweep)
    suite, error = read_suite(sweep)
    if suite is None:
        return SweepRuns(runs, [], skipped, None, error)
    specs = {spec.run_id: spec for spec in suite.runs}
    mine, others = [], []
    for run in runs:
        spec = specs.get(run.result["run_id"])
        if spec is None:
            others.append(
                {
                    "path": str(run.path),
                    "label": str(run.result.get("label")),
                    "seed": str(run.result.get("seed")),
                    "reason": _why_not_in_suite(run, suite),
                }
            )
        else:
            mine.append(Run(run.path, run.result, spec.role))
    return SweepRuns(mine, others, skipped, suite)


def _why_not_in_suite(run: Run, suite: Suite) -> str:
    same = [s for s in suite.runs if s.label == run.result.get("label") and s.seed == run.result.get("seed")]
    if not same:
        return "its label and seed are not in the recorded suite (suite.yaml)"
    diffs = _config_diff(same[0].config.to_dict(), run.result.get("config") or {})
    shown = "; ".join(f"{key}: {theirs!r} here, {ours!r} in the suite" for key, ours, theirs in diffs[:3])
    return f"another configuration of the same label and seed ({shown or 'a setting this version no longer records'})"


def _config_diff(ours: dict, theirs: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """Dotted keys where two config dicts differ (the output section is not part of a run's identity)."""
    diffs = []
    for key in sorted(set(ours) | set(theirs)):
        if not prefix and key == "output":
            continue
        a, b = ours.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            diffs.append((f"{prefix}{key}", a, b))
    return diffs


def is_seed_study(suite: Suite | None) -> bool:
    return suite is not None and suite.name == "seed-study"


def relative_path(path: str | Path, root: Path) -> str:
    """`path` relative to the sweep directory when it lies inside it (results.csv, report tables)."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def mark_chosen_rates(df: pd.DataFrame, runs: list[Run], suite: Suite | None) -> pd.DataFrame:
    """`at_chosen_rate`: whether a run is at its group's chosen learning rate (sweep.selection, on
    validation loss). Without a grid every run is; a group whose selection runs have not all ended
    has no chosen rate yet, so none of its runs enter the comparisons."""
    if suite is None or len(suite.learning_rates) < 2 or df.empty:
        return df
    chosen = chosen_rates(choose_rates(suite, {run.result["run_id"]: run.result for run in runs}))
    df = df.copy()
    df["at_chosen_rate"] = [
        chosen.get((label, budget)) is not None and math.isclose(chosen[(label, budget)], rate or 0.0)
        for label, budget, rate in zip(df["label"], df["budget_label"], df["learning_rate"])
    ]
    return df
