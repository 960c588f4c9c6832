"""Report figures: the forest plot of paired differences (forest.py, first), the primary metric vs
parameters (Pareto), strategy bars, improvement over the base, loss curves; `render_all` also draws
the rank heatmaps (heatmaps.py) and importance maps (figures_importance.py).

Figures show what the verdicts use: only the runs at each group's chosen learning rate, and the
primary metric (test loss when there is a test split, else validation loss). Every figure is written
as PNG (embedded in report.html) and SVG (for papers), atomically. Colours follow the strategy label
and markers the budget, the same in every figure. Bars and points carry a hidden label
"_bar|<label>|<budget>" / "_point|<label>|<budget>" so tests can read back what was drawn.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..schema import read_metrics
from .collect import budget_order, done_runs, label_order
from .compare import EXACT_MATCH, ROUGE_L, TEST_LOSS, final_runs, primary_metric
from .figures_importance import importance_figure_specs, runs_from_frame
from .forest import FOREST, forest_caption, forest_figure
from .heatmaps import heatmap_figures, remove_stale_heatmaps
from .plotting import MARKERS, FigureFile, label_colors, save_figure
from .stats import mean_ci

log = logging.getLogger(__name__)


def _no_data(ax, text: str = "no finished runs") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _ci_half(values: pd.Series) -> float:
    s = mean_ci(values.tolist())
    return 0.0 if s.ci_high is None else s.ci_high - s.mean


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten by another with fewer (or equal) params and lower loss, by increasing params."""
    front, best = [], math.inf
    for x, y in sorted(points):
        if y < best:
            front.append((x, y))
            best = y
    return front


def _style_legend(fig: Figure, labels, colors, budgets, budget_markers: bool = False) -> None:
    """One legend outside the axes: colour = strategy label (and marker = budget when asked)."""
    handles = [Line2D([], [], color=colors[lab], marker="s", linestyle="", markersize=8, label=lab) for lab in labels]
    if budget_markers and len(budgets) > 1:
        handles.append(Line2D([], [], linestyle="", label=""))  # spacer
        for i, budget in enumerate(budgets):
            handles.append(Line2D([], [], color="0.3", marker=MARKERS[i % len(MARKERS)], linestyle="", label=f"budget {budget}"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=9)


# --- figures ----------------------------------------------------------------------------------


def pareto_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    metric = primary_metric(df)
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.add_subplot()
    done = done_runs(df)
    points, drawn = [], set()
    for b, budget in enumerate(budgets):
        for label in labels:
            group = done[(done["label"] == label) & (done["budget_label"] == budget)]
            if group.empty or group["trainable_params"].isna().all():
                continue
            values = group[metric.column].dropna().astype(float)
            if values.empty:
                continue
            x, y = float(group["trainable_params"].mean()), float(values.mean())
            drawn_point = ax.errorbar(
                x,
                y,
                yerr=_ci_half(values),
                color=colors[label],
                marker=MARKERS[b % len(MARKERS)],
                markersize=8,
                capsize=4,
                linestyle="",
            )
            drawn_point.lines[0].set_label(f"_point|{label}|{budget}")
            points.append((x, y))
            drawn.add(label)
    if not points:
        _no_data(ax)
    else:
        front = pareto_front(points)
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", color="0.5", linestyle="--", linewidth=1, zorder=0)
        _log_x_axis(ax, [p[0] for p in points])
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"{metric.name} (mean ± 95% CI)")
    ax.set_title(f"{metric.name.capitalize()} vs trainable parameters (dashed: Pareto envelope)")
    ax.grid(True, which="both", alpha=0.3)
    _style_legend(fig, [lab for lab in labels if lab in drawn], colors, budgets, budget_markers=True)
    return fig


