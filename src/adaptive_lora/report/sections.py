"""What the report says: setup, results, paired statistics, figures, failures, as blocks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .blocks import (
    DASH,
    Bullets,
    Figure,
    Heading,
    Para,
    Table,
    _missing,
    fmt_int,
    fmt_mean_ci,
    fmt_num,
    fmt_p,
    fmt_params,
    fmt_text,
)
from .collect import OWN_BUDGET, Run, SweepRuns, budget_order, done_runs, is_seed_study, relative_path
from .plotting import FigureFile
from .stats import ALPHA
from .study import study_blocks


@dataclass
class ReportContext:
    title: str
    sweep: Path
    read: SweepRuns  # the suite's runs, runs of other configurations, unusable directories
    df: pd.DataFrame  # results.csv rows of read.runs
    summary: pd.DataFrame
    stats: pd.DataFrame
    figures: list[FigureFile]
    figure_errors: list[str]

    @property
    def runs(self) -> list[Run]:
        return self.read.runs

    def relative(self, path: str) -> str:
        return relative_path(path, self.sweep)


def _unique(values) -> list:
    seen = []
    for value in values:
        if not _missing(value) and value not in seen:
            seen.append(value)
    return seen


def _joined(values, fmt: Callable[[Any], str] = str) -> str:
    found = _unique(values)
    return ", ".join(fmt(v) for v in found) if found else DASH


def _config_value(run: Run, section: str, key: str) -> Any:
    config = run.result.get("config")
    part = config.get(section) if isinstance(config, dict) else None
    return part.get(key) if isinstance(part, dict) else None


def _env_value(run: Run, key: str) -> Any:
    env = run.result.get("environment")
    return env.get(key) if isinstance(env, dict) else None


HYPERPARAMETERS = (
    ("training", "learning_rate"),
    ("training", "num_epochs"),
    ("training", "max_steps"),
    ("training", "micro_batch_size"),
    ("training", "gradient_accumulation_steps"),
    ("training", "sequence_len"),
    ("training", "warmup_ratio"),
    ("training", "lr_scheduler"),
    ("allocation", "lora_alpha"),
    ("allocation", "alpha_policy"),
    ("allocation", "lora_dropout"),
    ("allocation", "target_modules"),
    ("model", "precision"),
)


def setup_blocks(ctx: ReportContext) -> list:
    runs, df = ctx.runs, ctx.df
    data = df.drop_duplicates(["data_hash", "n_train", "n_eval"]) if len(df) else df
    hashes = [f"{fmt_text(r.data_hash)} (n_train {fmt_int(r.n_train)}, n_eval {fmt_int(r.n_eval)})" for r in data.itertuples()]
    hyper = [f"{key} {_joined(_plain(_config_value(r, s, key), key) for r in runs)}" for s, key in HYPERPARAMETERS]
    env = [
        f"{key} {_joined(_env_value(r, key) for r in runs)}"
        for key in ("python", "torch", "transformers", "peft", "device", "git_sha", "git_dirty")
    ]
    blocks = [
        Heading(2, "Setup"),
        Bullets(
            [
                f"Model: {_joined(df.get('model', []))}",
                f"Data source: {_joined(df.get('data_source', []))}",
                f"Data hash (sizes): {', '.join(hashes) if hashes else DASH}",
                f"Hyperparameters: {'; '.join(hyper)}",
                f"Environment: {'; '.join(env)}",
            ]
        ),
    ]
    n_hashes = len(_unique(df.get("data_hash", [])))
    if n_hashes > 1:
        blocks.append(
            Para(
                f"Runs used {n_hashes} different data hashes: their losses were measured on different "
                "data, so comparisons between them are not valid. Re-run on one data set.",
                "warning",
            )
        )
    n_models = len(_unique(df.get("model", [])))
    if n_models > 1:
        blocks.append(
            Para(
                f"Runs used {n_models} different models: losses of different models are not "
                "comparable, and neither are the paired statistics across them.",
                "warning",
            )
        )
    return blocks


def _plain(value: Any, key: str) -> Any:
    if value is None and key == "target_modules":
        return "all"  # None means every linear module of the blocks
    return ",".join(map(str, value)) if isinstance(value, list) else value


def results_blocks(ctx: ReportContext) -> list:
    columns = [
        "Strategy",
        "Budget",
        "Done",
        "Failed",
        "Eval loss",
        "Perplexity",
        "Improvement",
        "Trainable params",
        "Train time (s)",
    ]
    rows = [
        [
            row["label"],
            row["budget_label"],
            fmt_int(row["n"]),
            fmt_int(row["n_failed"]),
            fmt_mean_ci(row, "eval_loss", fmt_num),
            fmt_mean_ci(row, "perplexity", lambda v: fmt_num(v, 2)),
            fmt_mean_ci(row, "improvement", fmt_num),
            fmt_mean_ci(row, "trainable_params", fmt_params),
            fmt_mean_ci(row, "train_time_s", lambda v: fmt_num(v, 1)),
        ]
        for _, row in ctx.summary.iterrows()
    ]
    return [
        Heading(2, "Results"),
        Table(columns, rows, numeric=set(range(2, 9))) if rows else Para("No valid runs.", "note"),
        Para(
            "Means over finished (done) runs; ± is the half-width of the 95% t confidence interval over seeds, "
            "absent when fewer than 2 seeds finished. Improvement = untrained base eval loss − eval loss. "
            "Full per-run values: results.csv; per-group numbers: summary.csv.",
            "note",
        ),
    ]


def stats_blocks(ctx: ReportContext) -> list:
    blocks = [
        Heading(2, "Paired statistics against uniform"),
        Para(
            "Each strategy is paired with the uniform run at the same budget and seed; the difference is strategy − "
            f"uniform eval loss (negative = better). At budget {OWN_BUDGET} (each strategy keeps its own ranks) the "
            "uniform run with the closest trainable-parameter count is the baseline. p-values are two-sided; the Holm "
            f"correction is across strategies within a budget. Verdicts use the Holm-corrected t-test at {ALPHA}."
        ),
    ]
    if ctx.stats.empty:
        return blocks + [Para("No strategy besides uniform: nothing to compare.", "note")]
    columns = [
        "Strategy",
        "Budget",
        "Baseline",
        "Pairs",
        "Mean diff [95% CI]",
        "t-test p",
        "Wilcoxon p",
        "Holm t p",
        "Holm Wilcoxon p",
        "Verdict",
        "Note",
    ]
    rows = [
        [
            row["label"],
            row["budget_label"],
            fmt_text(row["baseline_label"]),
            fmt_int(row["n_pairs"]),
            _diff_ci(row),
            fmt_p(row["t_p"]),
            _wilcoxon(row),
            fmt_p(row["t_p_holm"]),
            fmt_p(row["wilcoxon_p_holm"]),
            fmt_text(row["verdict"]),
            _stats_note(row),
        ]
        for _, row in ctx.stats.iterrows()
    ]
    return blocks + [Table(columns, rows, numeric={3, 5, 6, 7, 8})]


def _diff_ci(row: pd.Series) -> str:
    if _missing(row["mean_diff"]):
        return DASH
    if _missing(row["ci_low"]):
        return f"{row['mean_diff']:+.4f}"
    return f"{row['mean_diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def _wilcoxon(row: pd.Series) -> str:
    p = fmt_p(row["wilcoxon_p"])
    method = row["wilcoxon_method"]
    return p if p == DASH or method == "exact" or _missing(method) else f"{p} ({method})"


def _stats_note(row: pd.Series) -> str:
    parts = [fmt_text(row["note"])] if not _missing(row["note"]) and row["note"] else []
    if not _missing(row["baseline_choice"]) and "closest" in str(row["baseline_choice"]):
        parts.append(f"baseline: {row['baseline_choice']}")
    return "; ".join(parts) or DASH


def figure_blocks(ctx: ReportContext) -> list:
    errors = [Para(f"Figure not drawn ({error}); the tables above are complete.", "warning") for error in ctx.figure_errors]
    return [Heading(2, "Figures")] + errors + [Figure(f) for f in ctx.figures]


def failed_blocks(ctx: ReportContext) -> list:
    blocks = [Heading(2, "Failed runs")]
    failed = ctx.df[ctx.df["status"] != "done"] if len(ctx.df) else ctx.df
    if failed.empty:
        return blocks + [Para("None: every valid run finished.", "note")]
    rows = [
        [
            r.run_id,
            r.label,
            r.budget_label,
            fmt_int(r.seed),
            r.status,
            fmt_text(r.error),
            fmt_int(r.diverged_step),
            fmt_num(r.last_finite_loss),
        ]
        for r in failed.itertuples()
    ]
    columns = ["Run", "Strategy", "Budget", "Seed", "Status", "Reason", "Diverged at step", "Last finite loss"]
    return blocks + [
        Table(columns, rows, numeric={3, 6, 7}),
        Para("Failed runs are left out of the means and the paired statistics.", "note"),
    ]


def skipped_blocks(ctx: ReportContext) -> list:
    blocks = [Heading(2, "Skipped run directories")]
    if not ctx.read.skipped:
        return blocks + [Para("None.", "note")]
    return blocks + [Table(["Directory", "Reason"], [[ctx.relative(s["path"]), s["reason"]] for s in ctx.read.skipped])]


def other_config_blocks(ctx: ReportContext) -> list:
    """Runs in this directory that belong to another suite configuration: listed, never averaged in."""
    if not ctx.read.others:
        return []
    rows = [[ctx.relative(o["path"]), o["label"], o["seed"], o["reason"]] for o in ctx.read.others]
    return [
        Heading(2, "Runs of other configurations (not included)"),
        Para(
            f"{len(rows)} runs in this directory were made with another suite configuration than the one "
            "recorded in suite.yaml; they are not part of any table, figure or test above.",
            "warning",
        ),
        Table(["Directory", "Label", "Seed", "Why it is not included"], rows),
    ]


def build_blocks(ctx: ReportContext) -> list:
    df = ctx.df
    n_done = len(done_runs(df)) if len(df) else 0
    budgets = ", ".join(budget_order(df)) if len(df) else DASH
    blocks = [
        Heading(1, ctx.title),
        Para(
            f"{len(df)} runs ({n_done} finished, {len(df) - n_done} failed) and {len(ctx.read.skipped)} skipped "
            f"directories in {ctx.sweep}; budgets: {budgets}."
        ),
    ]
    blocks += setup_blocks(ctx) + results_blocks(ctx)
    if ctx.read.suite_error:
        blocks.append(Para(ctx.read.suite_error, "warning"))
    if is_seed_study(ctx.read.suite):
        blocks += study_blocks(ctx.summary, df)
    blocks += figure_blocks(ctx) + stats_blocks(ctx) + failed_blocks(ctx) + other_config_blocks(ctx) + skipped_blocks(ctx)
    return blocks
