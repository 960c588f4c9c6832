"""Per-group summaries and paired comparisons against the baseline, from the runs table.

A group is (label, budget). With a learning-rate grid only the runs at the group's chosen rate (on
validation loss, sweep.selection) enter the summaries and tests. Comparisons pair a group's runs
with the baseline's at the same budget and seed; for every metric they give the mean difference,
its 95% CI, paired t and Wilcoxon tests (Holm-corrected across the groups of a budget: one family,
family.py), and the minimum detectable effect at the level the family requires (80% power, from
the observed paired spread). A seed planned for both sides but missing from the pairing is named
with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .collect import OWN_BUDGET, budget_order, done_runs, label_order
from .conclusions import Comparison
from .family import PairedNumbers, judge_family, verdict_label
from .stats import holm, mean_ci, paired_compare

Planned = dict[tuple[str, str], tuple[int, ...]]  # (label, budget) -> the seeds the suite planned for it


@dataclass(frozen=True)
class Metric:
    column: str  # results.csv column
    name: str  # what the report calls it
    higher_is_better: bool
    digits: int = 4


VALIDATION_LOSS = Metric("eval_loss", "validation loss", False)
TEST_LOSS = Metric("test_loss", "test loss", False)
EXACT_MATCH = Metric("test_exact_match", "test exact match", True, 3)
ROUGE_L = Metric("test_rouge_l", "test ROUGE-L", True, 3)
FORGETTING = Metric("forgetting_delta", "forgetting (held-out loss rise)", False)
METRICS = (TEST_LOSS, EXACT_MATCH, ROUGE_L, FORGETTING, VALIDATION_LOSS)
SUMMARY_COLUMNS = (
    "eval_loss",
    "perplexity",
    "improvement",
    "test_loss",
    "test_improvement",
    "test_exact_match",
    "test_rouge_l",
    "forgetting_delta",
    "trainable_params",
    "train_time_s",
)


def measured(df: pd.DataFrame) -> list[Metric]:
    """The metrics this sweep has values for, in report order."""
    done = done_runs(df) if len(df) else df
    return [m for m in METRICS if m.column in done and done[m.column].notna().any()]


def primary_metric(df: pd.DataFrame) -> Metric:
    """What conclusions lead with: test loss when there is a test split, else validation loss."""
    return TEST_LOSS if TEST_LOSS in measured(df) else VALIDATION_LOSS


def final_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Runs at their group's chosen learning rate (all runs when there is no grid)."""
    return df[df["at_chosen_rate"].astype(bool)] if len(df) else df


# --- summaries ----------------------------------------------------------------------------------


def planned_seeds(df: pd.DataFrame, planned: Planned | None, label: str, budget: str) -> set[int]:
    """The seeds planned for a group: from the suite when known, else those it has runs for (any status)."""
    if planned and (label, budget) in planned:
        return set(planned[(label, budget)])
    group = df[(df["label"] == label) & (df["budget_label"] == budget)] if len(df) else df
    return {int(s) for s in group["seed"].dropna()} if len(group) else set()


def summarize(df: pd.DataFrame, planned: Planned | None = None) -> pd.DataFrame:
    """Per (label, budget_label): n done, n_failed, n_planned (seeds), chosen rate, and mean/std/95% CI
    of the metrics over done runs."""
    df = final_runs(df)
    rows = []
    for budget in budget_order(df) if len(df) else []:
        for label in label_order(df):
            group = df[(df["label"] == label) & (df["budget_label"] == budget)]
            if group.empty:
                continue
            done = done_runs(group)
            rates = sorted(group["learning_rate"].dropna().unique())
            row = {
                "label": label,
                "budget_label": budget,
                "strategy": group["strategy"].iloc[0],
                "role": group["role"].iloc[0],
                "learning_rate": rates[0] if len(rates) == 1 else None,
                "n": len(done),
                "n_failed": int((group["status"] != "done").sum()),
                "n_planned": len(planned_seeds(df, planned, label, budget) | {int(s) for s in group["seed"]}),
            }
            for column in SUMMARY_COLUMNS:
                s = mean_ci(done[column].astype(float).tolist())
                row.update(
                    {
                        f"{column}_mean": s.mean,
                        f"{column}_std": s.std,
                        f"{column}_ci_low": s.ci_low,
                        f"{column}_ci_high": s.ci_high,
                    }
                )
            rows.append(row)
    columns = ["label", "budget_label", "strategy", "role", "learning_rate", "n", "n_failed", "n_planned"] + [
        f"{c}_{s}" for c in SUMMARY_COLUMNS for s in ("mean", "std", "ci_low", "ci_high")
    ]
    return pd.DataFrame(rows, columns=columns)