def _log_x_axis(ax, xs: list[float]) -> None:
    """Log x with room around the points and labelled ticks at 1-2-5 (more within a decade, fewer over many)."""
    ax.set_xscale("log")
    lo, hi = min(xs), max(xs)
    if lo <= 0:
        return
    ratio = max(hi / lo, 1.5) ** 0.1  # room around the extreme points, also when all x are equal
    ax.set_xlim(lo / ratio, hi * ratio)
    decades = math.log10(hi * ratio / (lo / ratio))
    subs = (1.0, 2.0, 3.0, 5.0, 7.0) if decades <= 1.2 else (1.0, 2.0, 5.0) if decades <= 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _grouped_bars(ax, df: pd.DataFrame, metric: str, labels, budgets, colors, zero_based: bool = True) -> set:
    """Bars of the mean (with 95% CI) per budget group and label, with each seed's value as a dot.

    A label gets a slot in a budget group only if it has runs there; one whose runs all failed gets
    a "no finished run" mark instead of a bar. Returns the labels drawn.
    """
    done = done_runs(df)
    rng = np.random.default_rng(0)  # fixed jitter: figures are reproducible
    extent, drawn = [], set()
    for i, budget in enumerate(budgets):
        present = [lab for lab in labels if ((df["label"] == lab) & (df["budget_label"] == budget)).any()]
        width = 0.8 / max(1, len(present))
        for j, label in enumerate(present):
            x = i - 0.4 + width * (j + 0.5)
            v = done.loc[(done["label"] == label) & (done["budget_label"] == budget), metric].dropna().astype(float)
            drawn.add(label)
            if v.empty:
                ax.text(
                    x,
                    0.02,
                    "no finished run",
                    transform=ax.get_xaxis_transform(),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color=colors[label],
                )
                continue
            half = _ci_half(v)
            bars = ax.bar(
                x,
                v.mean(),
                width * 0.9,
                color=colors[label],
                alpha=0.75,
                yerr=half or None,
                capsize=3,
                error_kw={"elinewidth": 1},
            )
            bars.patches[0].set_label(f"_bar|{label}|{budget}")
            ax.scatter(x + rng.uniform(-width / 5, width / 5, len(v)), v, s=12, color="black", zorder=3)
            extent.extend([*v.tolist(), v.mean() - half, v.mean() + half])
    ax.set_xticks(range(len(budgets)), [f"budget {b}" for b in budgets])
    ax.grid(True, axis="y", alpha=0.3)
    if not extent:
        _no_data(ax)
    elif not zero_based:  # losses differ in the 2nd decimal: a zero-based axis would hide that
        lo, hi = min(extent), max(extent)
        pad = (hi - lo) * 0.08 or abs(hi) * 0.02 or 0.1
        ax.set_ylim(lo - pad, hi + pad)
    return drawn


