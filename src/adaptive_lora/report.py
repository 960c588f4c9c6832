"""Turn a sweep directory into results.csv, summary.csv, stats.csv, figures, report.md and report.html.

    df, skipped = collect_runs("sweeps/seed-study")
    info = write_report("sweeps/seed-study")

Only `result.json` is trusted as a run's outcome (docs/run-format.md); a directory without a
readable, complete one is listed as skipped with the reason, never fatal. Markdown/HTML rendering
lives in `report_render`, figures in `figures`, the statistics in `stats`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .errors import UserError
from .io import atomic_write_text
from .stats import ALPHA, holm, mean_ci, paired_compare

STATUSES = ("done", "diverged", "oom", "error", "interrupted")
REQUIRED_KEYS = ("run_id", "status", "strategy", "label", "budget_label", "seed")
RUN_FILES = ("result.json", "config.yaml", "allocation.json", "metrics.jsonl")
# Same order as anatomy.ROLES (not imported: anatomy pulls in torch, the report must not).
ROLE_ORDER = ("q", "k", "v", "o", "qkv", "up", "gate", "down", "other")
BASELINE_STRATEGY = "uniform"
OWN_BUDGET = "own"
SUMMARY_METRICS = ("eval_loss", "perplexity", "improvement", "trainable_params", "train_time_s")
INT_COLUMNS = ("seed", "budget_target", "budget_achieved", "trainable_params", "total_params", "steps",
               "diverged_step", "n_train", "n_eval")
# results.csv columns before the per-role rank columns, and after them.
_HEAD_COLUMNS = (
    "run_id", "status", "error", "strategy", "label", "budget_label", "budget_target", "budget_achieved", "seed",
    "eval_loss", "perplexity", "base_eval_loss", "base_perplexity", "improvement", "improvement_pct",
    "final_train_loss", "trainable_params", "total_params", "efficiency_pct", "mean_rank", "min_rank", "max_rank",
)
_TAIL_COLUMNS = (
    "steps", "train_time_s", "probe_time_s", "tokens_per_s", "supervised_tokens_per_s", "peak_memory_mb",
    "diverged_step", "last_finite_loss", "data_hash", "data_source", "n_train", "n_eval", "model", "run_dir",
)


@dataclass
class Run:
    path: Path
    result: dict[str, Any]


# --- reading runs ------------------------------------------------------------------------------


def _run_dirs(sweep: Path) -> list[Path]:
    """SWEEP/runs/* when present; SWEEP itself when it is one run; else run-like subdirectories of SWEEP."""
    runs = sweep / "runs"
    if (sweep / "result.json").is_file() and not runs.is_dir():
        return [sweep]
    if runs.is_dir():
        return sorted(p for p in runs.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(p for p in sweep.iterdir() if p.is_dir() and any((p / f).exists() for f in RUN_FILES))


def _number(value: Any) -> float | None:
    """A finite number, or None (strings, bools, NaN and inf are not measurements)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _problem(result: Any) -> str | None:
    """Why a parsed result.json cannot be used, or None when it can."""
    if not isinstance(result, dict):
        return f"result.json is a JSON {type(result).__name__}, not an object"
    missing = [k for k in REQUIRED_KEYS if result.get(k) is None]
    if missing:
        return f"result.json lacks required key(s): {', '.join(missing)}"
    if result["status"] not in STATUSES:
        return f"result.json has unknown status {result['status']!r} (expected one of {', '.join(STATUSES)})"
    if _number(result["seed"]) is None or float(result["seed"]) != int(result["seed"]):
        return f"result.json seed {result['seed']!r} is not an integer"
    if result["status"] == "done" and _number(result.get("eval_loss")) is None:
        return "status is done but eval_loss is missing or not a finite number"
    return None


def load_run(run_dir: Path) -> tuple[Run | None, str | None]:
    """(Run, None) for a usable run directory, (None, reason) otherwise."""
    path = run_dir / "result.json"
    if not path.is_file():
        return None, "no result.json (run unfinished, still running or killed)"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"result.json is not valid JSON: {exc}"
    problem = _problem(result)
    return (None, problem) if problem else (Run(run_dir, result), None)


def scan_runs(sweep_dir: str | Path) -> tuple[list[Run], list[dict[str, str]]]:
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise UserError(f"sweep directory {sweep} does not exist; pass the folder that holds suite.yaml and runs/")
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
    row: dict[str, Any] = {k: r.get(k) for k in ("run_id", "status", "error", "strategy", "label", "budget_label",
                                                  "model")}
    row["label"], row["budget_label"] = str(row["label"]), str(row["budget_label"])
    row["seed"] = int(r["seed"])
    row["budget_target"] = _number(_sub(r.get("budget"), "target"))
    row["budget_achieved"] = _number(_sub(r.get("budget"), "achieved"))
    for key in ("eval_loss", "perplexity", "base_eval_loss", "base_perplexity", "improvement", "improvement_pct",
                "final_train_loss", "trainable_params", "total_params", "efficiency_pct", "steps", "train_time_s",
                "probe_time_s", "tokens_per_s", "supervised_tokens_per_s", "peak_memory_mb", "diverged_step",
                "last_finite_loss"):
        row[key] = _number(r.get(key))
    summary = r.get("allocation_summary") if isinstance(r.get("allocation_summary"), dict) else {}
    for key in ("mean_rank", "min_rank", "max_rank"):
        row[key] = _number(summary.get(key))
    by_role = summary.get("ranks_by_role") if isinstance(summary.get("ranks_by_role"), dict) else {}
    for role, rank in by_role.items():
        row[f"rank_{role}"] = _number(rank)
    data = r.get("data") if isinstance(r.get("data"), dict) else {}
    row.update(data_hash=data.get("hash"), data_source=data.get("source"),
               n_train=_number(data.get("n_train")), n_eval=_number(data.get("n_eval")))
    row["run_dir"] = str(run.path)
    return row


def _role_columns(columns) -> list[str]:
    roles = [c for c in columns if c.startswith("rank_")]
    known = [f"rank_{r}" for r in ROLE_ORDER if f"rank_{r}" in roles]
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
    uniform = set(df.loc[df["strategy"] == BASELINE_STRATEGY, "label"])

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


# --- tables -----------------------------------------------------------------------------------


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (label, budget_label): n done, n_failed, and mean/std/95% CI of the key metrics over done runs."""
    rows = []
    for budget in budget_order(df) if len(df) else []:
        for label in label_order(df):
            group = df[(df["label"] == label) & (df["budget_label"] == budget)]
            if group.empty:
                continue
            done = done_runs(group)
            row = {"label": label, "budget_label": budget, "strategy": group["strategy"].iloc[0],
                   "n": len(done), "n_failed": int((group["status"] != "done").sum())}
            for metric in SUMMARY_METRICS:
                s = mean_ci(done[metric].astype(float).tolist())
                row.update({f"{metric}_mean": s.mean, f"{metric}_std": s.std,
                            f"{metric}_ci_low": s.ci_low, f"{metric}_ci_high": s.ci_high})
            rows.append(row)
    columns = ["label", "budget_label", "strategy", "n", "n_failed"] + [
        f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std", "ci_low", "ci_high")]
    return pd.DataFrame(rows, columns=columns)


def _choose_baseline(df: pd.DataFrame, done: pd.DataFrame, label: str, budget: str) -> tuple[str | None, str]:
    """The uniform label to pair `label` with at `budget`, and a sentence saying why."""
    candidates = done[(done["budget_label"] == budget) & (done["strategy"] == BASELINE_STRATEGY)]
    names = label_order(candidates) if len(candidates) else []
    if not names:
        return None, "no finished uniform run at this budget"
    if len(names) == 1:
        return names[0], "the uniform run at this budget"
    # Study mode: several uniform ranks at budget `own`; compare with the one of similar size.
    own_params = df.loc[(df["label"] == label) & (df["budget_label"] == budget), "trainable_params"].median()
    sizes = {n: candidates.loc[candidates["label"] == n, "trainable_params"].median() for n in names}
    if pd.isna(own_params):
        return names[0], "trainable params unknown: the smallest uniform run"
    best = min(names, key=lambda n: abs(float(sizes[n]) - float(own_params)) if pd.notna(sizes[n]) else math.inf)
    listed = ", ".join(f"{n} {int(sizes[n]):,}" for n in names if pd.notna(sizes[n]))
    return best, f"closest trainable params ({int(own_params):,}) among {listed}"


def _verdict(mean_diff: float | None, p_holm: float | None) -> str:
    if p_holm is None:
        return ""
    if p_holm < ALPHA:
        direction = "lower (better)" if mean_diff < 0 else "higher (worse)"
        return f"{direction} eval loss than uniform (Holm-corrected t-test p < {ALPHA})"
    return f"no significant difference from uniform (Holm-corrected t-test p >= {ALPHA})"


def _pair_row(df: pd.DataFrame, done: pd.DataFrame, label: str, budget: str) -> dict[str, Any]:
    baseline, choice = _choose_baseline(df, done, label, budget)
    strategy = df.loc[df["label"] == label, "strategy"].iloc[0]
    at = done[done["budget_label"] == budget]
    ours = at[at["label"] == label][["seed", "eval_loss"]]
    base = at[at["label"] == baseline][["seed", "eval_loss"]] if baseline else ours.iloc[0:0]
    # One run per (label, budget, seed) is expected; average duplicates (e.g. a re-run) rather than double-count.
    pairs = ours.groupby("seed").mean().merge(base.groupby("seed").mean(), left_index=True, right_index=True,
                                              suffixes=("_s", "_b"))
    result = paired_compare(pairs["eval_loss_s"].tolist(), pairs["eval_loss_b"].tolist())
    return {
        "label": label, "strategy": strategy, "budget_label": budget, "baseline_label": baseline,
        "baseline_choice": choice, "n_pairs": result.n_pairs,
        "seeds": " ".join(str(int(s)) for s in pairs.index),
        "mean_diff": result.mean_diff, "ci_low": result.ci_low, "ci_high": result.ci_high,
        "t_p": result.t_p, "wilcoxon_p": result.wilcoxon_p, "wilcoxon_method": result.wilcoxon_method,
        "note": result.note if baseline else choice,
    }


def paired_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Each non-uniform label against uniform at the same budget, paired by seed, Holm within a budget."""
    columns = ["label", "strategy", "budget_label", "baseline_label", "baseline_choice", "n_pairs", "seeds",
               "mean_diff", "ci_low", "ci_high", "t_p", "wilcoxon_p", "wilcoxon_method",
               "t_p_holm", "wilcoxon_p_holm", "verdict", "note"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    done = done_runs(df)
    rows = []
    for budget in budget_order(df):
        at = df[(df["budget_label"] == budget) & (df["strategy"] != BASELINE_STRATEGY)]
        block = [_pair_row(df, done, label, budget) for label in label_order(at)] if len(at) else []
        for key in ("t_p", "wilcoxon_p"):
            for row, adjusted in zip(block, holm([row[key] for row in block])):
                row[f"{key}_holm"] = adjusted
        for row in block:
            row["verdict"] = _verdict(row["mean_diff"], row["t_p_holm"])
        rows.extend(block)
    return pd.DataFrame(rows, columns=columns)


# --- suite and writing ------------------------------------------------------------------------


def read_suite(sweep: Path) -> dict[str, Any]:
    path = sweep / "suite.yaml"
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return suite if isinstance(suite, dict) else {}


def is_seed_study(suite: dict[str, Any], runs: list[Run]) -> bool:
    names = {suite.get("name"), suite.get("suite_name")} | {run.result.get("suite_name") for run in runs}
    return "seed-study" in names


def _csv(df: pd.DataFrame) -> str:
    # Missing values become empty cells (never "nan"); 15 significant digits drop only float noise (3.0999999999999996).
    return df.to_csv(index=False, na_rep="", float_format="%.15g", lineterminator="\n")


def write_report(sweep_dir: str | Path, title: str | None = None) -> dict[str, Any]:
    """Write results.csv, summary.csv, stats.csv, figures/, report.md and report.html into sweep_dir."""
    from . import figures, report_render  # matplotlib is only needed here

    sweep = Path(sweep_dir)
    runs, skipped = scan_runs(sweep)
    df = runs_frame(runs)
    summary, stats_table = summarize(df), paired_stats(df)
    csv_df = df.assign(run_dir=[_relative(p, sweep) for p in df["run_dir"]])
    atomic_write_text(sweep / "results.csv", _csv(csv_df))
    atomic_write_text(sweep / "summary.csv", _csv(summary))
    atomic_write_text(sweep / "stats.csv", _csv(stats_table))
    figure_files, figure_errors = figures.render_all(df, sweep / "figures")
    suite = read_suite(sweep)
    context = report_render.ReportContext(
        title=title or f"adaptive-lora report: {suite.get('name') or sweep.resolve().name}",
        sweep=sweep, suite=suite, runs=runs, df=df, summary=summary, stats=stats_table,
        figures=figure_files, figure_errors=figure_errors,
        skipped=[{**s, "path": _relative(s["path"], sweep)} for s in skipped],
        seed_study=is_seed_study(suite, runs),
    )
    md_path, html_path = sweep / "report.md", sweep / "report.html"
    atomic_write_text(md_path, report_render.render_markdown(context))
    atomic_write_text(html_path, report_render.render_html(context))
    return {"report_md": str(md_path), "report_html": str(html_path), "n_runs": len(df), "skipped": skipped}


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
