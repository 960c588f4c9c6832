"""Scoring a split by generation: one prediction row per record, and the split's metrics.

Exact match applies to verifiable rows only (record["meta"]["verifiable"]: a short, checkable
answer); ROUGE-L F1 to every row. Means over no rows are None, never NaN.

    metrics, rows = evaluate_generation(model, tokenizer, data.test_records, "chat", cfg.eval, device, "test")
    write_predictions(run_dir, rows)
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from ..config import EvalConfig
from ..data.prompts import render
from .generate import greedy_generate, prompt_ids_for
from .metrics import exact_match, mean_or_none, rouge_l


def evaluate_generation(
    model: nn.Module,
    tokenizer,
    records: list[dict],
    prompt_format: str,
    eval_config: EvalConfig,
    device: torch.device | str | None,
    split_name: str,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[dict, list[dict]]:
    """Greedy answers for (up to eval_config.max_rows of) `records`: (metrics, prediction rows)."""
    if eval_config.max_rows is not None:
        records = records[: max(eval_config.max_rows, 0)]
    generation = greedy_generate(
        model,
        tokenizer,
        prompt_ids_for(records, tokenizer, prompt_format),
        eval_config.max_new_tokens,
        eval_config.batch_size,
        device,
        autocast_dtype,
    )
    rows = [
        prediction_row(record, tokenizer, prompt_format, split_name, text, count)
        for record, text, count in zip(records, generation.texts, generation.new_tokens)
    ]
    metrics = split_metrics(rows)
    metrics["tokens_per_s"] = generation.tokens_per_s
    metrics["seconds"] = generation.seconds
    return metrics, rows


def prediction_row(record: dict, tokenizer, prompt_format: str, split: str, text: str, new_tokens: int) -> dict:
    meta = record.get("meta") or {}
    prediction = text.strip()
    reference = record["output"]
    return {
        "split": split,
        "row": record.get("row"),
        "task": meta.get("task"),
        "prompt": render(record, tokenizer, prompt_format)[0],
        "reference": reference,
        "prediction": prediction,
        "exact_match": exact_match(prediction, reference) if meta.get("verifiable") else None,
        "rouge_l": rouge_l(prediction, reference),
        "new_tokens": new_tokens,
    }


def split_metrics(rows: list[dict]) -> dict:
    """Means over prediction rows (as written to predictions.jsonl, so they can be recomputed from it)."""
    verifiable = [row for row in rows if row["exact_match"] is not None]
    by_task_em, by_task_rouge = defaultdict(list), defaultdict(list)
    for row in rows:
        if row["task"] is not None:
            by_task_rouge[row["task"]].append(row["rouge_l"])
            if row["exact_match"] is not None:
                by_task_em[row["task"]].append(row["exact_match"])
    return {
        "exact_match": mean_or_none([row["exact_match"] for row in verifiable]),
        "rouge_l": mean_or_none([row["rouge_l"] for row in rows]),
        "n_rows": len(rows),
        "n_verifiable": len(verifiable),
        "exact_match_by_task": {task: mean_or_none(values) for task, values in sorted(by_task_em.items())},
        "rouge_l_by_task": {task: mean_or_none(values) for task, values in sorted(by_task_rouge.items())},
    }
