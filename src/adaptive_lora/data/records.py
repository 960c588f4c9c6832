"""Turning a raw row into a normalized record, or a `BadRow` saying why not.

A record is `{"instruction", "input", "output"}` (all strings; input may be ""), plus `"meta"` when
the row carries any of the optional labels `task` (str), `difficulty` (int) and `verifiable`
(bool: the output is a short, exactly checkable answer, so exact match applies; otherwise the
output is open-ended and only ROUGE-L applies). Labels are not content: the content hash leaves
them out, so adding labels to a file does not change its hash. Chat-style rows
(`messages` with role/content, or ShareGPT `conversations` with from/value) also keep
`"messages"`: the prompt turns. Multi-turn rule (kept simple on purpose): the LAST assistant
turn is the response and every turn before it is prompt; turns after it are ignored. For the
alpaca and seed formats, the last user turn before the response is the instruction and the
earlier turns (system included) become the input, as "Role: text" paragraphs.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import UserError
from .report import BadRow
from .sources import json_type

FIELDS = ("instruction", "input", "output", "messages", "conversations")
ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}
HASHED_KEYS = ("instruction", "input", "output", "messages")
META_TYPES = {"task": str, "difficulty": int, "verifiable": bool}  # optional row labels, kept in record["meta"]
TYPE_NAMES = {str: "a string", int: "a whole number", bool: "true or false"}
MISSING = object()


def check_field_map(field_map: dict | None) -> dict[str, str]:
    """`{canonical field: column in the data}`, e.g. {"instruction": "question", "output": "answer"}."""
    field_map = dict(field_map or {})
    for key, column in field_map.items():
        if key not in FIELDS:
            raise UserError(
                f"data.field_map: unknown field {key!r}; map one of {', '.join(FIELDS)} to a column name (e.g. instruction=question)"
            )
        if not isinstance(column, str) or not column:
            raise UserError(f"data.field_map.{key}: expected a column name, got {column!r}")
    return field_map


def normalize_row(value: Any, field_map: dict[str, str]) -> dict:
    if not isinstance(value, dict):
        raise BadRow("wrong_type", f"expected an object, got {json_type(value)}")
    row = _Row(value, field_map)
    if row.get("messages") not in (MISSING, None):
        record = _from_turns(row, "messages", "role", "content")
    elif row.get("conversations") not in (MISSING, None):
        record = _from_turns(row, "conversations", "from", "value")
    else:
        record = _from_alpaca(row)
    meta = row_meta(value)
    if meta:
        record["meta"] = meta
    return record


def row_meta(value: dict) -> dict:
    """The optional labels of a raw row. CSV cells are text, so "2" and "true"/"false" are read as
    a number and a boolean there; an empty cell (or null) is no label."""
    meta = {}
    for key, kind in META_TYPES.items():
        raw = value.get(key)
        if raw is None or (isinstance(raw, str) and not raw.strip()) or (isinstance(raw, float) and math.isnan(raw)):
            continue
        meta[key] = _meta_value(key, raw, kind)
    return meta


def _meta_value(key: str, raw: Any, kind: type) -> Any:
    if kind is str and isinstance(raw, str):
        return raw
    if kind is int and isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if kind is int and isinstance(raw, str) and re.fullmatch(r"\s*[+-]?\d+\s*", raw):
        return int(raw)
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind is bool and isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise BadRow("wrong_type", f"field {key!r} is {json_type(raw)} {raw!r:.40}, expected {TYPE_NAMES[kind]}")


def has_input(record: dict) -> bool:
    return bool(record["input"].strip())


def canonical_json(record: dict) -> str:
    """The normalized content of a record, for the content hash (the row number and labels are left out)."""
    return json.dumps({k: record[k] for k in HASHED_KEYS if k in record}, sort_keys=True, ensure_ascii=False)


class _Row:
    """A raw row seen through the field map; names the real column in messages."""

    def __init__(self, value: dict, field_map: dict[str, str]):
        self.value = value
        self.field_map = field_map

    def name(self, key: str) -> str:
        return self.field_map.get(key, key)

    def get(self, key: str) -> Any:
        value = self.value.get(self.name(key), MISSING)
        if isinstance(value, float) and math.isnan(value):
            return None  # pandas' empty cell
        return value

    def text(self, key: str, required: bool) -> str:
        value = self.get(key)
        if value is MISSING or value is None:
            if required:
                raise BadRow("missing_field", self._missing(key))
            return ""
        if not isinstance(value, str):
            raise BadRow("wrong_type", f"field {self.name(key)!r} is {json_type(value)}, expected a string")
        return value

    def _missing(self, key: str) -> str:
        present = ", ".join(list(map(str, self.value))[:8]) or "none"
        hint = f"; map a column to it with data.field_map (--field-map {key}=COLUMN)" if key not in self.field_map else ""
        return f"missing field {self.name(key)!r} (fields present: {present}){hint}"


def _from_alpaca(row: _Row) -> dict:
    instruction = row.text("instruction", required=True)
    input_text = row.text("input", required=False)
    output = row.text("output", required=True)
    if not instruction.strip():
        raise BadRow("missing_field", f"field {row.name('instruction')!r} is empty")
    if not output.strip():
        raise BadRow("empty_output", f"field {row.name('output')!r} is empty")
    return {"instruction": instruction, "input": input_text, "output": output}


def _from_turns(row: _Row, key: str, role_key: str, content_key: str) -> dict:
    value = row.get(key)
    if not isinstance(value, list):
        raise BadRow("wrong_type", f"field {row.name(key)!r} is {json_type(value)}, expected an array of turns")
    turns = [_turn(t, i, role_key, content_key) for i, t in enumerate(value, 1)]
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None:
        raise BadRow("missing_field", f"field {row.name(key)!r} has no assistant turn")
    output, prompt = turns[last]["content"], turns[:last]
    users = [i for i, t in enumerate(prompt) if t["role"] == "user"]
    if not users:
        raise BadRow("missing_field", f"field {row.name(key)!r} has no user turn before the last assistant turn")
    if not output.strip():
        raise BadRow("empty_output", f"the last assistant turn in {row.name(key)!r} is empty")
    history = prompt[: users[-1]] + prompt[users[-1] + 1 :]
    input_text = "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in history)
    return {"instruction": prompt[users[-1]]["content"], "input": input_text, "output": output, "messages": prompt}


def _turn(turn: Any, index: int, role_key: str, content_key: str) -> dict:
    if not isinstance(turn, dict):
        raise BadRow("wrong_type", f"turn {index} is {json_type(turn)}, expected an object with {role_key!r} and {content_key!r}")
    role, content = turn.get(role_key), turn.get(content_key)
    if role is None or content is None:
        raise BadRow("missing_field", f"turn {index} has no {role_key if role is None else content_key!r}")
    if not isinstance(role, str) or not isinstance(content, str):
        raise BadRow("wrong_type", f"turn {index}: {role_key!r} and {content_key!r} must be strings")
    if role.lower() not in ROLES:
        raise BadRow("wrong_type", f"turn {index} has unknown role {role!r} (expected one of {', '.join(ROLES)})")
    return {"role": ROLES[role.lower()], "content": content}
