"""Example generations: a few test prompts with the base model's answer and each group's, side by side."""

from __future__ import annotations

import pandas as pd

from ..schema import read_predictions
from .blocks import Heading, Para, Pre, Table, fmt_num
from .collect import budget_order, done_runs, label_order
from .compare import final_runs

N_EXAMPLES = 4
PROMPT_CHARS = 600


def example_blocks(df: pd.DataFrame, n: int = N_EXAMPLES) -> list:
    """The first `n` test rows at the largest budget, lowest seed: base and every group's prediction."""
    done = done_runs(final_runs(df)) if len(df) else df
    if done.empty or "test_rouge_l" not in done or done["test_rouge_l"].isna().all():
        return []
    budget = budget_order(done)[-1]
    at = done[done["budget_label"].isin([budget, "own"])]
    seed = int(at["seed"].min())
    at = at[at["seed"] == seed]
    predictions = {label: _test_rows(at[at["label"] == label]["run_dir"].iloc[0]) for label in label_order(at)}
    if not predictions:
        return []
    first = next(iter(predictions.values()))
    base = first["base"]
    rows = sorted(first["adapter"])[:n]
    blocks = [
        Heading(2, "Example generations"),
        Para(
            f"The first {len(rows)} test rows, greedy decoding; budget {budget}, seed {seed}. "
            "Exact match applies to verifiable rows only (— otherwise).",
            "note",
        ),
    ]
    for i, row_id in enumerate(rows, 1):
        reference = first["adapter"][row_id]
        prompt = reference["prompt"]
        blocks += [
            Heading(3, f"Example {i} (test row {row_id})"),
            Pre(prompt if len(prompt) <= PROMPT_CHARS else prompt[:PROMPT_CHARS] + " …"),
        ]
        table = [["reference", reference["reference"], "", ""]]
        if row_id in base:
            table.append(["base model", *_cells(base[row_id])])
        for label, found in predictions.items():
            if row_id in found["adapter"]:
                table.append([label, *_cells(found["adapter"][row_id])])
        blocks.append(Table(["Model", "Output", "Exact match", "ROUGE-L"], table, numeric={2, 3}))
    return blocks


def _test_rows(run_dir: str) -> dict[str, dict]:
    rows = {"adapter": {}, "base": {}}
    for row in read_predictions(run_dir):
        if row.get("split") == "test":
            rows["base" if row.get("source") == "base" else "adapter"][row["row"]] = row
    return rows


def _cells(row: dict) -> list[str]:
    match = row.get("exact_match")
    return [row.get("prediction") or "", "—" if match is None else ("yes" if match else "no"), fmt_num(row.get("rouge_l"), 3)]
