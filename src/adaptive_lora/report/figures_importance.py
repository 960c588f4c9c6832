"""Figures for data-driven and dynamic allocation, from each run's allocation.json (no torch needed).

    importance_scores   role x layer heatmap of the importance scores a strategy measured
                        (gradient sensitivity / Fisher, spectrum, EVA ranks, AdaLoRA's final triplet
                        scores), each run scaled to its own maximum, averaged over seeds
    adalora_ranks       for AdaLoRA runs: initial vs final rank (role x layer, mean over seeds) and
                        the mean rank of each role over training (meta["rank_history"])

Use from a report:

    runs = runs_from_frame(df)                        # [(display label, allocation.json dict), ...]
    for name, title, caption, fig in importance_figure_specs(runs):
        files.append(_save(fig, out_dir, name, title, caption))
    # or: importance_figures(runs) -> {name: PNG bytes}
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ..schema import ROLES, try_read_allocation
from .plotting import png_bytes

Run = tuple[str, dict[str, Any]]


# --- reading -------------------------------------------------------------------------------------


def runs_from_frame(df) -> list[Run]:
    """(label [budget], allocation.json) for every finished run in a report's runs frame
    (columns label, budget_label, status, run_dir, seed), in seed order."""
    runs = []
    rows = df[df["status"] == "done"].sort_values(["label", "budget_label", "seed"]) if len(df) else df
    for _, row in rows.iterrows():
        allocation = read_allocation(row["run_dir"])
        if allocation is not None:
            runs.append((f"{row['label']} [{row['budget_label']}]", allocation))
    return runs


def read_allocation(run_dir: str | Path) -> dict[str, Any] | None:
    record = try_read_allocation(run_dir)
    return record.to_dict() if record is not None else None


def _placement(allocation: dict[str, Any]) -> tuple[dict[str, int], dict[str, str]]:
    """Layer and role of every module name: from `modules`, and for modules not adapted (rank 0,
    so absent there) from their name: the layer index in it and the role of the same leaf name."""
    layers = {m["name"]: int(m["layer"]) for m in allocation["modules"]}
    roles = {m["name"]: m["role"] for m in allocation["modules"]}
    leaf_role = {name.rsplit(".", 1)[-1]: role for name, role in roles.items()}
    names = set(allocation.get("scores") or {}) | set((allocation.get("meta") or {}).get("initial_ranks") or {})
    for name in names - set(layers):
        number = re.search(r"\.(\d+)\.", name)
        if number:
            layers[name] = int(number.group(1))
            roles[name] = leaf_role.get(name.rsplit(".", 1)[-1], "other")
    return layers, roles


def _grid(values: dict[str, float], layers: dict[str, int], roles: dict[str, str]) -> tuple[list[str], list[int], np.ndarray]:
    """roles x layers mean of `values` (NaN where no module)."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for name, value in values.items():
        if name in layers and value is not None and math.isfinite(float(value)):
            cells[(roles[name], layers[name])].append(float(value))
    role_list = [r for r in ROLES if any(k[0] == r for k in cells)] + sorted({k[0] for k in cells} - set(ROLES))
    layer_list = sorted({k[1] for k in cells})
    grid = np.full((len(role_list), len(layer_list)), np.nan)
    for (role, layer), v in cells.items():
        grid[role_list.index(role), layer_list.index(layer)] = sum(v) / len(v)
    return role_list, layer_list, grid


def _mean_grids(grids: list[tuple[list[str], list[int], np.ndarray]]):
    """Average grids of the same label (same model: same roles and layers); ignores mismatching ones."""
    roles, layers, first = grids[0]
    same = [g for r, lay, g in grids if r == roles and lay == layers]
    with np.errstate(all="ignore"):
        return roles, layers, np.nanmean(np.stack(same), axis=0) if len(same) > 1 else first, len(same)


# --- figures -------------------------------------------------------------------------------------


def score_groups(runs: list[Run]) -> dict[str, tuple[list[str], list[int], np.ndarray, int, str]]:
    """label -> (roles, layers, mean normalised score grid, runs averaged, strategy)."""
    grouped: dict[str, list] = defaultdict(list)
    strategy = {}
    for label, allocation in runs:
        scores = allocation.get("scores")
        if not isinstance(scores, dict) or not scores:
            continue
        top = max((abs(float(v)) for v in scores.values() if v is not None and math.isfinite(float(v))), default=0.0)
        if top <= 0:
            continue
        layers, roles = _placement(allocation)
        grouped[label].append(_grid({n: float(v) / top for n, v in scores.items() if v is not None}, layers, roles))
        strategy[label] = allocation.get("strategy", "?")
    return {label: (*_mean_grids(grids), strategy[label]) for label, grids in grouped.items()}


