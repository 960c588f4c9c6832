"""Instruction data: sources, prompt formats, prompt-masked tokenization, splits and the data report.

Typical use (training):

    data = prepare_data(cfg.data, tokenizer, cfg.training.sequence_len)
    collate = Collator(tokenizer)
    write_json(run_dir / "data_report.json", data.report.to_dict())

Modules: sources (reading files / datasets / hub), records (row -> normalized record), prompts
(alpaca / chat / seed), tokenization (masking, over-length, collator), split (split + hash),
prepare (the pipeline), inspection (`adaptive-lora data inspect`).
"""

from .prepare import PreparedData, load_records, prepare_data
from .prompts import FORMATS, render, resolve_prompt_format
from .report import REASONS, BadRow, DataReport
from .split import content_hash, split_indices
from .tokenization import IGNORE, Collator, build_example, length_grouped_order

__all__ = [
    "FORMATS",
    "IGNORE",
    "REASONS",
    "BadRow",
    "Collator",
    "DataReport",
    "PreparedData",
    "build_example",
    "cmd_data_inspect",
    "content_hash",
    "length_grouped_order",
    "load_records",
    "prepare_data",
    "render",
    "resolve_prompt_format",
    "split_indices",
]


def cmd_data_inspect(args):
    """`adaptive-lora data inspect` (imported lazily by the CLI)."""
    from .inspection import cmd_data_inspect as run

    return run(args)
