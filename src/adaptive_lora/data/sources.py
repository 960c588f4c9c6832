"""Reading raw rows from a data source: JSON/JSONL/CSV/TSV/Parquet files, a saved `datasets`
directory or a directory of data files, a Hugging Face hub id, the packaged `builtin` set, or
`skills`, the generated verifiable set (see data/skills.py and resources/skills.md):
`skills` is 2,000 rows with seed 0; options follow a colon, `skills:500` (rows) or
`skills:n=500,seed=3,families=addition+weekday,difficulties=1+2`.

Readers return `RawData`: (row number, value) pairs, where a value that could not even be parsed
(invalid JSON line, non-UTF-8 bytes) is a `BadRow`. Whole-file problems (missing file, unknown
type, corrupt Parquet, a JSON file that is not an array of objects) raise a one-line `UserError`;
no traceback from json/pandas/pyarrow/datasets reaches the user.
"""

from __future__ import annotations

import bisect
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..hub import hub_call
from .report import BadRow
from .skills import SKILLS, is_skills_source, skills_rows

BUILTIN = "builtin"
FILE_TYPES = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
SAVED_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SUPPORTED = "a .json/.jsonl/.csv/.tsv/.parquet file, a dataset directory, a hub id, `builtin` or `skills`"


@dataclass
class RawData:
    rows: list[tuple[int, Any]]  # (1-based row or line number, parsed value or BadRow)
    kind: str  # json | jsonl | csv | tsv | parquet | disk | files | hub | builtin | skills
    path: str  # what messages name: a file, a directory or a hub id
    unit: str = "row"  # "line" for JSONL
    locate: Callable[[int], str] = field(default=None)  # row number -> "file line 7" for messages

    def __post_init__(self):
        if self.locate is None:
            self.locate = lambda row: f"{self.path} {self.unit} {row}"


def read_source(source: str) -> RawData:
    """Dispatch on what `source` names. Only a hub id touches the network."""
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"data.source must name {SUPPORTED}")
    if source == BUILTIN:
        data = read_file(builtin_path())
        data.kind = BUILTIN
        return data
    if is_skills_source(source):
        return RawData(list(enumerate(skills_rows(source), 1)), SKILLS, source)
    path = Path(source).expanduser()
    if path.is_dir():
        return read_directory(path)
    if path.is_file():
        return read_file(path)
    if path.exists():
        raise UserError(f"data source {path} is not a regular file or directory")
    if _looks_like_path(source):
        raise UserError(f"data file {path} does not exist: check the path, or use data.source=builtin")
    return read_hub(source)


def builtin_path() -> Path:
    from importlib.resources import files

    path = Path(str(files("adaptive_lora") / "resources" / "builtin.jsonl"))
    if not path.is_file():
        raise UserError(f"the built-in dataset {path} is missing: reinstall adaptive-lora")
    return path


def _looks_like_path(source: str) -> bool:
    # Hub ids are `name` or `owner/name` without a file extension; anything else is a path.
    suffix = Path(source).suffix.lower()
    return not HUB_ID.match(source) or suffix in FILE_TYPES or bool(re.fullmatch(r"\.[a-z0-9]{1,5}", suffix))


def read_file(path: Path) -> RawData:
    kind = FILE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"unsupported data file type {path.suffix or '(none)'!r} for {path}: use {SUPPORTED}")
    readers = {"json": read_json, "jsonl": read_jsonl, "csv": read_csv, "tsv": read_csv, "parquet": read_parquet}
    return readers[kind](path)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_jsonl(path: Path) -> RawData:
    """One JSON object per line; each line is decoded on its own so one bad line costs one row."""
    rows = []
    for lineno, raw in enumerate(_read_bytes(path).split(b"\n"), 1):
        if not raw.strip():
            continue  # blank lines are not rows
        if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]  # UTF-8 byte-order mark
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            rows.append((lineno, BadRow("non_utf8", f"byte {exc.start} of the line is not valid UTF-8")))
            continue
        try:
            rows.append((lineno, json.loads(text)))
        except json.JSONDecodeError as exc:
            rows.append((lineno, BadRow("invalid_json", f"invalid JSON: {exc.msg} at column {exc.colno}")))
    return RawData(rows, "jsonl", str(path), unit="line")


