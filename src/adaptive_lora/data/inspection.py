"""What a data source looks like to training, before training (`adaptive-lora data inspect SOURCE`).

Prints rows read/kept/dropped (by reason, with the first row numbers), the share of rows with an
input, the task families and difficulty levels when rows carry them, how many rows are
verifiable (exact match applies), token-length percentiles of prompt and response under the
model's tokenizer, how many rows exceed --sequence-len, and the first example with its masked
prompt span marked.
"""

from __future__ import annotations

from collections import Counter

from ..errors import UserError
from .prepare import load_records
from .prompts import render, resolve_prompt_format
from .tokenization import encode_texts


def parse_field_map(items: list[str] | None) -> dict[str, str]:
    """["instruction=question", "output=answer"] -> {"instruction": "question", "output": "answer"}."""
    field_map = {}
    for item in items or []:
        key, sep, column = item.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise UserError(f"--field-map {item!r} is not FIELD=COLUMN (e.g. --field-map instruction=question)")
        field_map[key.strip()] = column.strip()
    return field_map


def inspect_source(
    source: str, tokenizer, prompt_format: str = "auto", sequence_len: int = 256, field_map: dict | None = None
) -> dict:
    """The inspection summary as a JSON-able dict (what --json prints)."""
    if sequence_len < 2:
        raise UserError(f"--sequence-len must be >= 2, got {sequence_len}")
    prompt_format = resolve_prompt_format(prompt_format, tokenizer)
    records, report = load_records(source, field_map)
    encoded = encode_texts([render(r, tokenizer, prompt_format) for r in records], tokenizer)
    prompt_lens = [len(e.prompt_ids) for e in encoded]
    response_lens = [len(e.response_ids) for e in encoded]
    first = encoded[0]
    return {
        "source": source,
        "path": report.path,
        "source_kind": report.source_kind,
        "row_unit": report.row_unit,
        "prompt_format": prompt_format,
        "sequence_len": sequence_len,
        "rows_read": report.rows_read,
        "rows_kept": report.rows_kept,
        "dropped": report.dropped,
        "first_bad_rows": report.first_bad_rows,
        "with_input_share": report.with_input_share,
        **label_counts(records),
        "tokens": {
            "prompt": percentiles(prompt_lens),
            "response": percentiles(response_lens),
            "total": percentiles([len(e) for e in encoded]),
        },
        "over_sequence_len": sum(len(e) > sequence_len for e in encoded),
        "prompt_over_sequence_len": sum(n >= sequence_len for n in prompt_lens),
        "example": {
            "row": records[0]["row"],
            "prompt": tokenizer.decode(first.prompt_ids),
            "response": tokenizer.decode(first.response_ids),
            "prompt_tokens": len(first.prompt_ids),
            "response_tokens": len(first.response_ids),
        },
    }


def label_counts(records: list[dict]) -> dict:
    """{"tasks": {family: rows}, "difficulties": {"1": rows, ...}} (each only when rows carry it) and
    {"verifiable": rows whose output is exactly checkable}."""
    metas = [record.get("meta", {}) for record in records]
    counts = {}
    tasks = Counter(meta["task"] for meta in metas if "task" in meta)
    if tasks:
        counts["tasks"] = dict(sorted(tasks.items()))
    levels = Counter(meta["difficulty"] for meta in metas if "difficulty" in meta)
    if levels:
        counts["difficulties"] = {str(level): n for level, n in sorted(levels.items())}
    counts["verifiable"] = sum(bool(meta.get("verifiable")) for meta in metas)
    return counts


def percentiles(values: list[int]) -> dict[str, float]:
    import numpy as np

    p50, p90, p99 = np.percentile(values, [50, 90, 99], method="nearest")
    return {"p50": int(p50), "p90": int(p90), "p99": int(p99), "max": int(max(values)), "mean": round(float(np.mean(values)), 1)}


def summary_lines(summary: dict) -> list[str]:
    dropped = sum(summary["dropped"].values())
    lines = [
        f"source: {summary['path']} ({summary['source_kind']})",
        f"rows: {summary['rows_read']} read, {summary['rows_kept']} kept, {dropped} dropped",
    ]
    for reason, count in summary["dropped"].items():
        first = summary["first_bad_rows"].get(reason, [])
        more = ", ..." if count > len(first) else ""
        lines.append(f"  {reason}: {count} ({row_unit(summary)}s {', '.join(map(str, first))}{more})")
    lines.append(f"with input: {100 * summary['with_input_share']:.1f}% of kept rows")
    if summary.get("tasks"):
        tasks = ", ".join(f"{task} {n}" for task, n in summary["tasks"].items())
        lines.append(f"tasks ({len(summary['tasks'])}): {tasks}")
    if summary.get("difficulties"):
        lines.append("difficulty: " + ", ".join(f"{level}: {n}" for level, n in summary["difficulties"].items()))
    if "verifiable" in summary:
        lines.append(f"verifiable (exact match applies): {summary['verifiable']} of {summary['rows_kept']} kept rows")
    lines.append(f"prompt format: {summary['prompt_format']} (model {summary.get('model', '?')})")
    lines.append(f"{'tokens':<10}{'p50':>7}{'p90':>7}{'p99':>7}{'max':>7}{'mean':>8}")
    for part, stats in summary["tokens"].items():
        lines.append(f"  {part:<8}{stats['p50']:>7}{stats['p90']:>7}{stats['p99']:>7}{stats['max']:>7}{stats['mean']:>8}")
    n = summary["sequence_len"]
    lines.append(
        f"over sequence_len {n}: {summary['over_sequence_len']} rows (response cut under overlength=truncate), "
        f"{summary['prompt_over_sequence_len']} with a prompt alone >= {n} tokens (dropped)"
    )
    return lines


def row_unit(summary: dict) -> str:
    return summary.get("row_unit", "row")
