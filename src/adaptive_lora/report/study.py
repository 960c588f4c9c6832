"""The original study (DialoGPT-medium, 200 Alpaca rows, one seed, fp16): its published table, as data,
and the report section that sets our seed-study beside it."""

from __future__ import annotations

import pandas as pd

from .blocks import DASH, Heading, Para, Table, fmt_mean_ci, fmt_num, fmt_params
from .collect import OWN_BUDGET, budget_order

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
    """Our summary row for one study row: at budget `own` (the seed study: uniform is the one whose mean rank is
    `rank`), else in a budget-matched sweep at budget r<rank> for uniform, and at the largest budget otherwise."""
    if summary.empty:
        return None
    ours = summary[(summary["strategy"] == strategy) & (summary["role"] != "capacity-control")]
    own = ours[ours["budget_label"] == OWN_BUDGET]
    if len(own):
        if rank is not None:
            ranks = df[df["budget_label"] == OWN_BUDGET].groupby("label")["mean_rank"].median()
            own = own[own["label"].map(lambda lab: ranks.get(lab) == rank)]
        return None if own.empty else own.iloc[0]
    budgets = [b for b in budget_order(df) if b != OWN_BUDGET]
    if not budgets:
        return None
    wanted = f"r{rank}" if rank is not None else budgets[-1]
    rows = ours[(ours["budget_label"] == wanted) & (ours["role"].isin(["baseline", "strategy"]))]
    return None if rows.empty else rows.iloc[0]


def _named(row: pd.Series) -> str:
    return row["label"] if row["budget_label"] == OWN_BUDGET else f"{row['label']} at {row['budget_label']}"


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
        "Our test loss",
        "Our params",
        "Our train time (s)",
    ]
    rows, matched = [], 0
    for study in STUDY_TABLE:
        ours = _our_match(summary, df, *study["match"])
        matched += ours is not None and ours["n"] > 0  # a table of only failures compares nothing
        params = f"{study['params']} ({study['exact']:,})" if study["exact"] else study["params"]
        rows.append(
            [
                study["strategy"],
                STUDY_DIVERGED if study["eval_loss"] is None else f"{study['eval_loss']:.2f}",
                STUDY_DIVERGED if study["perplexity"] is None else f"{study['perplexity']:.1f}",
                params,
                study["efficiency"],
                study["time"],
                DASH if ours is None else _named(ours),
                _our_loss(df, ours, "eval_loss", fmt_num),
                _our_loss(df, ours, "perplexity", lambda v: fmt_num(v, 2)),
                _our_loss(df, ours, "test_loss", fmt_num),
                DASH if ours is None else fmt_mean_ci(ours, "trainable_params", fmt_params),
                DASH if ours is None else fmt_mean_ci(ours, "train_time_s", lambda v: fmt_num(v, 1)),
            ]
        )
    if not matched:
        return []
    return [
        Heading(2, "The original study beside ours"),
        Table(columns, rows, numeric={1, 2, 3, 4, 5, 7, 8, 9, 10, 11}),
        Para(STUDY_NOTE, "note"),
        Para(
            "Our rows: in the seed study at budget own (each strategy's own ranks); in a budget-matched study uniform at the "
            "study's rank and every other strategy at our largest budget, rescaled to it. Mean ± 95% CI over seeds at "
            "each group's chosen learning rate. Losses are of another model on other data than the study's, so compare "
            "orderings, not values; training times depend on hardware and are not comparable either.",
            "note",
        ),
    ]