def rate_grid(df: pd.DataFrame) -> pd.DataFrame:
    """Mean validation loss per group and learning rate, over every finished run (the whole grid)."""
    done = done_runs(df) if len(df) else df
    if done.empty or done["learning_rate"].nunique() < 2:
        return pd.DataFrame(columns=["label", "budget_label", "learning_rate", "n", "validation_loss", "chosen"])
    grid = (
        done.groupby(["label", "budget_label", "learning_rate"])
        .agg(n=("eval_loss", "size"), validation_loss=("eval_loss", "mean"), chosen=("at_chosen_rate", "max"))
        .reset_index()
    )
    return grid


# --- paired comparisons -------------------------------------------------------------------------


def choose_baseline(df: pd.DataFrame, done: pd.DataFrame, label: str, budget: str) -> tuple[str | None, str]:
    """The baseline label to pair `label` with at `budget`, and a sentence saying why."""
    candidates = done[(done["role"] == "baseline") & (done["budget_label"] == budget)]
    names = label_order(candidates) if len(candidates) else []
    if not names:
        return None, "no finished baseline run at this budget"
    if len(names) == 1:
        return names[0], "the baseline at this budget"
    # Study mode: several uniform ranks at budget `own`; compare with the one of similar size.
    own_params = df.loc[(df["label"] == label) & (df["budget_label"] == budget), "trainable_params"].median()
    sizes = {n: candidates.loc[candidates["label"] == n, "trainable_params"].median() for n in names}
    if pd.isna(own_params):
        return names[0], "trainable params unknown: the smallest baseline"
    best = min(names, key=lambda n: abs(float(sizes[n]) - float(own_params)) if pd.notna(sizes[n]) else math.inf)
    listed = ", ".join(f"{n} {int(sizes[n]):,}" for n in names if pd.notna(sizes[n]))
    return best, f"closest trainable params ({int(own_params):,}) among {listed}"


def _pairs(done: pd.DataFrame, label: str, label_budget: str, baseline: str, base_budget: str, column: str) -> pd.DataFrame:
    ours = done[(done["label"] == label) & (done["budget_label"] == label_budget)][["seed", column]].dropna()
    base = done[(done["label"] == baseline) & (done["budget_label"] == base_budget)][["seed", column]].dropna()
    # One run per (label, budget, seed) is expected; average duplicates rather than double-count.
    return (
        ours.groupby("seed").mean().merge(base.groupby("seed").mean(), left_index=True, right_index=True, suffixes=("_s", "_b"))
    )


def compare(
    done: pd.DataFrame,
    label: str,
    label_budget: str,
    baseline: str | None,
    base_budget: str,
    metric: Metric,
    *,
    runs: pd.DataFrame | None = None,
    planned: Planned | None = None,
) -> dict[str, Any]:
    """One paired comparison (label - baseline) on one metric, before its family is judged (judge_rows).

    runs: every run at the chosen rates, failed ones too (names why a planned seed is missing);
    planned: the suite's seeds per group (else the seeds each group has runs for).
    """
    pairs = (
        _pairs(done, label, label_budget, baseline, base_budget, metric.column)
        if baseline
        else pd.DataFrame(columns=[f"{metric.column}_s", f"{metric.column}_b"])
    )
    result = paired_compare(pairs[f"{metric.column}_s"].tolist(), pairs[f"{metric.column}_b"].tolist())
    runs = done if runs is None else runs
    plan = planned_seeds(runs, planned, label, label_budget)
    if baseline:
        plan &= planned_seeds(runs, planned, baseline, base_budget)
    paired = {int(s) for s in pairs.index}
    missing = sorted(plan - paired)
    note = result.note
    if missing and baseline:
        reasons = ", ".join(
            f"seed {seed} ({_why_missing(runs, label, label_budget, baseline, base_budget, seed, metric)})" for seed in missing
        )
        note = "; ".join(part for part in (f"not paired: {reasons}", note) if part)
    return {
        "metric": metric.column,
        "metric_name": metric.name,
        "higher_is_better": metric.higher_is_better,
        "n_pairs": result.n_pairs,
        "n_planned": len(plan | paired),
        "seeds": " ".join(str(int(s)) for s in pairs.index),
        "mean_diff": result.mean_diff,
        "sd_diff": result.sd_diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "t_p": result.t_p,
        "wilcoxon_p": result.wilcoxon_p,
        "wilcoxon_method": result.wilcoxon_method,
        "note": note,
    }


