"""The original study (DialoGPT-medium, 200 Alpaca rows, one seed, fp16): its published table, as data,
and the report section that sets our seed-study beside it."""

from __future__ import annotations

import pandas as pd

from .blocks import DASH, Heading, Para, Table, fmt_mean_ci, fmt_num, fmt_params
from .collect import OWN_BUDGET

# The original study's published table (DialoGPT-medium, 200 Alpaca rows, one seed, fp16).
# `match` finds our counterpart at budget `own`: (strategy, uniform rank or None).
STUDY_TABLE = (
    {
        "strategy": "Baseline Rank 16",
        "eval_loss": 4.90,
        "perplexity": 134.0,
        "params": "6.3M",
        "exact": 6_291_456,
        "efficiency": "1.7%",
        "time": "81.8s",
        "match": ("uniform", 16),
    },
    {
        "strategy": "Linear Decay",
        "eval_loss": 5.11,
        "perplexity": 165.1,
        "params": "6.3M",
        "exact": None,
        "efficiency": "1.7%",
        "time": "83.5s",
        "match": ("linear_decay", None),
    },
    {
        "strategy": "Baseline Rank 8",
        "eval_loss": 5.31,
        "perplexity": 203.3,
        "params": "3.1M",
        "exact": 3_145_728,
        "efficiency": "0.9%",
        "time": "87.5s",
        "match": ("uniform", 8),
    },
    {
        "strategy": "Attention-Heavy",
        "eval_loss": None,
        "perplexity": None,
        "params": "5.1M",
        "exact": None,
        "efficiency": "1.4%",
        "time": "90.2s",
        "match": ("attention_heavy", None),
    },
    {
        "strategy": "Empirical",
        "eval_loss": None,
        "perplexity": None,
        "params": "3.5M",
        "exact": None,
        "efficiency": "1.0%",
        "time": "88.8s",
        "match": ("empirical", None),
    },
)
STUDY_DIVERGED = "diverged (NaN)"
STUDY_NOTE = (
    "The original study (DialoGPT-medium, 200 Alpaca rows, one seed, fp16) applied only the first layer's rank "
    "to every layer, averaged attention-heavy ranks into one, and its attention-heavy and empirical runs diverged "
    "to NaN in fp16; its adaptive rows therefore do not measure the strategies they name. Ours apply every "
    "module's planned rank (verified after PEFT wrapping), train in fp32/bf16 and stop diverged runs with the step."
)


def _our_match(summary: pd.DataFrame, df: pd.DataFrame, strategy: str, rank: int | None) -> pd.Series | None:
    """Our summary row at budget `own` for one study row (uniform: the one whose mean rank is `rank`)."""
    if summary.empty:
        return None
    rows = summary[(summary["strategy"] == strategy) & (summary["budget_label"] == OWN_BUDGET)]
    if rank is not None:
        ranks = df[df["budget_label"] == OWN_BUDGET].groupby("label")["mean_rank"].median()
        rows = rows[rows["label"].map(lambda lab: ranks.get(lab) == rank)]
    return None if rows.empty else rows.iloc[0]


def _our_loss(df: pd.DataFrame, row: pd.Series | None, metric: str, fmt) -> str:
    if row is None:
        return DASH
    if row["n"] == 0:  # every run of this group failed: say how
        group = df[(df["label"] == row["label"]) & (df["budget_label"] == row["budget_label"])]
        return ", ".join(f"{status} ({count})" for status, count in group["status"].value_counts().items())
    return fmt_mean_ci(row, metric, fmt)


def study_blocks(summary: pd.DataFrame, df: pd.DataFrame) -> list:
    """Our seed-study rows (budget own) beside the study's published ones."""
    columns = [
        "Strategy",
        "Study eval loss",
        "Study perplexity",
        "Study params",
        "Study efficiency",
        "Study time",
        "Our label",
        "Our eval loss",
        "Our perplexity",
        "Our params",
        "Our train time (s)",
    ]
    rows = []
    for study in STUDY_TABLE:
        ours = _our_match(summary, df, *study["match"])
        params = f"{study['params']} ({study['exact']:,})" if study["exact"] else study["params"]
        rows.append(
            [
                study["strategy"],
                STUDY_DIVERGED if study["eval_loss"] is None else f"{study['eval_loss']:.2f}",
                STUDY_DIVERGED if study["perplexity"] is None else f"{study['perplexity']:.1f}",
                params,
                study["efficiency"],
                study["time"],
                DASH if ours is None else ours["label"],
                _our_loss(df, ours, "eval_loss", fmt_num),
                _our_loss(df, ours, "perplexity", lambda v: fmt_num(v, 2)),
                DASH if ours is None else fmt_mean_ci(ours, "trainable_params", fmt_params),
                DASH if ours is None else fmt_mean_ci(ours, "train_time_s", lambda v: fmt_num(v, 1)),
            ]
        )
    return [
        Heading(2, "The original study beside ours"),
        Table(columns, rows, numeric={1, 2, 3, 4, 5, 7, 8, 9, 10}),
        Para(STUDY_NOTE, "note"),
        Para(
            "Our rows are at budget own (each strategy's own ranks), mean ± 95% CI over seeds. Training times "
            "depend on hardware and are not comparable across the two studies.",
            "note",
        ),
    ]
