"""The data report (what was read, kept and dropped, and why) and the bad-row bookkeeping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError

# Why a row can be dropped, in the order the report lists them.
REASONS = (
    "missing_field",
    "wrong_type",
    "empty_output",
    "invalid_json",
    "non_utf8",
    "over_length",
    "no_supervised_tokens",
)
FIRST_BAD_ROWS = 5  # row numbers kept per reason


class BadRow(Exception):
    """A row that cannot be used; `reason` is one of REASONS, the message says what is wrong."""

    def __init__(self, reason: str, detail: str):
        assert reason in REASONS, reason
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class DataReport:
    """Written by training as data_report.json; `adaptive-lora data inspect` prints most of it.

    Row numbers are 1-based: line numbers for JSONL, array index + 1 for JSON, data row (header
    not counted) for CSV, Parquet and datasets. Counts add up:
    rows_read == rows_kept + sum(dropped) + rows_unused, and rows_kept == n_train + n_eval + n_test.
    `eval` is the validation split (used for selection and curves); `test` is only reported.
    """

    source: str
    prompt_format: str = ""
    source_kind: str = ""  # json | jsonl | csv | parquet | disk | files | hub | builtin | skills
    path: str = ""  # resolved file or directory (or the hub id)
    row_unit: str = "row"  # what first_bad_rows count: "line" (JSONL) or "row"
    rows_read: int = 0
    rows_kept: int = 0
    rows_unused: int = 0  # valid rows left out by max_samples (never tokenized)
    dropped: dict[str, int] = field(default_factory=dict)
    first_bad_rows: dict[str, list[int]] = field(default_factory=dict)
    with_input_share: float = 0.0  # kept rows with a non-empty input (or earlier chat turns)
    n_train: int = 0
    n_eval: int = 0  # validation rows
    n_test: int = 0
    content_hash: str = ""  # sha256 of the normalized kept rows and their split membership (test rows last)
    split_hashes: dict[str, str] = field(default_factory=dict)  # {"train", "validation", "test"}: sha256 of each split's rows
    truncated: int = 0  # rows whose response was cut to fit sequence_len
    tokens_train: int = 0
    supervised_tokens_train: int = 0
    tokens_eval: int = 0
    supervised_tokens_eval: int = 0
    tokens_test: int = 0
    supervised_tokens_test: int = 0
    sequence_len: int | None = None
    overlength: str = ""
    train_on_prompt: bool = False
    split_seed: int | None = None
    val_set_size: float | None = None
    test_set_size: float | None = None
    max_samples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


class BadRows:
    """Counts dropped rows by reason, remembers the first few, and enforces strict mode."""

    def __init__(self, report: DataReport, where: str, locate: Callable[[int], str], strict: bool = False):
        self.report = report
        self.where = where  # the file (or dataset) named in whole-source messages
        self.locate = locate  # row number -> "data.jsonl line 7"
        self.strict = strict
        self.first_detail: dict[str, str] = {}

    def add(self, row: int, bad: BadRow) -> None:
        if self.strict:
            raise UserError(
                f"{self.locate(row)}: {bad.reason}: {bad.detail} "
                f"(strict mode; fix the row or set data.strict=false to skip bad rows)"
            )
        report = self.report
        report.dropped[bad.reason] = report.dropped.get(bad.reason, 0) + 1
        rows = report.first_bad_rows.setdefault(bad.reason, [])
        if len(rows) < FIRST_BAD_ROWS:
            rows.append(row)
        self.first_detail.setdefault(bad.reason, f"{self.locate(row)}: {bad.detail}")
        # Keep the report's key order stable (REASONS order), whatever order rows fail in.
        report.dropped = {r: report.dropped[r] for r in REASONS if r in report.dropped}
        report.first_bad_rows = {r: report.first_bad_rows[r] for r in REASONS if r in report.first_bad_rows}

    def main_reason(self) -> str:
        """The most frequent reason, with its first example, for one-line errors."""
        dropped = self.report.dropped
        if not dropped:
            return "no rows"
        reason = max(dropped, key=dropped.get)
        return f"{reason} ({dropped[reason]} rows; first: {self.first_detail.get(reason, '?')})"

    def check_none_left(self, kept: int, total: int) -> None:
        if total == 0:
            raise UserError(f"{self.where} has no rows: add instruction/output rows or choose another data.source")
        if kept == 0:
            raise UserError(f"no usable rows in {self.where}: all {total} rows were dropped; main reason: {self.main_reason()}")

    def check_fraction(self, bad: int, total: int, max_bad_fraction: float) -> None:
        if total and bad / total > max_bad_fraction:
            raise UserError(
                f"{bad} of {total} rows in {self.where} are unusable ({100 * bad / total:.0f}% > "
                f"data.max_bad_fraction={max_bad_fraction}); main reason: {self.main_reason()}; "
                f"fix the data or raise data.max_bad_fraction"
            )
