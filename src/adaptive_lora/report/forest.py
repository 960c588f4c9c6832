"""The forest plot: the paired differences the verdicts rest on, one row per strategy x budget.

Each row shows the mean paired difference from the baseline on the primary metric (dot), its 95% CI
(line), the band of +/- its minimum detectable effect at the family's level (grey: a true difference
inside it could have gone unseen) and the verdict. The capacity control and the capacity checks
differ by far more than allocation does, so they get a panel and scale of their own. Every drawn
element carries a label "_<kind>|<label>|<budget>|<baseline>" (hidden from legends) so tests can read
back what was plotted.
"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from .blocks import _missing
from .capacity import CAPACITY_BIND
from .compare import Metric

FOREST = "forest"
ALLOCATION = ("strategy", "control")
SCALE = ("capacity-control", CAPACITY_BIND)
VERDICT_COLORS = {"better": "tab:green", "worse": "tab:red"}


def artist_key(row) -> str:
    return f"{row['label']}|{row['budget_label']}|{row['baseline_label']}"


def forest_rows(stats: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """The stats rows the forest plot draws: one metric, every compared group, the capacity rows last."""
    if stats is None or stats.empty:
        return pd.DataFrame(columns=[] if stats is None else stats.columns)
    rows = stats[(stats["metric"] == metric.column) & stats["role"].isin(ALLOCATION + SCALE)]
    return rows.sort_values("role", key=lambda role: role.isin(SCALE), kind="stable")  # the capacity rows last


def _name(row) -> str:
    if row["role"] == CAPACITY_BIND:
        name = f"{row['label']} ({row['budget_label']}) − {row['baseline_label']} ({row['baseline_budget']})"
    else:
        name = f"{row['label']} @ {row['budget_label']}"
    planned, pairs = row.get("n_planned"), row.get("n_pairs")
    if not _missing(planned) and not _missing(pairs) and pairs < planned:
        name += f" ({int(pairs)} of {int(planned)} seeds)"
    return name


def _draw(ax, rows: pd.DataFrame, metric: Metric) -> None:
    ys = list(range(len(rows)))[::-1]  # first row at the top
    for y, (_, row) in zip(ys, rows.iterrows()):
        key, verdict = artist_key(row), str(row["verdict"])
        color = VERDICT_COLORS.get(verdict, "0.25")
        if not _missing(row["mde"]) and row["mde"] > 0:
            band = ax.barh(y, 2 * row["mde"], left=-row["mde"], height=0.6, color="0.88", zorder=0)
            band.patches[0].set_label(f"_mde|{key}")
        if not _missing(row["ci_low"]) and not _missing(row["ci_high"]):
            (line,) = ax.plot([row["ci_low"], row["ci_high"]], [y, y], color=color, linewidth=2, solid_capstyle="butt")
            line.set_label(f"_ci|{key}")
        if not _missing(row["mean_diff"]):
            (point,) = ax.plot([row["mean_diff"]], [y], marker="o", markersize=7, color=color, linestyle="")
            point.set_label(f"_mean|{key}")
        ax.annotate(verdict, xy=(1.02, y), xycoords=("axes fraction", "data"), va="center", fontsize=8, color=color)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(ys, [_name(row) for _, row in rows.iterrows()])
    ax.set_ylim(-0.7, len(rows) - 0.3)
    better = "higher" if metric.higher_is_better else "lower"
    ax.set_xlabel(f"{metric.name}: group − baseline ({better} is better)")
    ax.grid(True, axis="x", alpha=0.3)


def forest_figure(stats: pd.DataFrame, metric: Metric) -> Figure:
    rows = forest_rows(stats, metric)
    panels = [
        (rows[rows["role"].isin(roles)], title)
        for roles, title in ((ALLOCATION, "strategies and controls vs the baseline"), (SCALE, "capacity checks (own scale)"))
        if len(rows) and rows["role"].isin(roles).any()
    ]
    height = 1.6 + 0.42 * max([len(p) for p, _ in panels] or [1])
    fig = Figure(figsize=(6.5 * max(1, len(panels)) + 1.5, height), layout="constrained")
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    if not panels:
        axes[0].text(0.5, 0.5, "no paired comparison", ha="center", va="center", transform=axes[0].transAxes, color="0.4")
        axes[0].set_xticks([])
        axes[0].set_yticks([])
    for ax, (panel, title) in zip(axes, panels):
        _draw(ax, panel, metric)
        ax.set_title(title, fontsize=10)
    fig.suptitle(f"Paired differences from the baseline in {metric.name} (dot: mean, line: 95% CI, grey: ± MDE)")
    return fig


def forest_caption(metric: Metric) -> str:
    return (
        f"At each group's chosen learning rate, in {metric.name} (the primary metric): one row per strategy and budget, "
        "with the mean paired difference from the baseline over seeds (dot), its 95% CI (line) and the band ± the "
        "minimum detectable effect at the family's level (grey: a true difference inside it could have gone unseen); "
        "the verdict at the right (better or worse needs Holm p < 0.05 and a CI excluding 0). The capacity control and "
        "the capacity checks (baseline at a smaller size − baseline at the next larger) are on a scale of their own."
    )
