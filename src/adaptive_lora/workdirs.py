"""Run and sweep directories: only what adaptive-lora made may be reused or cleared.

A run directory gets the marker file `.adaptive-lora-run` before anything else, a sweep directory
`.adaptive-lora-sweep`. A search directory gets `.adaptive-lora-search`. A directory that holds files but no marker is the user's: it is refused
with a one-line error and nothing in it is touched. Clearing a run directory (an unfinished run, or
`--overwrite`) removes only the entries a run writes (schema.RUN_FILES, our temporary files), so a
file the user put there survives even that.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import UserError
from .io import atomic_write_text
from .schema import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    LOG_FILE,
    REPORT_FILES,
    RESULT_FILE,
    RUN_FILES,
    RUN_LOCK,
    RUN_MARKER,
    SEARCH_MARKER,
    SWEEP_MARKER,
)

# io.atomic_write_* writes .<name>.<pid>.<hex>.tmp beside <name>; the adapter is staged in .adapter.tmp
_TEMPORARY = re.compile(r"\.(?P<name>.+?)(\.\d+\.[0-9a-f]+)?\.tmp")


def _entries(path: Path, what: str) -> list[str]:
    if path.exists() and not path.is_dir():
        raise UserError(
            f"{path} is a file, not a {what} directory; nothing was changed: choose a new or empty directory with --out"
        )
    return sorted(p.name for p in path.iterdir()) if path.is_dir() else []


def _is_ours_temporary(name: str) -> bool:
    """A temporary file of one of a run's files (a user's own .notes.tmp is not ours)."""
    match = _TEMPORARY.fullmatch(name)
    return match is not None and match["name"] in RUN_FILES


def _legacy_run_dir(names: list[str]) -> bool:
    """A run directory written before markers existed: only run files, with a config and a result or log
    (a config.yaml alone may be the user's own, written there to train from)."""
    return (
        CONFIG_FILE in names
        and (RESULT_FILE in names or LOG_FILE in names)
        and all(n in RUN_FILES or n == RUN_LOCK or _is_ours_temporary(n) for n in names)
    )


def _foreign_error(path: Path, names: list[str], what: str) -> UserError:
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return UserError(
        f"{path} is not empty and is not an adaptive-lora {what} directory (it holds {shown}); "
        f"nothing was changed: choose a new or empty directory with --out"
    )


def claim_run_dir(path: str | Path) -> Path:
    """Make `path` a run directory: create it, or adopt an empty or legacy one; refuse the user's."""
    path = Path(path)
    check_run_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / RUN_MARKER).touch()
    return path


def check_run_dir(path: str | Path) -> None:
    """Raise the one-line error `claim_run_dir` or `claimed_run_dir` would, without creating anything."""
    path = Path(path)
    names = _entries(path, "run")
    if names and RUN_MARKER not in names and not _legacy_run_dir(names):
        raise _foreign_error(path, names, "run")
    if RUN_LOCK in names:  # fail at once, before loading anything, when another process is training here
        lock = FileLock(path / RUN_LOCK)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise _busy_error(path) from None
        lock.release()


def _busy_error(path: Path) -> UserError:
    try:
        holder = (path / RUN_MARKER).read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        holder = "unknown"
    return UserError(
        f"{path} is being written by another adaptive-lora process (PID {holder}); wait for it to finish, "
        f"or choose another directory with --out"
    )


def clear_run_dir(path: str | Path, keep_checkpoints: bool = False) -> None:
    """Remove what a run wrote (never anything else) so the run can start again."""
    path = Path(path)
    for name in _entries(path, "run"):
        if name == RUN_MARKER or (keep_checkpoints and name == CHECKPOINT_DIR):
            continue
        if name in RUN_FILES or _is_ours_temporary(name):
            target = path / name
            shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()


def claim_sweep_dir(path: str | Path) -> Path:
    """Make `path` a sweep directory: create it, or adopt an empty or earlier sweep; refuse the user's."""
    path = Path(path)
    check_sweep_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / SWEEP_MARKER).touch()
    return path


def check_sweep_dir(path: str | Path) -> None:
    path = Path(path)
    names = _entries(path, "sweep")
    if names and not is_sweep_dir(path):
        raise _foreign_error(path, names, "sweep")


def claim_search_dir(path: str | Path) -> Path:
    """Make `path` a search directory (adaptive-lora search): create it, or adopt an empty or earlier search."""
    path = Path(path)
    check_search_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / SEARCH_MARKER).touch()
    return path


def check_search_dir(path: str | Path) -> None:
    path = Path(path)
    names = _entries(path, "search")
    if names and SEARCH_MARKER not in names:
        raise _foreign_error(path, names, "search")


def is_sweep_dir(path: str | Path) -> bool:
    """Marked, or a sweep from before markers (suite.yaml beside runs/)."""
    path = Path(path)
    return (path / SWEEP_MARKER).is_file() or ((path / "suite.yaml").is_file() and (path / "runs").is_dir())


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / RUN_MARKER).is_file() or ((path / RESULT_FILE).is_file() and _legacy_run_dir(_entries(path, "run")))


def is_runs_folder(path: str | Path) -> bool:
    """A folder of run directories (gathered by hand) and nothing but them and an earlier report."""
    path = Path(path)
    entries = [p for p in path.iterdir()] if path.is_dir() else []
    runs = [p for p in entries if p.is_dir() and is_run_dir(p)]
    return bool(runs) and all(p in runs or p.name in REPORT_FILES for p in entries)


@contextlib.contextmanager
def claimed_run_dir(path: str | Path):
    """`claim_run_dir`, holding the run directory's lock (the one sweeps take per run) until the run ends.

    The lock is an OS file lock (filelock), so it dies with its process: a directory left by a killed
    run is free again. The holder's PID goes into the marker file, so a second process can name it.
    """
    path = claim_run_dir(path)
    lock = FileLock(path / RUN_LOCK)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise _busy_error(path) from None
    try:
        atomic_write_text(path / RUN_MARKER, f"{os.getpid()}\n")
        yield path
    finally:
        lock.release()
