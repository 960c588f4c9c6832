"""What the report says, in order: a note when there is no test split, the findings (underpowered flag,
conclusion), the forest plot of paired differences, methods, results, the learning-rate grid, the
original study's table (seed-study), paired statistics, example generations, the other figures,
failed runs, runs of other configurations, skipped directories."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .blocks import DASH, Figure, Heading, Para, Table, _missing, fmt_int, fmt_mean_ci, fmt_num, fmt_p, fmt_params, fmt_text
from .collect import Run, SweepRuns, budget_order, done_runs, relative_path
from .compare import VALIDATION_LOSS, primary_metric, rate_grid
from .conclusions import level_text
from .examples import example_blocks
from .forest import FOREST
from .methods import methods_blocks
from .paper import abstract_blocks, attribution_blocks, capacity_blocks, limitations_blocks, question_blocks
from .plotting import FigureFile
from .stats import ALPHA
from .study import study_blocks


def fmt_rate(value) -> str:
    return DASH if _missing(value) else f"{float(value):g}"


@dataclass
class ReportContext:
    title: str
    sweep: Path
    read: SweepRuns  # the suite's runs, runs of other configurations, unusable directories
    df: pd.DataFrame  # results.csv rows of read.runs
    summary: pd.DataFrame
    stats: pd.DataFrame  # seed-level paired statistics, every metric (compare.paired_stats)
    row_stats: pd.DataFrame  # per-test-row paired statistics (rowstats.row_stats)
    findings: list  # blocks: the underpowered flag and the conclusion (findings.findings_blocks)
    figures: list[FigureFile]
    figure_errors: list[str]
    unchosen: list[dict] = field(default_factory=list)  # groups without a chosen learning rate, with the reason

    @property
    def runs(self) -> list[Run]:
        return self.read.runs

    def relative(self, path: str) -> str:
        return relative_path(path, self.sweep)


def results_blocks(ctx: ReportContext) -> list:
    summary = ctx.summary
    optional = [
        (column, name, fmt)
        for column, name, fmt in (
            ("test_loss", "Test loss", fmt_num),
            ("test_exact_match", "Exact match", lambda v: fmt_num(v, 3)),
            ("test_rouge_l", "ROUGE-L", lambda v: fmt_num(v, 3)),
            ("forgetting_delta", "Forgetting", fmt_num),
        )
        if f"{column}_mean" in summary and summary[f"{column}_mean"].notna().any()
    ]
    columns = [
        "Strategy",
        "Budget",
        "LR",
        "Seeds",
        "Failed",
        "Validation loss",
        *[name for _, name, _ in optional],
        "Improvement",
        "Trainable params",
        "Train time (s)",
    ]
    rows = [
        [
            row["label"],
            row["budget_label"],
            fmt_rate(row["learning_rate"]),
            seeds_text(row["n"], row["n_planned"]),
            fmt_int(row["n_failed"]),
            fmt_mean_ci(row, "eval_loss", fmt_num),
            *[fmt_mean_ci(row, column, fmt) for column, _, fmt in optional],
            fmt_mean_ci(row, "improvement", fmt_num),
            fmt_mean_ci(row, "trainable_params", fmt_params),
            fmt_mean_ci(row, "train_time_s", lambda v: fmt_num(v, 1)),
        ]
        for _, row in summary.iterrows()
    ]
    blocks = [
        Heading(2, "Results"),
        Table(columns, rows, numeric=set(range(2, len(columns)))) if rows else Para("No valid runs.", "note"),
        Para(
            "Means over finished runs at each group's chosen learning rate (LR); Seeds: finished of planned; ± is the "
            "half-width of the 95% t confidence interval over seeds, absent with fewer than 2 seeds. Validation loss "
            "chooses, test metrics report. Improvement = untrained base validation loss − validation loss. Forgetting = "
            "rise of the response loss on held-out text the adapter never saw (positive = forgot). Per-run values: "
            "results.csv; per-group: summary.csv.",
            "note",
        ),
    ]
    if ctx.unchosen:
        listed = "; ".join(f"{g['label']} at {g['budget_label']} ({g['reason']})" for g in ctx.unchosen)
        blocks.append(Para(f"Not in this table, no learning rate chosen: {listed}.", "warning"))
    return blocks


def seeds_text(done, planned) -> str:
    """'2 of 3': finished seeds of the planned ones."""
    return fmt_int(done) if _missing(planned) else f"{fmt_int(done)} of {fmt_int(planned)}"


def rate_grid_blocks(ctx: ReportContext) -> list:
    grid = rate_grid(ctx.df)
    if grid.empty:
        return []
    rows = [
        [
            r.label,
            r.budget_label,
            fmt_rate(r.learning_rate),
            fmt_int(r.n),
            fmt_num(r.validation_loss),
            "chosen" if r.chosen else "",
        ]
        for r in grid.itertuples()
    ]
    return [
        Heading(2, "Learning-rate grid"),
        Para(
            "Mean validation loss of every rate tried; the chosen rate of each strategy and budget is the lowest "
            "(the test split is never used to choose).",
            "note",
        ),
        Table(["Strategy", "Budget", "Learning rate", "Runs", "Validation loss", ""], rows, numeric={2, 3, 4}),
    ]


def stats_blocks(ctx: ReportContext) -> list:
    blocks = [
        Heading(2, "Paired statistics against the baseline"),
        Para(
            "Each group is paired with the baseline at the same budget and seed; differences are group − baseline "
            "(for losses negative is better, for exact match and ROUGE-L positive). At budget own the baseline with the "
            "closest trainable-parameter count is used; a group trained with its own ranks (the capacity control) is "
            "compared at every budget. p-values are two-sided. A family is one metric at one budget; Holm corrects "
            f"across its m groups. Verdicts need the Holm-corrected t-test below {ALPHA} and a CI that excludes 0. "
            f"Level: {ALPHA}/m, what a comparison's own p must beat to be sure of its verdict; MDE: the smallest true "
            "difference these pairs detect with 80% power at that level. Rows with role capacity-bind compare the "
            "baseline at a smaller size with the baseline at the next larger one (does capacity bind?)."
        ),
    ]
    if ctx.stats.empty:
        return blocks + [Para("No group besides the baseline: nothing to compare.", "note")]
    columns = [
        "Strategy",
        "Budget",
        "Metric",
        "Baseline",
        "Seeds",
        "Mean diff [95% CI]",
        "t-test p",
        "Wilcoxon p",
        "Holm t p",
        "Level",
        "MDE",
        "Verdict",
        "Note",
    ]
    rows = [
        [
            row["label"],
            row["budget_label"],
            row["metric_name"],
            _baseline(row),
            seeds_text(row["n_pairs"], row["n_planned"]),
            _diff_ci(row),
            fmt_p(row["t_p"]),
            _wilcoxon(row),
            fmt_p(row["t_p_holm"]),
            _level(row["mde_level"]),
            fmt_num(row["mde"]),
            fmt_text(row["verdict"]),
        ]
        for _, row in ctx.stats.iterrows()
    ]
    # a note every row shares (e.g. what 3 seeds cannot show) is said once, under the table
    notes = [_stats_notes(row) for _, row in ctx.stats.iterrows()]
    shared = [n for n in notes[0] if all(n in row_notes for row_notes in notes)] if notes else []
    for row, row_notes in zip(rows, notes):
        row.append("; ".join(n for n in row_notes if n not in shared) or DASH)
    blocks.append(Table(columns, rows, numeric={4, 6, 7, 8, 9, 10}))
    if shared:
        blocks.append(Para("Every row: " + "; ".join(shared) + ".", "note"))
    if not ctx.row_stats.empty:
        rows = [
            [
                r.label,
                r.budget_label,
                r.metric_name,
                r.baseline_label,
                fmt_int(r.n_rows),
                fmt_int(r.n_seeds),
                _diff_ci(pd.Series({"mean_diff": r.mean_diff, "ci_low": r.ci_low, "ci_high": r.ci_high})),
                fmt_p(r.p),
                r.test,
                fmt_p(r.p_holm),
                _level(r.mde_level),
                fmt_num(r.mde),
                fmt_text(r.verdict),
            ]
            for r in ctx.row_stats.itertuples()
        ]
        blocks += [
            Heading(3, "Per test row"),
            Para(
                "The row is the unit: every seed answers the same test rows, so each row's paired difference (same seed) "
                "is averaged over the seeds both finished, and the test runs across rows: an exact sign-flip permutation "
                "test of the rows' totals for exact match (with one seed, the exact McNemar test), a t-test over rows for "
                "ROUGE-L; the CI is a t interval over rows, and the MDE is on rows too, at the family's level (for exact "
                "match, the sign-flip test's own; docs/statistics.md). These say "
                "whether these trained adapters differ on these rows; the seed-level tests above say whether that "
                "survives retraining.",
                "note",
            ),
            Table(
                ["Strategy", "Budget", "Metric", "Baseline", "Rows", "Seeds", "Mean diff [95% CI]", "p", "Test", "Holm p"]
                + ["Level", "MDE", "Verdict"],
                rows,
                numeric={4, 5, 7, 9, 10, 11},
            ),
        ]
    return blocks


def _baseline(row: pd.Series) -> str:
    """The baseline's label, and its budget when it differs from the row's (capacity checks)."""
    name = fmt_text(row["baseline_label"])
    other = row.get("baseline_budget")
    return name if _missing(other) or other == row["budget_label"] else f"{name} at {other}"


def _level(value) -> str:
    return DASH if _missing(value) else level_text(float(value))


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


def _stats_notes(row: pd.Series) -> list[str]:
    parts = str(row["note"]).split("; ") if not _missing(row["note"]) and row["note"] else []
    if not _missing(row["baseline_choice"]) and "closest" in str(row["baseline_choice"]):
        parts.append(f"baseline: {row['baseline_choice']}")
    return [fmt_text(part) for part in parts]


def figure_blocks(ctx: ReportContext) -> list:
    errors = [Para(f"Figure not drawn ({error}); the tables above are complete.", "warning") for error in ctx.figure_errors]
    return [Heading(2, "Figures")] + errors + [Figure(f) for f in ctx.figures if f.name != FOREST]


def no_test_split_blocks(ctx: ReportContext) -> list:
    """With no test split, validation loss judged (and, with a grid, also chose): say so first."""
    if ctx.df.empty or done_runs(ctx.df).empty or primary_metric(ctx.df) is not VALIDATION_LOSS:
        return []
    grid = ctx.read.suite is not None and len(ctx.read.suite.learning_rates) > 1
    what = (
        "validation loss both chose the learning rate and judged the strategies, so the verdicts are not measured "
        "on data held out from the choice"
        if grid
        else "the strategies are judged on validation loss, the split training also evaluated on; no rows were held "
        "out for the verdicts"
    )
    return [
        Para(
            f"No test split: {what}. To hold out a test split, set data.test_set_size (a fraction such as 0.1, or a row "
            "count) in the suite's data section or as an override, e.g. `adaptive-lora run SUITE data.test_set_size=0.1`.",
            "warning",
        )
    ]


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
    if ctx.read.suite_error:
        blocks.append(Para(ctx.read.suite_error, "warning"))
    blocks += no_test_split_blocks(ctx)
    blocks += abstract_blocks(df, ctx.stats, ctx.read.suite) + question_blocks(df)
    blocks += ctx.findings  # the underpowered flag, the conclusion (findings.py)
    blocks += [Figure(f) for f in ctx.figures if f.name == FOREST]  # the figure to look at first
    blocks += methods_blocks(ctx.runs, df, ctx.read.suite, ctx.stats, ctx.row_stats) + results_blocks(ctx) + rate_grid_blocks(ctx)
    if len(df):
        metric = primary_metric(df)
        blocks += capacity_blocks(ctx.stats, metric, ctx.read.suite) + attribution_blocks(ctx.stats, metric, ctx.read.suite)
        blocks += limitations_blocks(df, ctx.runs, ctx.read.suite)
    blocks += study_blocks(ctx.summary, df)
    blocks += stats_blocks(ctx) + example_blocks(df) + figure_blocks(ctx) + failed_blocks(ctx)
    blocks += other_config_blocks(ctx) + skipped_blocks(ctx)
    return blocks
