"""The search section of a final-stage sweep's report (adaptive-lora search): history, importances, the best
allocation's layer x role ranks. Read from search.json (schema.read_search_record); absent for other sweeps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure as MplFigure

from ..schema import ROLES, read_search_record
from .blocks import DASH, Figure, Heading, Para, Table, fmt_int, fmt_num
from .plotting import save_figure


def search_blocks(sweep: Path, figures_dir: Path) -> list:
    record, problem = read_search_record(sweep)
    if record is None:
        return [Heading(2, "Search"), Para(f"search.json could not be read: {problem}", "warning")] if problem else []
    trials = record["trials"]
    states = {s: sum(t["state"] == s for t in trials) for s in ("complete", "pruned", "fail")}
    tokens = sum(t.get("tokens") or 0 for t in trials)
    uniform = record.get("uniform") or {}
    blocks = [
        Heading(2, "Search"),
        Para(
            f"{len(trials)} trials at budget {record['budget']['label']} ({record['budget']['params']:,} parameters): "
            f"{states['complete']} complete, {states['pruned']} pruned early, {states['fail']} failed; {tokens:,} training tokens "
            f"in all. Uniform's learning rate ({_rate(uniform.get('learning_rate'))}) is its best trial's in the same study. "
            "The runs above retrain the best allocations and uniform with fresh seeds; their test comparison is the verdict."
        ),
        Para(
            "Validation losses in this section are the search's own: one seed, and the best of many trials, so they are "
            "optimistic by selection. They chose the candidates; they are not evidence that a candidate beats uniform.",
            "note",
        ),
    ]
    rows = [
        [c["label"], fmt_int(c["trial"]), _rate(c["learning_rate"]), fmt_num(c["value"])]
        for c in ([uniform | {"label": "uniform"}] if uniform else []) + list(record.get("candidates") or [])
    ]
    if rows:
        blocks.append(Table(["Candidate", "Trial", "Learning rate", "Search validation loss"], rows, numeric={1, 2, 3}))
    for name, title, caption, draw in _figures(record):
        try:
            blocks.append(Figure(save_figure(draw(record), figures_dir, name, title, caption)))
        except (ValueError, KeyError, TypeError) as exc:  # one figure missing beats no report
            blocks.append(Para(f"figure {name} failed: {type(exc).__name__}: {exc}", "warning"))
    return blocks


def _rate(value) -> str:
    return f"{float(value):.3g}" if isinstance(value, (int, float)) and math.isfinite(value) else DASH


def _figures(record: dict) -> list:
    figures = [
        (
            "search_history",
            "Search history",
            "Best validation loss so far against trials (left) and against training tokens spent (right); dots: each "
            "complete trial's validation loss, crosses: pruned trials at their last validation.",
            history_figure,
        )
    ]
    if record.get("importances"):
        figures.append(
            (
                "search_importance",
                "Parameter importances",
                "Optuna's parameter importances (its default evaluator).",
                importance_figure,
            )
        )
    if record.get("best") and record["best"].get("modules"):
        figures.append(
            (
                "search_best_allocation",
                "Best allocation",
                "Rank per layer and role of the search's best allocation at the budget.",
                best_heatmap,
            )
        )
    return figures


def history_figure(record: dict) -> MplFigure:
    trials = sorted(record["trials"], key=lambda t: t["number"])
    fig = MplFigure(figsize=(10, 4), layout="constrained")
    by_trials, by_tokens = fig.subplots(1, 2, sharey=True)
    spent, best, xs, ts, bests = 0, math.inf, [], [], []
    for t in trials:
        spent += t.get("tokens") or 0
        if t["state"] == "complete" and t.get("value") is not None:
            best = min(best, t["value"])
            by_trials.plot(t["number"], t["value"], "o", color="0.6", markersize=4)
            by_tokens.plot(spent, t["value"], "o", color="0.6", markersize=4)
        elif t["state"] == "pruned" and t.get("intermediate"):
            last = t["intermediate"][-1][1]
            by_trials.plot(t["number"], last, "x", color="0.6", markersize=4)
            by_tokens.plot(spent, last, "x", color="0.6", markersize=4)
        if math.isfinite(best):
            xs.append(t["number"])
            ts.append(spent)
            bests.append(best)
    by_trials.step(xs, bests, where="post", color="C0", label="best so far")
    by_tokens.step(ts, bests, where="post", color="C0")
    by_trials.set_xlabel("trial")
    by_tokens.set_xlabel("training tokens spent")
    by_trials.set_ylabel("validation loss")
    by_trials.legend(frameon=False)
    for ax in (by_trials, by_tokens):
        ax.grid(True, alpha=0.3)
    return fig


def importance_figure(record: dict) -> MplFigure:
    items = sorted(record["importances"].items(), key=lambda kv: kv[1])
    fig = MplFigure(figsize=(6, 0.4 * len(items) + 1.2), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    ax.set_xlabel("importance (sums to 1)")
    return fig


def best_heatmap(record: dict) -> MplFigure:
    modules = record["best"]["modules"]
    layers = sorted({m["layer"] for m in modules})
    roles = [r for r in ROLES if any(m["role"] == r for m in modules)]
    grid = np.full((len(roles), len(layers)), np.nan)
    for m in modules:
        grid[roles.index(m["role"]), layers.index(m["layer"])] = m["rank"]
    fig = MplFigure(figsize=(max(4.0, 0.3 * len(layers) + 1.5), 0.35 * len(roles) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(grid, aspect="auto", cmap="viridis")
    ax.set_yticks(range(len(roles)), roles)
    step = max(1, math.ceil(len(layers) / 32))
    ax.set_xticks(range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)])
    ax.set_xlabel("layer")
    ax.set_ylabel("role")
    ax.set_title(f"{record['best']['label']} (learning rate {record['best']['learning_rate']:.3g})", fontsize=9)
    fig.colorbar(image, ax=ax, label="LoRA rank")
    return fig