def read_json(path: Path) -> RawData:
    """A JSON array of objects (row n = array index + 1). A file of JSON lines is read as JSONL."""
    text = _decode_whole(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return read_jsonl(path)  # JSON lines saved with a .json name (common for HF exports)
        raise UserError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, list) or (value and not any(isinstance(v, dict) for v in value)):
        got = "an array of " + json_type(value[0]) + "s" if isinstance(value, list) else json_type(value)
        raise UserError(f"{path}: expected a JSON array of objects (one per example), got {got}")
    return RawData(list(enumerate(value, 1)), "json", str(path))


def _decode_whole(path: Path) -> str:
    data = _read_bytes(path)
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not valid UTF-8 (bad byte at offset {exc.start + bom}): re-save it as UTF-8") from None


def read_csv(path: Path) -> RawData:
    import pandas as pd

    sep = "\t" if path.suffix.lower() == ".tsv" else ","
    text = _decode_whole(path)  # ourselves: pandas reports a chunk-relative byte offset
    try:
        # dtype=str and no NA parsing: an empty cell is "", and "NA" stays the text "NA".
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return RawData([], "csv", str(path))
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise UserError(f"could not read CSV file {path}: {_first_line(exc)}") from None
    return RawData(list(enumerate(frame.to_dict("records"), 1)), "csv", str(path))


def read_parquet(path: Path) -> RawData:
    # pyarrow (not pandas) so nested columns such as `messages` come back as plain lists/dicts.
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a corrupt file
        raise UserError(f"could not read Parquet file {path}: {_first_line(exc)}") from None
    return RawData(list(enumerate(rows, 1)), "parquet", str(path))


def read_directory(path: Path) -> RawData:
    """A `save_to_disk` dataset (its `train` split), else the data files in it (train files if named)."""
    if any((path / marker).is_file() for marker in SAVED_DATASET_MARKERS):
        return read_saved_dataset(path)
    files = _data_files(path)
    if not files:
        raise UserError(
            f"{path} is neither a saved dataset (datasets save_to_disk) nor a directory of .json/.jsonl/.csv/.parquet files"
        )
    if len(files) == 1:
        return read_file(files[0])
    return _concat([read_file(f) for f in files], str(path))


def _data_files(path: Path) -> list[Path]:
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in FILE_TYPES and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    train = [p for p in files if "train" in p.relative_to(path).as_posix().lower()]
    return train or files  # HF layout: train/validation/test files; we want train


def _concat(parts: list[RawData], path: str) -> RawData:
    """Rows of several files, renumbered 1..N; messages still name the file and its own row."""
    rows, starts = [], []
    for part in parts:
        start = len(rows)
        starts.append(start)
        rows.extend((start + i + 1, value) for i, (_, value) in enumerate(part.rows))

    def locate(row: int) -> str:
        k = bisect.bisect_right(starts, row - 1) - 1
        part = parts[k]
        return part.locate(part.rows[row - 1 - starts[k]][0])

    return RawData(rows, "files", path, locate=locate)


def read_saved_dataset(path: Path) -> RawData:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"could not load the saved dataset {path}: {_first_line(exc)}") from None
    return RawData(list(enumerate(_train_split(loaded, str(path)).to_list(), 1)), "disk", str(path))


def read_hub(name: str) -> RawData:
    import datasets

    try:
        with hub_call():
            loaded = datasets.load_dataset(name, split="train")
    except Exception as exc:  # noqa: BLE001 - offline, not found, gated, bad builder...
        raise UserError(
            f"could not load dataset {name!r} from the Hugging Face hub ({type(exc).__name__}: {_first_line(exc)[:160]}); "
            f"if this machine is offline, download it elsewhere and pass a local file, e.g. data.source=/path/to/{name.split('/')[-1]}.json"
        ) from None
    return RawData(list(enumerate(loaded.to_list(), 1)), "hub", name)


def _train_split(loaded, where: str):
    if hasattr(loaded, "keys"):  # a DatasetDict
        splits = list(loaded.keys())
        if "train" in splits:
            return loaded["train"]
        if len(splits) == 1:
            return loaded[splits[0]]
        raise UserError(f"{where} has splits {', '.join(splits)} but no 'train' split")
    return loaded


def json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
