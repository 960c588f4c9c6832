"""From a `DataConfig` to tokenized train/validation/test examples and a `DataReport`.

The validation split keeps its historical names `eval` / `eval_records` (training and the
strategies read them); `test` is empty unless data.test_set_size > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError
from .prompts import render, resolve_prompt_format
from .records import check_field_map, has_input, normalize_row
from .report import BadRow, BadRows, DataReport
from .sources import read_source
from .split import content_hash, split_hash, split_indices
from .tokenization import IGNORE, check_overlength, encode_texts, fit, overlength_error, to_example


@dataclass
class PreparedData:
    train: list[dict]  # {"input_ids": [...], "labels": [...]}, labels -100 on prompt tokens
    eval: list[dict]
    report: DataReport
    prompt_format: str  # the resolved format (never "auto")
    train_records: list[dict] = field(default_factory=list)  # the normalized rows behind `train`
    eval_records: list[dict] = field(default_factory=list)
    test: list[dict] = field(default_factory=list)  # the test split: reported, never used to select
    test_records: list[dict] = field(default_factory=list)


def load_records(source: str, field_map: dict | None = None, strict: bool = False) -> tuple[list[dict], DataReport]:
    """Read and validate `source`: normalized records (each with its 1-based "row") and a report.

    Bad rows are skipped and counted by reason (strict: the first one is a UserError); a source
    with no usable rows is a UserError naming the file and the main reason.
    """
    records, report, _ = _load(source, field_map, strict)
    return records, report


def _load(source: str, field_map: dict | None, strict: bool) -> tuple[list[dict], DataReport, BadRows]:
    field_map = check_field_map(field_map)
    raw = read_source(source)
    report = DataReport(source=source, source_kind=raw.kind, path=raw.path, row_unit=raw.unit, rows_read=len(raw.rows))
    bad = BadRows(report, raw.path, raw.locate, strict)
    records = []
    for row, value in raw.rows:
        try:
            if isinstance(value, BadRow):
                raise value
            record = normalize_row(value, field_map)
        except BadRow as exc:
            bad.add(row, exc)
            continue
        record["row"] = row
        records.append(record)
    report.rows_kept = len(records)
    report.with_input_share = input_share(records)
    bad.check_none_left(len(records), len(raw.rows))
    return records, report, bad


def input_share(records: list[dict]) -> float:
    return round(sum(map(has_input, records)) / len(records), 4) if records else 0.0


def prepare_data(cfg, tokenizer, sequence_len: int) -> PreparedData:
    """Load, validate, split (by cfg.split_seed only; see split.py) and tokenize the data of a DataConfig."""
    check_overlength(cfg.overlength)
    if not isinstance(sequence_len, int) or sequence_len < 2:
        raise UserError(f"training.sequence_len must be a whole number >= 2, got {sequence_len!r}")
    prompt_format = resolve_prompt_format(cfg.prompt_format, tokenizer)
    records, report, bad = _load(cfg.source, cfg.field_map, cfg.strict)
    bad.check_fraction(report.n_dropped, report.rows_read, cfg.max_bad_fraction)
    split = split_indices(len(records), cfg.val_set_size, cfg.max_samples, cfg.split_seed, cfg.test_set_size)
    n_split = len(split.train) + len(split.validation) + len(split.test)
    report.rows_unused = len(records) - n_split
    dropped_before = report.n_dropped

    encode = _SplitEncoder(tokenizer, prompt_format, sequence_len, cfg, bad)
    eval_records, eval_examples = encode([records[i] for i in split.validation])
    test_records, test_examples = encode([records[i] for i in split.test])
    train_records, train_examples = encode([records[i] for i in split.train])
    bad.check_fraction(report.n_dropped - dropped_before, n_split, cfg.max_bad_fraction)
    for name, indices, kept in (
        ("train", split.train, train_examples),
        ("validation", split.validation, eval_examples),
        ("test", split.test, test_examples),
    ):
        if indices and not kept:
            raise UserError(
                f"no {name} rows of {report.path} fit training.sequence_len={sequence_len}; main reason: {bad.main_reason()}"
            )

    data = PreparedData(
        train_examples, eval_examples, report, prompt_format, train_records, eval_records, test_examples, test_records
    )
    _fill_report(data, cfg, sequence_len)
    report.truncated = encode.truncated
    return data


class _SplitEncoder:
    """Renders, tokenizes and fits the rows of one split, dropping (and counting) the ones that fail."""

    def __init__(self, tokenizer, prompt_format: str, sequence_len: int, cfg, bad: BadRows):
        self.tokenizer, self.prompt_format, self.sequence_len = tokenizer, prompt_format, sequence_len
        self.cfg, self.bad = cfg, bad
        self.truncated = 0

    def __call__(self, records: list[dict]) -> tuple[list[dict], list[dict]]:
        pairs = [render(r, self.tokenizer, self.prompt_format) for r in records]
        kept, examples = [], []
        for record, encoded in zip(records, encode_texts(pairs, self.tokenizer)):
            try:
                fitted, truncated = fit(encoded, self.sequence_len, self.cfg.overlength)
            except BadRow as exc:
                if exc.reason == "over_length" and self.cfg.overlength == "error":
                    raise overlength_error(self.bad.locate(record["row"]), exc) from None
                self.bad.add(record["row"], exc)
                continue
            self.truncated += truncated
            kept.append(record)
            examples.append(to_example(fitted, self.cfg.train_on_prompt))
        return kept, examples


def _fill_report(data: PreparedData, cfg, sequence_len: int) -> None:
    report = data.report
    report.prompt_format = data.prompt_format
    report.rows_kept = len(data.train) + len(data.eval) + len(data.test)
    report.with_input_share = input_share(data.train_records + data.eval_records + data.test_records)
    report.n_train, report.n_eval, report.n_test = len(data.train), len(data.eval), len(data.test)
    report.content_hash = content_hash(data.train_records, data.eval_records, data.test_records)
    report.split_hashes = {
        "train": split_hash(data.train_records),
        "validation": split_hash(data.eval_records),
        "test": split_hash(data.test_records),
    }
    report.tokens_train, report.supervised_tokens_train = token_counts(data.train)
    report.tokens_eval, report.supervised_tokens_eval = token_counts(data.eval)
    report.tokens_test, report.supervised_tokens_test = token_counts(data.test)
    report.sequence_len, report.overlength, report.train_on_prompt = sequence_len, cfg.overlength, cfg.train_on_prompt
    report.split_seed, report.val_set_size, report.max_samples = cfg.split_seed, cfg.val_set_size, cfg.max_samples
    report.test_set_size = cfg.test_set_size


def token_counts(examples: list[dict]) -> tuple[int, int]:
    """(all tokens, supervised tokens) over examples."""
    total = sum(len(e["input_ids"]) for e in examples)
    supervised = sum(sum(1 for label in e["labels"] if label != IGNORE) for e in examples)
    return total, supervised
