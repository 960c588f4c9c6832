"""Atomic file writes (a reader never sees a half-written file, and a crash loses nothing), and the JSON
layout and value helpers the file formats in schema.py share."""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _written_temporary(path: Path, data: bytes) -> Path:
    """`data` in a new, synced temporary file beside `path` (mode 0o666, so the umask applies)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a temporary file in the same directory, fsync it, rename it over `path`, fsync the directory.

    The temporary file is created with mode 0o666, so the process umask applies as for any ordinary
    file (mkstemp would make it private, and reading the umask means changing it process-wide).
    """
    path = Path(path)
    tmp = _written_temporary(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_create_bytes(path: str | Path, data: bytes) -> None:
    """Like atomic_write_bytes, but never replaces a file: FileExistsError when `path` exists (even when
    another process creates it at the same moment), and then nothing is written."""
    path = Path(path)
    tmp = _written_temporary(path, data)
    try:
        os.link(tmp, path)  # unlike a rename, a link fails when the name is taken
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def fsync_dir(path: str | Path) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def finite_or_none(value: Any) -> Any:
    """Replace NaN/inf (recursively) by None, so JSON output never contains them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n")


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """One JSON line, appended (a log, not a result: a torn last line is skipped by readers)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(finite_or_none(record), allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def json_lines_text(value: Any, indent: int = 0) -> str:
    """JSON with one key per line and every flat list or object on one line: about half the bytes of
    indenting every number, still readable and diffable."""

    def flat(v: Any) -> bool:
        items = v.values() if isinstance(v, dict) else v if isinstance(v, list) else None
        return items is not None and not any(isinstance(x, (dict, list)) for x in items)

    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, list) and value and not flat(value):
        items = (json.dumps(v, allow_nan=False) if flat(v) else json_lines_text(v, indent + 2) for v in value)
        return "[\n" + ",\n".join(inner + item for item in items) + "\n" + pad + "]"
    if isinstance(value, dict) and value:
        items = (f"{json.dumps(k)}: {json_lines_text(v, indent + 2)}" for k, v in value.items())
        return "{\n" + ",\n".join(inner + item for item in items) + "\n" + pad + "}"
    return json.dumps(value, allow_nan=False)


def float_or_none(value: Any) -> float | None:
    return float(value) if is_number(value) else None


def int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
