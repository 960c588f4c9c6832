"""Evaluation beyond the loss: greedy generation, exact match and ROUGE-L, prediction rows, forgetting.

    metrics, rows = evaluate_generation(model, tokenizer, records, prompt_format, cfg.eval, device, "test")
    write_predictions(run_dir, rows)                      # schema: predictions.jsonl
    before = held_out_loss(model, tokenizer, other_records, prompt_format, 256, 8, device)

Modules: metrics (torch-free: normalize_answer, exact_match, rouge_l), generate (batched greedy
decoding), evaluate (a split's rows and metrics), forgetting (response loss on held-out text).
"""

from ..schema import read_predictions, write_predictions
from .evaluate import evaluate_generation, split_metrics
from .forgetting import held_out_loss
from .generate import Generation, greedy_generate, prompt_ids_for, stop_token_ids
from .metrics import exact_match, normalize_answer, rouge_l

__all__ = [
    "Generation",
    "evaluate_generation",
    "exact_match",
    "greedy_generate",
    "held_out_loss",
    "normalize_answer",
    "prompt_ids_for",
    "read_predictions",
    "rouge_l",
    "split_metrics",
    "stop_token_ids",
    "write_predictions",
]