def _count_axis(axis) -> None:
    """Tick labels like 47.1k / 3.15M instead of 47100 or 1e6 offsets."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: _compact(v)))


def _compact(value: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.0f}"


def comparison_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    """Bars of the primary metric (and the other test metrics measured), trainable parameters and train time."""
    done = done_runs(df) if len(df) else df
    metrics = [primary_metric(df)] + [m for m in (EXACT_MATCH, ROUGE_L) if m.column in done and done[m.column].notna().any()]
    panels = [(m.column, m.name, m is not TEST_LOSS and m.higher_is_better) for m in metrics]
    panels += [("trainable_params", "trainable parameters", True), ("train_time_s", "train time (s)", True)]
    n_rows = (len(panels) + 1) // 2
    fig = Figure(figsize=(max(9, 2.5 * len(budgets) + 6), 3.5 * n_rows), layout="constrained")
    axes = list(fig.subplots(n_rows, 2, squeeze=False).flat)
    drawn = set()
    for ax, (column, name, zero_based) in zip(axes, panels):
        drawn |= _grouped_bars(ax, df, column, labels, budgets, colors, zero_based)
        ax.set_title(name + ("" if zero_based else " (axis not from 0)"))
        ax.set_ylabel(name)
        if column == "trainable_params":
            _count_axis(ax.yaxis)
    for ax in axes[len(panels) :]:  # an odd number of panels leaves one empty
        ax.set_visible(False)
    fig.suptitle("Strategy comparison at the chosen learning rates: mean with 95% CI; dots are seeds")
    _style_legend(fig, [lab for lab in labels if lab in drawn], colors, budgets)
    return fig


def improvement_column(df: pd.DataFrame) -> tuple[str, str]:
    """The improvement over the base on the primary metric: (results.csv column, its split's name)."""
    return ("test_improvement", "test") if primary_metric(df) is TEST_LOSS else ("improvement", "validation")


def improvement_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    fig = Figure(figsize=(max(7, 2 * len(budgets) + 5), 4.5), layout="constrained")
    ax = fig.add_subplot()
    column, split = improvement_column(df)
    drawn = _grouped_bars(ax, df, column, labels, budgets, colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(f"base {split} loss − {split} loss (higher is better)")
    ax.set_title("Improvement over the untrained base model\n(mean with 95% CI; dots are seeds)")
    _style_legend(fig, [lab for lab in labels if lab in drawn], colors, budgets)
    return fig


def read_metrics_frame(run_dir: str | Path) -> pd.DataFrame:
    """metrics.jsonl as a frame (step, train_loss, eval_loss)."""
    rows = [
        {k: item.get(k) for k in ("step", "train_loss", "eval_loss")}
        for item in read_metrics(run_dir)
        if isinstance(item.get("step"), (int, float))
    ]
    frame = pd.DataFrame(rows, columns=["step", "train_loss", "eval_loss"])
    return frame.apply(pd.to_numeric, errors="coerce")


def loss_curves_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    """Train (left) and eval (right) loss vs step; one row of panels per budget, one line per run."""
    rows = max(1, len(budgets))
    fig = Figure(figsize=(12, 1.0 + 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, 2, squeeze=False)
    drawn = set()
    for (ax_train, ax_eval), budget in zip(axes, budgets or [None]):
        runs = df[df["budget_label"] == budget] if budget is not None else df.iloc[0:0]
        for ax, key, name in ((ax_train, "train_loss", "train loss"), (ax_eval, "eval_loss", "eval loss")):
            if not _draw_curves(ax, runs, key, colors):
                _no_data(ax, "no logged values")
            drawn |= set(runs["label"])
            ax.set_title(f"{name}" + (f", budget {budget}" if budget is not None else ""))
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(name)
            ax.grid(True, alpha=0.3)
    fig.suptitle(
        "Loss curves per run at the chosen learning rates (eval: the validation split; red x: where a failed run stopped)"
    )
    _style_legend(fig, [lab for lab in labels if lab in drawn], colors, budgets)
    return fig


def _draw_curves(ax, runs: pd.DataFrame, key: str, colors) -> int:
    count = 0
    for _, run in runs.iterrows():
        series = read_metrics_frame(run["run_dir"])[["step", key]].dropna()
        if series.empty:
            continue
        ax.plot(
            series["step"],
            series[key],
            color=colors[run["label"]],
            linewidth=1.2,
            alpha=0.8,
            marker="o" if key == "eval_loss" else None,
            markersize=3,
        )
        if run["status"] != "done":
            ax.plot(series["step"].iloc[-1], series[key].iloc[-1], marker="x", color="red", markersize=8)
        count += 1
    return count


# --- all --------------------------------------------------------------------------------------


def render_all(df: pd.DataFrame, out_dir: str | Path, stats: pd.DataFrame | None = None) -> tuple[list[FigureFile], list[str]]:
    """Write every figure into out_dir (PNG and SVG); returns them in report order, and errors.

    df: every run (only those at each group's chosen learning rate are drawn); stats: the paired
    statistics (stats.csv rows) the forest plot draws. A figure that fails is reported, not raised:
    this runs at the end of a long sweep, and a report missing one figure beats no report.
    """
    out_dir = Path(out_dir)
    df = final_runs(df)
    labels = label_order(df) if len(df) else []
    budgets = budget_order(df) if len(df) else []
    colors = label_colors(labels)
    metric = primary_metric(df) if len(df) else TEST_LOSS
    chosen = "At each group's chosen learning rate"
    improvement, split = improvement_column(df) if len(df) else ("improvement", "validation")
    specs = [
        (FOREST, "Paired differences from the baseline", lambda *_: forest_figure(stats, metric), forest_caption(metric)),
        (
            "pareto",
            f"{metric.name.capitalize()} vs trainable parameters",
            pareto_figure,
            f"{chosen}: mean {metric.name} over finished seeds with its 95% CI (unpaired) per strategy and budget; the "
            "dashed step line is the Pareto envelope (no other point has both fewer parameters and a lower value).",
        ),
        (
            "strategy_comparison",
            "Strategy comparison",
            comparison_figure,
            f"{chosen}: bars are the mean over finished seeds with its 95% CI (unpaired: the paired differences are in "
            f"the forest plot), dots the individual seeds; {metric.name} first, then the other test metrics measured, "
            "trainable parameters and train time.",
        ),
        (
            "improvement",
            "Improvement over the base model",
            improvement_figure,
            f"{chosen}: untrained base {split} loss minus trained {split} loss ({improvement} in results.csv), mean over "
            "finished seeds with its 95% CI.",
        ),
        (
            "loss_curves",
            "Loss curves",
            loss_curves_figure,
            f"{chosen}: train loss and eval loss (on the validation split) from metrics.jsonl, one row per budget; "
            "colour = strategy.",
        ),
    ]
    files, errors = [], []
    for name, title, build, caption in specs:
        try:
            files.append(save_figure(build(df, labels, budgets, colors), out_dir, name, title, caption))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("figure %s failed", name, exc_info=True)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        files.extend(heatmap_figures(df, labels, budgets, out_dir) if len(df) else [])
    except Exception as exc:  # noqa: BLE001
        log.warning("rank heatmaps failed", exc_info=True)
        errors.append(f"rank_heatmap: {type(exc).__name__}: {exc}")
    try:  # importance scores and AdaLoRA's rank movement, when data-driven runs recorded them
        for name, title, caption, fig in importance_figure_specs(runs_from_frame(df)) if len(df) else []:
            files.append(save_figure(fig, out_dir, name, title, caption))
    except Exception as exc:  # noqa: BLE001
        log.warning("importance figures failed", exc_info=True)
        errors.append(f"importance: {type(exc).__name__}: {exc}")
    remove_stale_heatmaps(out_dir, {f.name for f in files})
    return files, errors