def _why_missing(
    runs: pd.DataFrame, label: str, label_budget: str, baseline: str, base_budget: str, seed: int, metric: Metric
) -> str:
    """'linear_decay diverged', 'uniform not run', 'eva no test loss': why a planned seed has no pair."""
    reasons = []
    for name, budget in ((label, label_budget), (baseline, base_budget)):
        run = runs[(runs["label"] == name) & (runs["budget_label"] == budget) & (runs["seed"] == seed)]
        if run.empty:
            reasons.append(f"{name} not run")
        elif not (run["status"] == "done").any():
            reasons.append(f"{name} {run['status'].iloc[0]}")
        elif run[metric.column].isna().all():
            reasons.append(f"{name} has no {metric.name}")
    return ", ".join(reasons) or "no pair"


def judge_rows(block: list[dict[str, Any]], higher_is_better: bool) -> list[dict[str, Any]]:
    """Judge one family of compare() rows in place: Holm-corrected p (t and Wilcoxon), family size,
    the level each comparison must reach, the MDE at that level, and the verdict (family.judge_family)."""
    tested = [PairedNumbers(r["n_pairs"], r["mean_diff"], r["sd_diff"], r["ci_low"], r["ci_high"], r["t_p"]) for r in block]
    for row, judged, wilcoxon_holm in zip(block, judge_family(tested, higher_is_better), holm([r["wilcoxon_p"] for r in block])):
        row.update(
            t_p_holm=judged.p_holm,
            wilcoxon_p_holm=wilcoxon_holm,
            family_size=judged.family_size,
            mde_level=judged.level,
            mde=judged.mde,
            verdict=judged.verdict,
        )
    return block


STATS_COLUMNS = [
    "label",
    "strategy",
    "role",
    "budget_label",
    "baseline_label",
    "baseline_budget",
    "baseline_choice",
    "metric",
    "metric_name",
    "higher_is_better",
    "n_pairs",
    "n_planned",
    "seeds",
    "mean_diff",
    "sd_diff",
    "ci_low",
    "ci_high",
    "t_p",
    "wilcoxon_p",
    "wilcoxon_method",
    "t_p_holm",
    "wilcoxon_p_holm",
    "family_size",
    "mde_level",
    "mde",
    "verdict",
    "note",
]


def paired_stats(df: pd.DataFrame, planned: Planned | None = None) -> pd.DataFrame:
    """Every non-baseline group against the baseline at its budget (a group at budget `own` without a
    baseline there, e.g. the capacity control, against the baseline at each budget), for every metric
    measured. One family per metric and budget: Holm-corrected across its groups, MDE at its level."""
    df = final_runs(df)
    if df.empty:
        return pd.DataFrame(columns=STATS_COLUMNS)
    done = done_runs(df)
    budgets = budget_order(df)
    rows = []
    for metric in measured(df):
        for budget in budgets:
            block = []
            for label, label_budget in _groups_compared_at(df, done, budget, budgets):
                baseline, choice = choose_baseline(df, done, label, budget)
                group = df[(df["label"] == label) & (df["budget_label"] == label_budget)]
                row = {
                    "label": label,
                    "strategy": group["strategy"].iloc[0],
                    "role": group["role"].iloc[0],
                    "budget_label": budget,
                    "baseline_label": baseline,
                    "baseline_budget": budget,
                    "baseline_choice": choice,
                }
                row.update(compare(done, label, label_budget, baseline, budget, metric, runs=df, planned=planned))
                if baseline is None:
                    row["note"] = choice
                block.append(row)
            rows.extend(judge_rows(block, metric.higher_is_better))
    return pd.DataFrame(rows, columns=STATS_COLUMNS)


def _groups_compared_at(df: pd.DataFrame, done: pd.DataFrame, budget: str, budgets: list[str]) -> list[tuple[str, str]]:
    """(label, the budget its runs were made at) of the groups compared with the baseline at `budget`."""
    has_own_baseline = bool(len(done[(done["budget_label"] == OWN_BUDGET) & (done["role"] == "baseline")]))
    if budget == OWN_BUDGET and not has_own_baseline:
        return []  # runs with their own ranks are compared at the other budgets instead
    at = df[(df["budget_label"] == budget) & (df["role"] != "baseline")]
    groups = [(label, budget) for label in label_order(at)] if len(at) else []
    if budget != OWN_BUDGET and OWN_BUDGET in budgets and not has_own_baseline:
        own = df[(df["budget_label"] == OWN_BUDGET) & (df["role"] != "baseline")]
        groups += [(label, OWN_BUDGET) for label in label_order(own)]  # e.g. the capacity control, trained once
    return groups


def verdict(row: dict[str, Any]) -> str:
    """better / worse / no detectable difference: the Holm-corrected t-test AND the CI (conclusions.direction)."""
    return verdict_label(Comparison.from_row(row))
