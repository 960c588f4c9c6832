"""Run and sweep directories: only what adaptive-lora made may be reused or cleared.

A run directory gets the marker file `.adaptive-lora-run` before anything else, a sweep directory
`.adaptive-lora-sweep`, a search directory `.adaptive-lora-search`. A directory that holds files but no marker is the user's: it is refused
with a one-line error and nothing in it is touched, unless it proves to be a run from before markers
(a result.json or config.yaml that parses as ours, and nothing but run files). Clearing a run
directory (an unfinished run, or `--overwrite`) removes only the entries a run writes
(schema.RUN_FILES, our temporary files), so a file the user put there survives even that; and a
sub-directory named like ours (checkpoints/, tensorboard/, adapter/) that holds what a run does not
write is the user's: the directory is refused rather than cleared.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import yaml
from filelock import FileLock, Timeout

from .config import RunConfig
from .errors import UserError
from .io import atomic_write_text, read_json
from .schema import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    REPORT_FILES,
    RESULT_FILE,
    RUN_FILES,
    RUN_LOCK,
    RUN_MARKER,
    SEARCH_MARKER,
    SWEEP_MARKER,
    TENSORBOARD_DIR,
    result_problem,
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


# Every key config.yaml held before run markers existed (3b29899 wrote a full dump of the config);
# later dumps add keys. A config written by hand, even adaptive-lora's, rarely names every one.
_PRE_MARKER_CONFIG_KEYS = {
    "model": {"name", "trust_remote_code", "precision", "device"},
    "data": {"source", "prompt_format", "field_map", "val_set_size", "max_samples", "split_seed", "overlength"}
    | {"train_on_prompt", "strict", "max_bad_fraction", "group_by_length"},
    "allocation": {"strategy", "params", "lora_r", "lora_alpha", "alpha_policy", "budget", "budget_rank", "min_rank"}
    | {"max_rank", "target_modules", "lora_dropout"},
    "training": {"learning_rate", "num_epochs", "max_steps", "micro_batch_size", "gradient_accumulation_steps"}
    | {"sequence_len", "warmup_ratio", "lr_scheduler", "weight_decay", "max_grad_norm", "seed", "eval_steps"}
    | {"logging_steps", "save_steps", "report_to", "gradient_checkpointing", "num_threads"},
    "output": {"dir", "overwrite", "resume", "save_adapter"},
}


def _is_our_result(path: Path) -> bool:
    """A result.json that train() wrote: its required keys, a known status, and the versions it ran with."""
    try:
        result = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    environment = result.get("environment") if isinstance(result, dict) else None
    return result_problem(result) is None and isinstance(environment, dict) and "adaptive-lora" in environment


def _is_our_config(path: Path) -> bool:
    """A config.yaml that train() dumped: a valid run config holding every key the oldest dump held."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            return False
        RunConfig.from_dict(data)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, UserError):
        return False
    return all(isinstance(data.get(s), dict) and keys <= set(data[s]) for s, keys in _PRE_MARKER_CONFIG_KEYS.items())


def _legacy_run_dir(path: Path, names: list[str]) -> bool:
    """A run directory written before markers existed: nothing but run files, and proof that we wrote them
    (train.log and checkpoints/ are common names: other trainers write them too)."""
    return all(n in RUN_FILES or n == RUN_LOCK or _is_ours_temporary(n) for n in names) and (
        (RESULT_FILE in names and _is_our_result(path / RESULT_FILE))
        or (CONFIG_FILE in names and _is_our_config(path / CONFIG_FILE))
    )


# What a run writes inside its sub-directories: Trainer checkpoints, TensorBoard event files, a PEFT adapter.
_CHECKPOINT = re.compile(r"(tmp-)?checkpoint-\d+")


def _foreign_entries(directory: Path) -> list[str]:
    """What `directory` (a run's checkpoints/, tensorboard/ or adapter/) holds that a run does not write there."""
    if not directory.is_dir() or directory.is_symlink():
        return [directory.name] if directory.is_symlink() else []
    if directory.name == CHECKPOINT_DIR:
        return sorted(p.name for p in directory.iterdir() if not (p.is_dir() and _CHECKPOINT.fullmatch(p.name)))
    if directory.name == TENSORBOARD_DIR:
        files = [p for p in directory.rglob("*") if not p.is_dir()]
        return sorted(str(p.relative_to(directory)) for p in files if not p.name.startswith("events.out.tfevents."))
    if directory.name == ADAPTER_DIR:
        return sorted(
            p.name for p in directory.iterdir() if not (p.is_file() and (p.name.startswith("adapter_") or p.name == "README.md"))
        )
    return []


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
    if names and RUN_MARKER not in names and not _legacy_run_dir(path, names):
        raise _foreign_error(path, names, "run")
    for name in (CHECKPOINT_DIR, TENSORBOARD_DIR, ADAPTER_DIR):
        if foreign := _foreign_entries(path / name):
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise UserError(
                f"{path / name} holds files adaptive-lora did not write there ({shown}); nothing was changed: "
                f"move {name}/ out of the run directory, or choose a new or empty directory with --out"
            )
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
        if (name in RUN_FILES and not _foreign_entries(path / name)) or _is_ours_temporary(name):
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
    return (path / RUN_MARKER).is_file() or ((path / RESULT_FILE).is_file() and _legacy_run_dir(path, _entries(path, "run")))


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
