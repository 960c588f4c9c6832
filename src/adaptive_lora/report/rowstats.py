"""Per-row paired tests on the test split, from each run's predictions.jsonl.

Seeds are few; test rows are many. For each group and its baseline at the same budget and seed,
the same test rows are answered by both adapters, so row-level differences are paired:
    exact match   exact McNemar test on the rows one gets right and the other wrong (pooled over seeds)
    ROUGE-L       mean per-row difference with a paired bootstrap 95% CI and a paired t-test over rows
Both come with the minimum detectable effect at the row level (80% power, alpha 0.05). Row-level
tests say whether these trained adapters differ on these rows; the seed-level tests in compare.py
say whether the difference survives retraining.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..schema import read_predictions
from .collect import done_runs
from .compare import EXACT_MATCH, ROUGE_L, choose_baseline, final_runs
from .stats import mcnemar_exact, mean_ci, min_detectable_effect, paired_bootstrap_ci, paired_compare

ROW_COLUMNS = [
    "label",
    "budget_label",
    "baseline_label",
    "metric",
    "metric_name",
    "n_rows",
    "n_seeds",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p",
    "test",
    "mde",
    "strategy_only",
    "baseline_only",
]


def _test_rows(run_dir: str) -> dict[Any, dict]:
    return {
        row["row"]: row
        for row in read_predictions(run_dir)
        if row.get("source", "adapter") == "adapter" and row.get("split") == "test"
    }


def paired_rows(done: pd.DataFrame, label: str, baseline: str, budget: str, key: str) -> tuple[list[float], list[float], int]:
    """Per-row values (strategy, baseline) of `key` over every seed both finished, and the number of seeds."""
    ours = done[(done["label"] == label) & (done["budget_label"] == budget)]
    theirs = done[(done["label"] == baseline) & (done["budget_label"] == budget)]
    a, b, seeds = [], [], 0
    for seed in sorted(set(ours["seed"]) & set(theirs["seed"])):
        mine = _test_rows(ours[ours["seed"] == seed]["run_dir"].iloc[0])
        other = _test_rows(theirs[theirs["seed"] == seed]["run_dir"].iloc[0])
        shared = [r for r in mine if r in other and mine[r].get(key) is not None and other[r].get(key) is not None]
        seeds += bool(shared)
        a += [float(mine[r][key]) for r in shared]
        b += [float(other[r][key]) for r in shared]
    return a, b, seeds


def row_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Row-level comparisons for every non-baseline group with predictions, against its baseline."""
    df = final_runs(df)
    done = done_runs(df) if len(df) else df
    rows = []
    if done.empty or "test_rouge_l" not in done or done["test_rouge_l"].isna().all():
        return pd.DataFrame(columns=ROW_COLUMNS)
    groups = done[done["role"] != "baseline"][["label", "budget_label"]].drop_duplicates()
    for label, budget in groups.itertuples(index=False):
        baseline, _ = choose_baseline(df, done, label, budget)
        if baseline is None:
            continue
        for metric, key in ((EXACT_MATCH, "exact_match"), (ROUGE_L, "rouge_l")):
            a, b, seeds = paired_rows(done, label, baseline, budget, key)
            if not a:
                continue
            rows.append(
                {
                    "label": label,
                    "budget_label": budget,
                    "baseline_label": baseline,
                    "metric": metric.column,
                    "metric_name": metric.name,
                    "n_rows": len(a),
                    "n_seeds": seeds,
                    **_row_test(key, a, b),
                }
            )
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _row_test(key: str, a: list[float], b: list[float]) -> dict[str, Any]:
    diffs = [x - y for x, y in zip(a, b)]
    sd = mean_ci(diffs).std
    common = {"mean_diff": sum(diffs) / len(diffs), "mde": min_detectable_effect(sd, len(diffs)) if sd is not None else None}
    if key == "exact_match":
        only_ours = sum(1 for x, y in zip(a, b) if x and not y)
        only_theirs = sum(1 for x, y in zip(a, b) if y and not x)
        low, high = paired_bootstrap_ci(diffs)
        return {
            **common,
            "ci_low": low,
            "ci_high": high,
            "p": mcnemar_exact(only_theirs, only_ours),
            "test": "exact McNemar",
            "strategy_only": only_ours,
            "baseline_only": only_theirs,
        }
    low, high = paired_bootstrap_ci(diffs)
    return {
        **common,
        "ci_low": low,
        "ci_high": high,
        "p": paired_compare(a, b).t_p,
        "test": "paired t over rows",
        "strategy_only": None,
        "baseline_only": None,
    }
