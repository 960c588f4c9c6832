"""Per-group summaries and paired comparisons against the baseline (uniform), from the runs table."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .collect import BASELINE_STRATEGY, budget_order, done_runs, label_order
from .stats import ALPHA, holm, mean_ci, paired_compare

SUMMARY_METRICS = ("eval_loss", "perplexity", "improvement", "trainable_params", "train_time_s")


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per (label, budget_label): n done, n_failed, and mean/std/95% CI of the key metrics over done runs."""
    rows = []
    for budget in budget_order(df) if len(df) else []:
        for label in label_order(df):
            group = df[(df["label"] == label) & (df["budget_label"] == budget)]
            if group.empty:
                continue
            done = done_runs(group)
            row = {
                "label": label,
                "budget_label": budget,
                "strategy": group["strategy"].iloc[0],
                "n": len(done),
                "n_failed": int((group["status"] != "done").sum()),
            }
            for metric in SUMMARY_METRICS:
                s = mean_ci(done[metric].astype(float).tolist())
                row.update(
                    {
                        f"{metric}_mean": s.mean,
                        f"{metric}_std": s.std,
                        f"{metric}_ci_low": s.ci_low,
                        f"{metric}_ci_high": s.ci_high,
                    }
                )
            rows.append(row)
    columns = ["label", "budget_label", "strategy", "n", "n_failed"] + [
        f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std", "ci_low", "ci_high")
    ]
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
    pairs = (
        ours.groupby("seed").mean().merge(base.groupby("seed").mean(), left_index=True, right_index=True, suffixes=("_s", "_b"))
    )
    result = paired_compare(pairs["eval_loss_s"].tolist(), pairs["eval_loss_b"].tolist())
    return {
        "label": label,
        "strategy": strategy,
        "budget_label": budget,
        "baseline_label": baseline,
        "baseline_choice": choice,
        "n_pairs": result.n_pairs,
        "seeds": " ".join(str(int(s)) for s in pairs.index),
        "mean_diff": result.mean_diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "t_p": result.t_p,
        "wilcoxon_p": result.wilcoxon_p,
        "wilcoxon_method": result.wilcoxon_method,
        "note": result.note if baseline else choice,
    }


def paired_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Each non-uniform label against uniform at the same budget, paired by seed, Holm within a budget."""
    columns = [
        "label",
        "strategy",
        "budget_label",
        "baseline_label",
        "baseline_choice",
        "n_pairs",
        "seeds",
        "mean_diff",
        "ci_low",
        "ci_high",
        "t_p",
        "wilcoxon_p",
        "wilcoxon_method",
        "t_p_holm",
        "wilcoxon_p_holm",
        "verdict",
        "note",
    ]
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
