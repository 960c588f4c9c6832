"""Report figures, rendered with matplotlib's Agg canvas (no pyplot, no display, no global state).

Every figure is written as PNG (embedded in report.html) and SVG (for papers), atomically.
Colours follow the strategy label and markers/line styles the budget, the same in every figure.
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # harmless when already set; we never open a window

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from .io import atomic_write_bytes  # noqa: E402
from .report import ROLE_ORDER, budget_order, done_runs, label_order  # noqa: E402
from .stats import mean_ci  # noqa: E402

DPI = 120
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", ":", "-.")
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


def _style_legend(fig: Figure, labels, colors, budgets, budget_style: str | None) -> None:
    """One legend outside the axes: colour = strategy label, and marker or line style = budget."""
    handles = [Line2D([], [], color=colors[lab], marker="s", linestyle="", markersize=8, label=lab) for lab in labels]
    if budget_style and len(budgets) > 1:
        handles.append(Line2D([], [], linestyle="", label=""))  # spacer
        for i, budget in enumerate(budgets):
            kw = ({"marker": MARKERS[i % len(MARKERS)], "linestyle": ""} if budget_style == "marker"
                  else {"linestyle": LINESTYLES[i % len(LINESTYLES)]})
            handles.append(Line2D([], [], color="0.3", label=f"budget {budget}", **kw))
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=9)


# --- figures ----------------------------------------------------------------------------------


def pareto_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    fig = Figure(figsize=(8.5, 5), layout="constrained")
    ax = fig.add_subplot()
    done = done_runs(df)
    points = []
    for b, budget in enumerate(budgets):
        for label in labels:
            group = done[(done["label"] == label) & (done["budget_label"] == budget)]
            if group.empty or group["trainable_params"].isna().all():
                continue
            x, y = float(group["trainable_params"].mean()), float(group["eval_loss"].mean())
            ax.errorbar(x, y, yerr=_ci_half(group["eval_loss"]), color=colors[label], marker=MARKERS[b % len(MARKERS)],
                        markersize=8, capsize=4, linestyle="")
            points.append((x, y))
    if not points:
        _no_data(ax)
    else:
        front = pareto_front(points)
        xs, ys = zip(*front)
        ax.step(xs, ys, where="post", color="0.5", linestyle="--", linewidth=1, zorder=0)
        ax.set_xscale("log")
        _pad_log_x(ax, [p[0] for p in points])
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel("eval loss (mean ± 95% CI)")
    ax.set_title("Eval loss vs trainable parameters (dashed: Pareto envelope)")
    ax.grid(True, which="both", alpha=0.3)
    _style_legend(fig, labels, colors, budgets, "marker")
    return fig


def _pad_log_x(ax, xs: list[float]) -> None:
    lo, hi = min(xs), max(xs)
    if lo > 0:
        ratio = max(hi / lo, 1.5) ** 0.1  # room around the extreme points, also when all x are equal
        ax.set_xlim(lo / ratio, hi * ratio)


def _grouped_bars(ax, df: pd.DataFrame, metric: str, labels, budgets, colors, zero_based: bool = True) -> None:
    """Bars of the mean (with 95% CI) per budget group and label, with each seed's value as a dot."""
    done = done_runs(df)
    width = 0.8 / max(1, len(labels))
    values = []
    rng = np.random.default_rng(0)  # fixed jitter: figures are reproducible
    for i, budget in enumerate(budgets):
        for j, label in enumerate(labels):
            v = done.loc[(done["label"] == label) & (done["budget_label"] == budget), metric].dropna().astype(float)
            if v.empty:
                continue
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, v.mean(), width * 0.9, color=colors[label], alpha=0.75, yerr=_ci_half(v) or None,
                   capsize=3, error_kw={"elinewidth": 1})
            ax.scatter(x + rng.uniform(-width / 5, width / 5, len(v)), v, s=12, color="black", zorder=3)
            values.extend(v.tolist())
    ax.set_xticks(range(len(budgets)), [f"budget {b}" for b in budgets])
    ax.grid(True, axis="y", alpha=0.3)
    if not values:
        _no_data(ax)
    elif not zero_based:  # losses differ in the 2nd decimal: a zero-based axis would hide that
        lo, hi = min(values), max(values)
        pad = (hi - lo) * 0.15 or abs(hi) * 0.02 or 0.1
        ax.set_ylim(lo - pad, hi + pad)


def comparison_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    fig = Figure(figsize=(max(9, 2.5 * len(budgets) + 6), 7), layout="constrained")
    axes = fig.subplots(2, 2)
    panels = (("eval_loss", "eval loss", False), ("perplexity", "perplexity", False),
              ("trainable_params", "trainable parameters", True), ("train_time_s", "train time (s)", True))
    for ax, (metric, name, zero_based) in zip(axes.flat, panels):
        _grouped_bars(ax, df, metric, labels, budgets, colors, zero_based)
        ax.set_title(name + ("" if zero_based else " (axis not from 0)"))
        ax.set_ylabel(name)
    fig.suptitle("Strategy comparison: mean with 95% CI; dots are seeds")
    _style_legend(fig, labels, colors, budgets, None)
    return fig


