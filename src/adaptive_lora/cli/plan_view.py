"""Text and JSON views of an `Allocation` for `adaptive-lora plan`."""

from __future__ import annotations

from typing import Any

from ..allocation import Allocation
from ..schema import ROLES


def plan_json(allocation: Allocation) -> dict[str, Any]:
    data = allocation.to_dict()
    return {
        "strategy": data["strategy"],
        "params": data["params"],
        "alpha_policy": data["alpha_policy"],
        "trainable_params": data["trainable_params"],
        "total_params": data["total_params"],
        "efficiency_pct": data["efficiency_pct"],
        "budget": data["budget"],
        "summary": {k: v for k, v in allocation.summary().items() if k != "params_by_layer"},
        "modules": [{k: m[k] for k in ("name", "layer", "role", "rank", "alpha")} for m in data["modules"]],
        "zero_rank_modules": allocation.meta.get("zero_rank_modules", []),
    }


def format_plan(allocation: Allocation, model: str = "") -> str:
    """A layer x role table of ranks, then totals and the budget line."""
    table = allocation.layer_role_table()
    roles = [r for r in ROLES if any(r in row for row in table.values())]
    per_layer = allocation.summary()["params_by_layer"]
    header = ["layer", *roles, "params"]
    rows = [[str(layer), *[_fmt_rank(table[layer].get(r)) for r in roles], f"{per_layer[layer]:,}"] for layer in table]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = [
        f"{allocation.strategy} {_fmt_params(allocation.params)} on {model or allocation.anatomy.model_type} "
        f"({allocation.anatomy.num_layers} layers, {len(allocation.ranks)} modules), alpha policy {allocation.alpha_policy}",
        "  ".join(h.rjust(w) for h, w in zip(header, widths)),
        *("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows),
        f"trainable parameters: {allocation.trainable_params:,} ({allocation.efficiency_pct:.3f}% of {allocation.total_params:,} base)",
    ]
    target = allocation.budget.get("target")
    if target is not None:
        diff = allocation.trainable_params - target
        lines.append(f"budget: target {target:,}, achieved {allocation.trainable_params:,} ({diff:+,})")
    zero = allocation.meta.get("zero_rank_modules")
    if zero:
        lines.append(f"modules given rank 0 (not adapted): {len(zero)}, e.g. {zero[0]}")
    return "\n".join(lines)


def _fmt_rank(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _fmt_params(params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if v is not None}
    return "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else ""
