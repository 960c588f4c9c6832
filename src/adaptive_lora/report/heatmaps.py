"""Rank heatmaps: the planned rank of every module, as role x layer grids, per strategy and budget."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..schema import ROLES, try_read_allocation
from .plotting import FigureFile, save_figure, slugify

MAX_HEATMAP_FILES = 8  # more labels than this: one grid figure instead of one file per label
ANNOTATE_MAX_LAYERS = 40


def rank_grid(run_dir: str | Path) -> pd.DataFrame | None:
    """Role x layer mean rank from allocation.json, or None when it is missing or unreadable."""
    record = try_read_allocation(run_dir)
    if record is None or not record.modules:
        return None
    modules = pd.DataFrame([{"layer": m.layer, "role": m.role, "rank": m.rank} for m in record.modules])
    grid = modules.pivot_table(index="role", columns="layer", values="rank", aggfunc="mean")
    order = [r for r in ROLES if r in grid.index] + sorted(set(grid.index) - set(ROLES))
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
    ax.set_xticks(
        range(0, len(layers), step),
        [str(layers[i]) for i in range(0, len(layers), step)],
        fontsize=8 if len(layers) > 16 else None,
    )
    ax.set_xlabel("layer")
    ax.set_ylabel("role")
    ax.set_title(title, fontsize=9)
    if annotate:
        middle = (vmin + vmax) / 2
        for (i, j), value in np.ndenumerate(grid.to_numpy(dtype=float)):
            if np.isfinite(value):
                text = f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=7 if len(layers) <= 24 else 6,
                    color="black" if value > middle else "white",
                )
    return image


def heatmap_figure(
    rows: list[tuple[str, list[tuple[str, pd.Series, pd.DataFrame]]]], budgets, by_budget_column: bool = False
) -> Figure:
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
    fig = Figure(figsize=(len(columns) * panel_width + 1.3, n_rows * (0.3 * n_roles + 1.1) + 0.6), layout="constrained")
    axes = fig.subplots(n_rows, len(columns), squeeze=False)
    annotate = n_layers <= ANNOTATE_MAX_LAYERS and (panel_width - 1.2) / n_layers >= 0.25  # room for "16"
    if by_budget_column:  # (row, column, label, panel)
        positions = [(r, columns.index(item[0]), label, item) for r, (label, found) in enumerate(rows) for item in found]
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
    fig.colorbar(image, ax=axes.ravel().tolist(), label="LoRA rank (mean over modules)", shrink=0.9 if n_rows <= 3 else 0.4)
    return fig


def _params_text(value) -> str:
    return "?" if pd.isna(value) else f"{int(value):,}"


def heatmap_figures(df: pd.DataFrame, labels, budgets, out_dir: Path) -> list[FigureFile]:
    grids = [(label, _first_grids(df, label, budgets)) for label in labels]
    grids = [(label, items) for label, items in grids if items]
    caption = "Planned rank per layer (columns) and module role (rows), from allocation.json: first seed per budget."
    if len(grids) > MAX_HEATMAP_FILES:
        fig = heatmap_figure(grids, budgets, by_budget_column=True)
        return [save_figure(fig, out_dir, "rank_heatmap_all", "Rank allocation: all strategies", caption)]
    files, used = [], set()
    for label, items in grids:
        name = f"rank_heatmap_{slugify(label)}"
        while name in used:  # two labels that slugify alike
            name += "_"
        used.add(name)
        fig = heatmap_figure([(label, items)], budgets)
        fig.suptitle(f"Rank allocation: {label}")
        files.append(save_figure(fig, out_dir, name, f"Rank allocation: {label}", caption))
    return files


def remove_stale_heatmaps(out_dir: Path, current: set[str]) -> None:
    """A re-render after labels changed must not leave old heatmaps beside the new ones."""
    for path in out_dir.glob("rank_heatmap_*"):
        if path.suffix in (".png", ".svg") and path.stem not in current:
            path.unlink(missing_ok=True)