def improvement_figure(df: pd.DataFrame, labels, budgets, colors) -> Figure:
    fig = Figure(figsize=(max(7, 2 * len(budgets) + 5), 4.5), layout="constrained")
    ax = fig.add_subplot()
    _grouped_bars(ax, df, "improvement", labels, budgets, colors)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("base eval loss − eval loss (higher is better)")
    ax.set_title("Improvement over the untrained base model: mean with 95% CI; dots are seeds")
    _style_legend(fig, labels, colors, budgets, None)
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
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    ax_train, ax_eval = fig.subplots(1, 2)
    styles = {b: LINESTYLES[i % len(LINESTYLES)] for i, b in enumerate(budgets)}
    drawn = {"train_loss": 0, "eval_loss": 0}
    for _, run in df.iterrows():
        metrics = read_metrics(run["run_dir"])
        for ax, key in ((ax_train, "train_loss"), (ax_eval, "eval_loss")):
            series = metrics[["step", key]].dropna()
            if series.empty:
                continue
            ax.plot(series["step"], series[key], color=colors[run["label"]], linestyle=styles[run["budget_label"]],
                    marker="o" if key == "eval_loss" else None, markersize=3, linewidth=1.2, alpha=0.75)
            if run["status"] != "done":  # where a failed run stopped
                ax.plot(series["step"].iloc[-1], series[key].iloc[-1], marker="x", color="red", markersize=8)
            drawn[key] += 1
    for ax, key, name in ((ax_train, "train_loss", "train loss"), (ax_eval, "eval_loss", "eval loss")):
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
        ax.set_title(f"{name} per run" + (" (red x: failed run's last point)" if key == "train_loss" else ""))
        ax.grid(True, alpha=0.3)
        if not drawn[key]:
            _no_data(ax, "no logged values")
    _style_legend(fig, labels, colors, budgets, "line")
    return fig


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


def _draw_grid(fig: Figure, ax, grid: pd.DataFrame, vmin: float, vmax: float, title: str):
    image = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax)
    ax.set_yticks(range(len(grid.index)), grid.index)
    layers = list(grid.columns)
    step = max(1, math.ceil(len(layers) / 32))  # keep layer tick labels from colliding
    ax.set_xticks(range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)])
    ax.set_xlabel("layer")
    ax.set_ylabel("role")
    ax.set_title(title, fontsize=10)
    if len(layers) <= ANNOTATE_MAX_LAYERS:
        middle = (vmin + vmax) / 2
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7 if len(layers) <= 24 else 6,
                        color="black" if value > middle else "white")
    return image


def heatmap_figure(rows: list[tuple[str, list[tuple[str, pd.Series, pd.DataFrame]]]]) -> Figure:
    """Rows of (label, [(budget, run, grid), ...]); one panel per (label, budget), one shared colour scale."""
    panels = [(label, item) for label, items in rows for item in items]
    values = np.concatenate([grid.to_numpy(dtype=float).ravel() for _, (_, _, grid) in panels])
    vmin, vmax = float(np.nanmin(values)), float(np.nanmax(values))
    n_layers = max(grid.shape[1] for _, (_, _, grid) in panels)
    n_roles = max(grid.shape[0] for _, (_, _, grid) in panels)
    fig = Figure(figsize=(max(6.0, 0.33 * n_layers + 2.5), len(panels) * (0.3 * n_roles + 1.2) + 0.6),
                 layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(panels), 1, squeeze=False)[:, 0])
    image = None
    for ax, (label, (budget, run, grid)) in zip(axes, panels):
        title = f"{label}, budget {budget} (seed {run['seed']}, {_params_text(run['trainable_params'])} params)"
        image = _draw_grid(fig, ax, grid, vmin, vmax, title)
    fig.colorbar(image, ax=list(axes), label="LoRA rank (mean over modules)", shrink=0.9)
    return fig


def _params_text(value) -> str:
    return "?" if pd.isna(value) else f"{int(value):,}"


def heatmap_figures(df: pd.DataFrame, labels, budgets, out_dir: Path) -> list[FigureFile]:
    grids = [(label, _first_grids(df, label, budgets)) for label in labels]
    grids = [(label, items) for label, items in grids if items]
    caption = "Planned rank per layer (columns) and module role (rows), from allocation.json: first seed per budget."
    if len(grids) > MAX_HEATMAP_FILES:
        return [_save(heatmap_figure(grids), out_dir, "rank_heatmap_all", "Rank allocation: all strategies", caption)]
    files, used = [], set()
    for label, items in grids:
        name = f"rank_heatmap_{slugify(label)}"
        while name in used:  # two labels that slugify alike
            name += "_"
        used.add(name)
        fig = heatmap_figure([(label, items)])
        fig.suptitle(f"Rank allocation: {label}")
        files.append(_save(fig, out_dir, name, f"Rank allocation: {label}", caption))
    return files


# --- all --------------------------------------------------------------------------------------


def render_all(df: pd.DataFrame, out_dir: str | Path) -> list[FigureFile]:
    """Write every figure into out_dir (PNG and SVG); returns them in report order."""
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
         "Train and eval loss from metrics.jsonl; colour = strategy, line style = budget."),
    ]
    files = []
    for name, title, build, caption in specs:
        fig = build(df, labels, budgets, colors)
        files.append(_save(fig, out_dir, name, title, caption))
    files.extend(heatmap_figures(df, labels, budgets, out_dir) if len(df) else [])
    return files
