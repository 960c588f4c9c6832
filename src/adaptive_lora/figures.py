"""Report figures, rendered with matplotlib's Agg canvas.

Figures are plain `matplotlib.figure.Figure` objects, never pyplot: savefig renders PNG with Agg
whatever backend is active, needs no display, and a notebook user's backend is left alone.
Every figure is written as PNG (embedded in report.html) and SVG (for papers), atomically.
Colours follow the strategy label and markers the budget, the same in every figure.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from .io import atomic_write_bytes
from .report import ROLE_ORDER, budget_order, done_runs, label_order
from .stats import mean_ci

log = logging.getLogger(__name__)

DPI = 120
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MAX_HEATMAP_FILES = 8  # more labels than this: one grid figure instead of one file per label
ANNOTATE_MAX_LAYERS = 40


@dataclass
class FigureFile:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    png_bytes: bytes


# --- helpers ----------------------------------------------------------------------------------


def slugify(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-.").lower()
    return slug or "label"


def label_colors(labels: list[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _save(fig: Figure, out_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    rendered = {}
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        # No dates in the metadata: re-rendering the same sweep gives the same files.
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)
        rendered[fmt] = buffer.getvalue()
        atomic_write_bytes(out_dir / f"{name}.{fmt}", rendered[fmt])
    return FigureFile(name, title, caption, out_dir / f"{name}.png", out_dir / f"{name}.svg", rendered["png"])


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
            handles.append(Line2D([], [], color="0.3", marker=MARKERS[i % len(MARKERS)], linestyle="",
                                  label=f"budget {budget}"))
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=9)


# --- figures ----------------------------------------------------------------------------------


def pareto_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.add_subplot()
    done = done_runs(df)
    points, drawn = [], set()
    for b, budget in enumerate(budgets):
        for label in labels:
            group = done[(done["label"] == label) & (done["budget_label"] == budget)]
            if group.empty or group["trainable_params"].isna().all():
                continue
            x, y = float(group["trainable_params"].mean()), float(group["eval_loss"].mean())
            ax.errorbar(x, y, yerr=_ci_half(group["eval_loss"]), color=colors[label], marker=MARKERS[b % len(MARKERS)],
                        markersize=8, capsize=4, linestyle="")
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
    ax.set_ylabel("eval loss (mean ± 95% CI)")
    ax.set_title("Eval loss vs trainable parameters (dashed: Pareto envelope)")
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
                ax.text(x, 0.02, "no finished run", transform=ax.get_xaxis_transform(), rotation=90, ha="center",
                        va="bottom", fontsize=7, color=colors[label])
                continue
            half = _ci_half(v)
            ax.bar(x, v.mean(), width * 0.9, color=colors[label], alpha=0.75, yerr=half or None,
                   capsize=3, error_kw={"elinewidth": 1})
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
    fig = Figure(figsize=(max(9, 2.5 * len(budgets) + 6), 7), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = (("eval_loss", "eval loss", False), ("perplexity", "perplexity", False),
              ("trainable_params", "trainable parameters", True), ("train_time_s", "train time (s)", True))
    drawn = set()
    for ax, (metric, name, zero_based) in zip(axes.flat, panels):
        drawn |= _grouped_bars(ax, df, metric, labels, budgets, colors, zero_based)
        ax.set_title(name + ("" if zero_based else " (axis not from 0)"))
        ax.set_ylabel(name)
    _count_axis(axes[1, 0].yaxis)
    fig.suptitle("Strategy comparison: mean with 95% CI; dots are seeds")
    _style_legend(fig, [lab for lab in labels if lab in drawn], colors, budgets)
    return fig


def improvement_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    fig = Figure(figsize=(max(7, 2 * len(budgets) + 5), 4.5), layout="constrained")
    ax = fig.add_subplot()
    drawn = _grouped_bars(ax, df, "improvement", labels, budgets, colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("base eval loss − eval loss (higher is better)")
    ax.set_title("Improvement over the untrained base model\n(mean with 95% CI; dots are seeds)")
    _style_legend(fig, [lab for lab in labels if lab in drawn], colors, budgets)
    return fig


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """metrics.jsonl as a frame (step, train_loss, eval_loss); unreadable lines are skipped."""
    rows = []
    path = Path(run_dir) / "metrics.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    except (OSError, UnicodeDecodeError):
        lines = []
    for line in lines:
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
        if isinstance(item, dict) and isinstance(item.get("step"), (int, float)):
            rows.append({k: item.get(k) for k in ("step", "train_loss", "eval_loss")})
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
    fig.suptitle("Loss curves per run (red x: where a failed run stopped)")
    _style_legend(fig, [lab for lab in labels if lab in drawn], colors, budgets)
    return fig


def _draw_curves(ax, runs: pd.DataFrame, key: str, colors) -> int:
    count = 0
    for _, run in runs.iterrows():
        series = read_metrics(run["run_dir"])[["step", key]].dropna()
        if series.empty:
            continue
        ax.plot(series["step"], series[key], color=colors[run["label"]], linewidth=1.2, alpha=0.8,
                marker="o" if key == "eval_loss" else None, markersize=3)
        if run["status"] != "done":
            ax.plot(series["step"].iloc[-1], series[key].iloc[-1], marker="x", color="red", markersize=8)
        count += 1
    return count


# --- rank heatmaps ----------------------------------------------------------------------------


def rank_grid(run_dir: str | Path) -> pd.DataFrame | None:
    """Role x layer mean rank from allocation.json, or None when it is missing or unreadable."""
    try:
        allocation = json.loads((Path(run_dir) / "allocation.json").read_text(encoding="utf-8"))
        modules = pd.DataFrame(allocation["modules"])[["layer", "role", "rank"]]
        modules["rank"] = pd.to_numeric(modules["rank"], errors="raise")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if modules.empty:
        return None
    grid = modules.pivot_table(index="role", columns="layer", values="rank", aggfunc="mean")
    order = [r for r in ROLE_ORDER if r in grid.index] + sorted(set(grid.index) - set(ROLE_ORDER))
    return grid.loc[order].sort_index(axis=1)


def _first_grids(df: pd.DataFrame, label: str, budgets) -> list[tuple[str, pd.Series, pd.DataFrame]]:
    """For each budget: the lowest-seed run of `label` with a readable allocation.json, and its grid."""
    found = []
    for budget in budgets:
        runs = df[(df["label"] == label) & (df["budget_label"] == budget)].sort_values("seed")
        for _, run in runs.iterrows():
            grid = rank_grid(run["run_dir"])
            if grid is not None:
                found.append((budget, run, grid))
                break
    return found


def _draw_grid(ax, grid: pd.DataFrame, vmin: float, vmax: float, title: str, annotate: bool):
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_yticks(range(len(grid.index)), grid.index)
    layers = list(grid.columns)
    step = max(1, math.ceil(len(layers) / 32))  # keep layer tick labels from colliding
    ax.set_xticks(range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)],
                  fontsize=8 if len(layers) > 16 else None)
    ax.set_xlabel("layer")
    ax.set_ylabel("role")
    ax.set_title(title, fontsize=9)
    if annotate:
        middle = (vmin + vmax) / 2
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if len(layers) <= 24 else 6,
                        color="black" if value > middle else "white")
    return image


def heatmap_figure(rows: list[tuple[str, list[tuple[str, pd.Series, pd.DataFrame]]]], budgets,
                   by_budget_column: bool = False) -> Figure:
    """Panels of (label, [(budget, run, grid), ...]) sharing one colour scale.

    One label: its budgets stacked as rows. Many labels (by_budget_column): a label x budget grid.
    """
    items = [item for _, found in rows for item in found]
    values = np.concatenate([grid.to_numpy(dtype=float).ravel() for _, _, grid in items])
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    n_layers = max(grid.shape[1] for _, _, grid in items)
    n_roles = max(grid.shape[0] for _, _, grid in items)
    columns = [b for b in budgets if any(b == item[0] for item in items)] if by_budget_column else [None]
    n_rows = len(rows) if by_budget_column else len(items)
    cell = 0.33 if len(columns) == 1 else 0.2  # inches per layer
    panel_width = max(4.0, cell * n_layers + 1.2)
    fig = Figure(figsize=(len(columns) * panel_width + 1.3, n_rows * (0.3 * n_roles + 1.1) + 0.6),
                 layout="constrained")
    axes = fig.subplots(n_rows, len(columns), squeeze=False)
    annotate = n_layers <= ANNOTATE_MAX_LAYERS and (panel_width - 1.2) / n_layers >= 0.25  # room for "16"
    if by_budget_column:  # (row, column, label, panel)
        positions = [(r, columns.index(item[0]), label, item)
                     for r, (label, found) in enumerate(rows) for item in found]
    else:
        flat = [(label, item) for label, found in rows for item in found]
        positions = [(r, 0, label, item) for r, (label, item) in enumerate(flat)]
    image = None
    for r, c, label, (budget, run, grid) in positions:
        title = f"{label}, budget {budget} (seed {run['seed']}, {_params_text(run['trainable_params'])} params)"
        image = _draw_grid(axes[r, c], grid, vmin, vmax, title, annotate)
    for ax in axes.flat:  # panels of a grid with no run (a label missing at a budget)
        if not ax.has_data():
            ax.set_axis_off()
    fig.colorbar(image, ax=axes.ravel().tolist(), label="LoRA rank (mean over modules)",
                 shrink=0.9 if n_rows <= 3 else 0.4)
    return fig


def _params_text(value) -> str:
    return "?" if pd.isna(value) else f"{int(value):,}"


def heatmap_figures(df: pd.DataFrame, labels, budgets, out_dir: Path) -> list[FigureFile]:
    grids = [(label, _first_grids(df, label, budgets)) for label in labels]
    grids = [(label, items) for label, items in grids if items]
    caption = "Planned rank per layer (columns) and module role (rows), from allocation.json: first seed per budget."
    if len(grids) > MAX_HEATMAP_FILES:
        fig = heatmap_figure(grids, budgets, by_budget_column=True)
        return [_save(fig, out_dir, "rank_heatmap_all", "Rank allocation: all strategies", caption)]
    files, used = [], set()
    for label, items in grids:
        name = f"rank_heatmap_{slugify(label)}"
        while name in used:  # two labels that slugify alike
            name += "_"
        used.add(name)
        fig = heatmap_figure([(label, items)], budgets)
        fig.suptitle(f"Rank allocation: {label}")
        files.append(_save(fig, out_dir, name, f"Rank allocation: {label}", caption))
    return files


# --- all --------------------------------------------------------------------------------------


def render_all(df: pd.DataFrame, out_dir: str | Path) -> tuple[list[FigureFile], list[str]]:
    """Write every figure into out_dir (PNG and SVG); returns them in report order, and errors.

    A figure that fails is reported, not raised: this runs at the end of a long sweep, and a report
    missing one figure beats no report.
    """
    out_dir = Path(out_dir)
    labels = label_order(df) if len(df) else []
    budgets = budget_order(df) if len(df) else []
    colors = label_colors(labels)
    specs = [
        ("pareto", "Eval loss vs trainable parameters", pareto_figure,
         "Mean eval loss with 95% CI per strategy and budget; the dashed step line is the Pareto envelope "
         "(no other point has both fewer parameters and lower loss)."),
        ("strategy_comparison", "Strategy comparison", comparison_figure,
         "Bars: mean over finished seeds with 95% CI; dots: individual seeds."),
        ("improvement", "Improvement over the base model", improvement_figure,
         "Untrained base eval loss minus trained eval loss, on the same eval split."),
        ("loss_curves", "Loss curves", loss_curves_figure,
         "Train and eval loss from metrics.jsonl, one row per budget; colour = strategy."),
    ]
    files, errors = [], []
    for name, title, build, caption in specs:
        try:
            files.append(_save(build(df, labels, budgets, colors), out_dir, name, title, caption))
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.warning("figure %s failed", name, exc_info=True)
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    try:
        files.extend(heatmap_figures(df, labels, budgets, out_dir) if len(df) else [])
    except Exception as exc:  # noqa: BLE001
        log.warning("rank heatmaps failed", exc_info=True)
        errors.append(f"rank_heatmap: {type(exc).__name__}: {exc}")
    try:  # importance scores and AdaLoRA's rank movement, when data-driven runs recorded them
        from .figures_importance import importance_figure_specs, runs_from_frame

        for name, title, caption, fig in importance_figure_specs(runs_from_frame(df)) if len(df) else []:
            files.append(_save(fig, out_dir, name, title, caption))
    except Exception as exc:  # noqa: BLE001
        log.warning("importance figures failed", exc_info=True)
        errors.append(f"importance: {type(exc).__name__}: {exc}")
    _remove_stale_heatmaps(out_dir, {f.name for f in files})
    return files, errors


def _remove_stale_heatmaps(out_dir: Path, current: set[str]) -> None:
    """A re-render after labels changed must not leave old heatmaps beside the new ones."""
    for path in out_dir.glob("rank_heatmap_*"):
        if path.suffix in (".png", ".svg") and path.stem not in current:
            path.unlink(missing_ok=True)
