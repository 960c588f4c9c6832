"""Regenerate src/adaptive_lora/resources/builtin.md from builtin.jsonl (counts and lengths).

Run: .venv/bin/python scripts/make_datasheet.py
"""

import json
from collections import Counter
from pathlib import Path

import numpy as np

from adaptive_lora.models import load_tokenizer

RESOURCES = Path(__file__).resolve().parents[1] / "src" / "adaptive_lora" / "resources"

rows = [json.loads(line) for line in (RESOURCES / "builtin.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
tokenizer = load_tokenizer("embedded")


def tokens(text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def stats(values: list[int]) -> str:
    v = np.array(values)
    return f"{v.mean():.0f} / {np.median(v):.0f} / {np.percentile(v, 90):.0f} / {v.max()}"


by_task = Counter(r["task"] for r in rows)
with_input = Counter(r["task"] for r in rows if r["input"].strip())
lines = [
    "# Built-in instruction dataset (`builtin`)",
    "",
    "Written for adaptive-lora by its developers: no row is copied or paraphrased from Stanford Alpaca or any",
    "other dataset. Alpaca schema (`instruction`, `input`, `output`) plus a `task` label. License: Apache-2.0,",
    "like the package.",
    "",
    f"- rows: {len(rows)}; with a non-empty `input`: {sum(with_input.values())} ({100 * sum(with_input.values()) / len(rows):.0f}%)",
    f"- task types: {len(by_task)}",
    "- math answers were computed in Python and code answers were run against tests when the rows were written.",
    "",
    "| task | rows | with input |",
    "| --- | --- | --- |",
    *(f"| {task} | {n} | {with_input[task]} |" for task, n in sorted(by_task.items())),
    "",
    "Lengths in SmolLM2 tokens (mean / median / p90 / max):",
    "",
    "| field | tokens |",
    "| --- | --- |",
    f"| instruction | {stats([tokens(r['instruction']) for r in rows])} |",
    f"| input (non-empty) | {stats([tokens(r['input']) for r in rows if r['input'].strip()])} |",
    f"| output | {stats([tokens(r['output']) for r in rows])} |",
    "",
    "Regenerate this sheet with `.venv/bin/python scripts/make_datasheet.py`.",
]
(RESOURCES / "builtin.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
print("\n".join(lines))
