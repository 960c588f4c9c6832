"""Per-row paired tests on the test split, from each run's predictions.jsonl, with the test row as the unit.

Every seed answers the same test rows, so (row, seed) pairs are not independent: a row that one
adapter gets right in one seed it tends to get right in every seed. Each row therefore counts once:
its paired difference (strategy minus baseline, same seed) is averaged over the seeds both finished,
and the test runs across rows:
    exact match   exact sign-flip permutation test of the row totals (right answers summed over seeds,
                  strategy minus baseline; with one seed this is the exact McNemar test)
    ROUGE-L       t-test over rows of the per-row mean differences
each with a t CI over rows and the minimum detectable effect on the same unit (rows), at the level
of its family (one metric at one budget, Holm across its groups; family.py). Row-level tests say
whether these trained adapters differ on these rows; the seed-level tests in compare.py say whether
the difference survives retraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..schema import read_predictions
from .collect import done_runs
from .compare import EXACT_MATCH, ROUGE_L, choose_baseline, final_runs
from .family import PairedNumbers, judge_family
from .stats import mean_ci, sign_flip_p, t_test_p

ROW_COLUMNS = [
    "label",
    "budget_label",
    "baseline_label",
    "metric",
    "metric_name",
    "n_rows",
    "n_seeds",
    "mean_diff",
    "sd_diff",
    "ci_low",
    "ci_high",
    "p",
    "test",
    "p_holm",
    "family_size",
    "mde_level",
    "mde",
    "verdict",
    "rows_strategy_ahead",
    "rows_baseline_ahead",
]
SIGN_FLIP = "exact sign-flip permutation over rows"
T_OVER_ROWS = "t-test over rows"


def _test_rows(run_dir: str) -> dict[Any, dict]:
    return {
        row["row"]: row
        for row in read_predictions(run_dir)
        if row.get("source", "adapter") == "adapter" and row.get("split") == "test"
    }


def row_matrix(done: pd.DataFrame, label: str, baseline: str, budget: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Values of `key` (strategy, baseline) as rows x seeds arrays: over the seeds both finished with
    predictions, the rows every one of those seeds scored on both sides."""
    ours = done[(done["label"] == label) & (done["budget_label"] == budget)]
    theirs = done[(done["label"] == baseline) & (done["budget_label"] == budget)]
    per_seed = []
    for seed in sorted(set(ours["seed"]) & set(theirs["seed"])):
        mine = _test_rows(ours[ours["seed"] == seed]["run_dir"].iloc[0])
        other = _test_rows(theirs[theirs["seed"] == seed]["run_dir"].iloc[0])
        scored = {r for r in mine if r in other and mine[r].get(key) is not None and other[r].get(key) is not None}
        if scored:
            per_seed.append((mine, other, scored))
    rows = sorted(set.intersection(*(scored for _, _, scored in per_seed)), key=str) if per_seed else []
    shape = (len(rows), len(per_seed))  # (0, k) when no row was scored in every seed
    a = np.array([[float(mine[r][key]) for mine, _, _ in per_seed] for r in rows], dtype=float).reshape(shape)
    b = np.array([[float(other[r][key]) for _, other, _ in per_seed] for r in rows], dtype=float).reshape(shape)
    return a, b


def row_comparison(a: np.ndarray, b: np.ndarray, exact_match: bool) -> dict[str, Any]:
    """One comparison with the row as the unit, from rows x seeds arrays of the same rows and seeds."""
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    per_row = diffs.mean(axis=1) if diffs.size else np.zeros(0)
    summary = mean_ci(per_row.tolist())
    p = sign_flip_p(np.rint(diffs.sum(axis=1))) if exact_match else t_test_p(per_row)
    return {
        "n_rows": len(per_row),
        "n_seeds": diffs.shape[1] if diffs.ndim == 2 else 0,
        "mean_diff": summary.mean,
        "sd_diff": summary.std,
        "ci_low": summary.ci_low,
        "ci_high": summary.ci_high,
        "p": p,
        "test": SIGN_FLIP if exact_match else T_OVER_ROWS,
        "rows_strategy_ahead": int((per_row > 0).sum()),
        "rows_baseline_ahead": int((per_row < 0).sum()),
    }


def judge_row_family(block: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm across one family of row comparisons (higher is better for both row metrics), the MDE at the
    family's level on the row unit, and the verdicts; in place."""
    tested = [
        PairedNumbers(r["n_rows"], r["mean_diff"], r["sd_diff"], r["ci_low"], r["ci_high"], r["p"], r["test"] == SIGN_FLIP)
        for r in block
    ]
    for row, judged in zip(block, judge_family(tested, higher_is_better=True)):
        row.update(
            p_holm=judged.p_holm,
            family_size=judged.family_size,
            mde_level=judged.level,
            mde=judged.mde,
            verdict=judged.verdict,
        )
    return block


def row_stats(df: pd.DataFrame) -> pd.DataFrame:
    """Row-level comparisons for every non-baseline group with predictions, against its baseline."""
    df = final_runs(df)
    done = done_runs(df) if len(df) else df
    if done.empty or "test_rouge_l" not in done or done["test_rouge_l"].isna().all():
        return pd.DataFrame(columns=ROW_COLUMNS)
    families: dict[tuple[str, str], list[dict[str, Any]]] = {}
    groups = done[done["role"] != "baseline"][["label", "budget_label"]].drop_duplicates()
    for label, budget in groups.itertuples(index=False):
        baseline, _ = choose_baseline(df, done, label, budget)
        if baseline is None:
            continue
        for metric, key in ((EXACT_MATCH, "exact_match"), (ROUGE_L, "rouge_l")):
            a, b = row_matrix(done, label, baseline, budget, key)
            if not a.size:
                continue
            row = {"label": label, "budget_label": budget, "baseline_label": baseline, "metric": metric.column}
            row.update(metric_name=metric.name, **row_comparison(a, b, exact_match=metric is EXACT_MATCH))
            families.setdefault((metric.column, budget), []).append(row)
    rows = [row for block in families.values() for row in judge_row_family(block)]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