def adalora_groups(runs: list[Run]) -> dict[str, dict[str, Any]]:
    """label -> initial / final grids (mean over seeds) and mean rank per role over training steps."""
    grouped: dict[str, list] = defaultdict(list)
    for label, allocation in runs:
        meta = allocation.get("meta") or {}
        if not meta.get("initial_ranks"):
            continue
        layers, roles = _placement(allocation)
        final = {n: 0 for n in meta["initial_ranks"]} | {m["name"]: m["rank"] for m in allocation["modules"]}
        grouped[label].append(
            (_grid(meta["initial_ranks"], layers, roles), _grid(final, layers, roles), _role_history(meta, roles))
        )
    out = {}
    for label, items in grouped.items():
        r, lay, initial, n = _mean_grids([i for i, _, _ in items])
        _, _, final, _ = _mean_grids([f for _, f, _ in items])
        out[label] = {"roles": r, "layers": lay, "initial": initial, "final": final, "runs": n, "history": items[0][2]}
    return out


def _role_history(meta: dict[str, Any], roles: dict[str, str]) -> dict[str, tuple[list[int], list[float]]]:
    history = meta.get("rank_history") or {}
    modules, steps, ranks = history.get("modules") or [], history.get("steps") or [], history.get("ranks") or []
    by_role: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(modules):
        by_role[roles.get(name, "other")].append(i)
    return {role: (steps, [sum(snapshot[i] for i in idx) / len(idx) for snapshot in ranks]) for role, idx in by_role.items()}


def _draw(ax, roles, layers, grid, title, vmin, vmax, cmap="viridis"):
    image = ax.imshow(grid, aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_yticks(range(len(roles)), roles)
    step = max(1, math.ceil(len(layers) / 32))
    ax.set_xticks(
        range(0, len(layers), step),
        [str(layers[i]) for i in range(0, len(layers), step)],
        fontsize=8 if len(layers) > 16 else None,
    )
    ax.set_xlabel("layer")
    ax.set_ylabel("role")
    ax.set_title(title, fontsize=9)
    return image


def importance_score_figure(groups) -> Figure | None:
    if not groups:
        return None
    n_layers = max(len(g[1]) for g in groups.values())
    fig = Figure(figsize=(max(5.0, 0.25 * n_layers + 2.0), 1.9 * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    image = None
    for ax, (label, (roles, layers, grid, n, strategy)) in zip(axes, groups.items()):
        image = _draw(ax, roles, layers, grid, f"{label} ({strategy}, mean of {n} run{'s' * (n != 1)})", 0.0, 1.0, "magma")
    fig.colorbar(image, ax=list(axes), label="score / run maximum", shrink=0.9 if len(groups) <= 3 else 0.4)
    return fig


def adalora_rank_figure(groups) -> Figure | None:
    if not groups:
        return None
    n_layers = max(len(g["layers"]) for g in groups.values())
    width = max(4.0, 0.22 * n_layers + 1.5)
    fig = Figure(figsize=(2 * width + 4.5, 2.2 * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), 3, squeeze=False, width_ratios=[width, width, 4.0])
    vmax = max(float(np.nanmax(g["initial"])) for g in groups.values())
    image = None
    for row, (label, g) in zip(axes, groups.items()):
        suffix = f"mean of {g['runs']} run{'s' * (g['runs'] != 1)}"
        _draw(row[0], g["roles"], g["layers"], g["initial"], f"{label}: initial rank", 0.0, vmax)
        image = _draw(row[1], g["roles"], g["layers"], g["final"], f"{label}: final rank ({suffix})", 0.0, vmax)
        for role, (steps, mean) in g["history"].items():
            row[2].plot(steps, mean, label=role)
        row[2].set_xlabel("step")
        row[2].set_ylabel("mean rank")
        row[2].set_title("rank by role during training (first seed)", fontsize=9)
        if g["history"]:
            row[2].legend(fontsize=7, ncol=2)
    fig.colorbar(image, ax=list(axes[:, :2].ravel()), label="rank", shrink=0.9 if len(groups) <= 3 else 0.4)
    return fig


def importance_figure_specs(runs: list[Run]) -> list[tuple[str, str, str, Figure]]:
    """(file name, title, caption, Figure) for each figure that has data; [] when no run measured anything."""
    specs = []
    fig = importance_score_figure(score_groups(runs))
    if fig is not None:
        specs.append(
            (
                "importance_scores",
                "Importance scores by layer and role",
                fig,
                "What each data-driven strategy measured per module (gradient sensitivity or Fisher, spectral rank, "
                "EVA's rank pattern, AdaLoRA's final triplet importance), scaled to each run's maximum and averaged over seeds.",
            )
        )
    fig = adalora_rank_figure(adalora_groups(runs))
    if fig is not None:
        specs.append(
            (
                "adalora_ranks",
                "Where AdaLoRA put its rank",
                fig,
                "AdaLoRA starts every module at init_r (left) and prunes to the parameter budget; middle: the final ranks "
                "(0 = pruned away), averaged over seeds; right: mean rank per role over training.",
            )
        )
    return [(name, title, caption, figure) for name, title, figure, caption in specs]


def importance_figures(runs: list[Run]) -> dict[str, bytes]:
    """{file name: PNG bytes} of every importance figure that has data."""
    out = {}
    for name, _title, _caption, fig in importance_figure_specs(runs):
        out[name] = png_bytes(fig)
    return out
