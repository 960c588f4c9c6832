"""Instruction data: sources, prompt formats, prompt-masked tokenization, splits and the data report.

Typical use (training):

    data = prepare_data(cfg.data, tokenizer, cfg.training.sequence_len)
    collate = Collator(tokenizer)
    write_json(run_dir / "data_report.json", data.report.to_dict())

Modules: sources (reading files / datasets / hub), skills (the generated verifiable set), records
(row -> normalized record with optional task/difficulty/verifiable labels), prompts (alpaca / chat /
seed), tokenization (masking, over-length, collator), split (train/validation/test split + hashes),
prepare (the pipeline), inspection (what `adaptive-lora data inspect` prints).
"""

from .prepare import PreparedData, load_records, prepare_data
from .prompts import FORMATS, render, resolve_prompt_format
from .report import REASONS, BadRow, DataReport
from .skills import generate_skills
from .split import SplitIndices, content_hash, split_hash, split_indices
from .tokenization import IGNORE, Collator, build_example

__all__ = [
    "FORMATS",
    "IGNORE",
    "REASONS",
    "BadRow",
    "Collator",
    "DataReport",
    "PreparedData",
    "SplitIndices",
    "build_example",
    "content_hash",
    "generate_skills",
    "load_records",
    "prepare_data",
    "render",
    "resolve_prompt_format",
    "split_hash",
    "split_indices",
]
