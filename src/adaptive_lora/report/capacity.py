"""Does capacity bind? The baseline at a smaller budget against the baseline at the next larger one,
paired by seed (e.g. uniform at r2 minus uniform at r8).

Allocation only moves capacity around. If more capacity does not detectably help, where it goes can
hardly matter in this regime; if it does, the size of that gap is the scale against which allocation
effects are read. The checks of one metric form one family (Holm across them, family.py); their rows
go into stats.csv with role `capacity-bind`: label/budget_label the smaller, baseline_label/
baseline_budget the larger.
"""

from __future__ import annotations

import pandas as pd

from .collect import done_runs
from .compare import STATS_COLUMNS, Planned, compare, final_runs, judge_rows, measured

CAPACITY_BIND = "capacity-bind"


def baseline_ladder(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, budget) of the baseline groups with finished runs, smallest trainable-parameter count first."""
    done = done_runs(final_runs(df)) if len(df) else df
    baselines = done[done["role"] == "baseline"] if len(done) else done
    if baselines.empty:
        return []
    sizes = baselines.groupby(["label", "budget_label"])["trainable_params"].median().dropna()
    return [group for group, _ in sorted(sizes.items(), key=lambda item: (float(item[1]), item[0]))]


def capacity_stats(df: pd.DataFrame, planned: Planned | None = None) -> pd.DataFrame:
    """One row per metric and pair of neighbouring baseline sizes: smaller minus larger, paired by seed."""
    ladder = baseline_ladder(df)
    if len(ladder) < 2:
        return pd.DataFrame(columns=STATS_COLUMNS)
    runs = final_runs(df)
    done = done_runs(runs)
    rows = []
    for metric in measured(df):
        block = []
        for (small, small_budget), (large, large_budget) in zip(ladder, ladder[1:]):
            row = {
                "label": small,
                "strategy": runs.loc[runs["label"] == small, "strategy"].iloc[0],
                "role": CAPACITY_BIND,
                "budget_label": small_budget,
                "baseline_label": large,
                "baseline_budget": large_budget,
                "baseline_choice": "the baseline at the next larger size",
            }
            row.update(compare(done, small, small_budget, large, large_budget, metric, runs=runs, planned=planned))
            block.append(row)
        rows.extend(judge_rows(block, metric.higher_is_better))
    return pd.DataFrame(rows, columns=STATS_COLUMNS)
