"""Run a suite: resumable, shareable between processes, with progress; then write its report.

Each run writes into SWEEP/runs/<run_id>/. A run whose result.json says `done` is skipped on the
next invocation; failed runs (`diverged`, `oom`, `error`) are kept and reported, and rerun only with
`retry_failed`. An interrupted run has no `done` result, so it simply runs again.

Several processes (on one machine, or machines sharing the directory) can work through one sweep:
a run is claimed under a lock file (SWEEP/.claims/<run_id>.lock, an OS file lock that dies with its
process) before it starts, and a process skips runs that are claimed or finished. Across machines
this needs a filesystem whose flock reaches them all (NFS mounted with `nolock` or `local_lock=flock`
does not); where flock is missing, filelock uses a marker file instead, and the claim of a process
killed on another machine stays until its .claims/<run_id>.lock is deleted.

With a learning-rate grid and `select_lr_on_seeds`, the sweep runs in two stages: every rate on
the selection seeds, then the other seeds at each group's chosen rate (sweep.selection).
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from ..environment import resolved_precision_override
from ..errors import UserError
from ..io import atomic_create_bytes, atomic_write_text
from ..schema import FAILED_STATUSES, SUITE_FILE, SUITE_HISTORY_DIR, read_result, run_status
from ..workdirs import claim_sweep_dir
from .executors import EXECUTE, SweepOptions, run_dir_of
from .progress import SweepProgress
from .selection import choose_rates, chosen_rates
from .suite import RunSpec, Suite, suite_from_dict


def pin_precision(suite: Suite) -> Suite:
    """The suite with `model.precision: auto` pinned to what this machine runs (bf16 or fp32 on CPU), so
    that run ids, suite.yaml and the report say which precision the runs trained in, and a sweep resumed
    on a machine that would choose differently starts new runs instead of mixing precisions."""
    model = suite.data.get("model") or {}
    pinned = resolved_precision_override(model.get("precision"), model.get("device"))
    if not pinned:
        return suite
    return suite_from_dict({**suite.data, "model": {**model, "precision": pinned["model.precision"]}}, source=suite.name)


def plan_work(specs: list[RunSpec], sweep_dir: Path, retry_failed: bool) -> tuple[list[RunSpec], list[tuple[RunSpec, str]]]:
    """Split runs into those to do and those to skip (with their recorded status)."""
    todo, skipped = [], []
    for spec in specs:
        status = run_status(run_dir_of(sweep_dir, spec))
        if status == "done" or (status in FAILED_STATUSES and not retry_failed):
            skipped.append((spec, status))
        else:
            todo.append(spec)
    return todo, skipped


def record_suite(sweep_dir: Path, suite: Suite) -> str | None:
    """Write suite.yaml; a different suite recorded before is kept in suites/<its id>.yaml, one that cannot
    be read in suites/unreadable-<n>.yaml (the next free number). Returns the earlier suite's id."""
    path = sweep_dir / SUITE_FILE
    previous = None
    if path.is_file():
        recorded = path.read_bytes()
        try:
            previous = suite_from_dict(yaml.safe_load(recorded.decode("utf-8")) or {}, source=str(path))
        except (UserError, yaml.YAMLError, UnicodeDecodeError):
            previous = None
        if previous is None:
            _keep_unreadable(sweep_dir / SUITE_HISTORY_DIR, recorded)
        elif previous.suite_id != suite.suite_id:
            with contextlib.suppress(FileExistsError):  # kept before: the id is the suite's content
                atomic_create_bytes(sweep_dir / SUITE_HISTORY_DIR / f"{previous.suite_id}.yaml", recorded)
    atomic_write_text(path, yaml.safe_dump(suite.data, sort_keys=False))
    return previous.suite_id if previous is not None and previous.suite_id != suite.suite_id else None


def _keep_unreadable(history: Path, recorded: bytes) -> Path:
    """suites/unreadable-<n>.yaml for the first free n; an earlier backup is never replaced."""
    number = 1
    while True:
        kept = history / f"unreadable-{number}.yaml"
        if kept.is_file() and kept.read_bytes() == recorded:
            return kept  # kept already
        try:
            atomic_create_bytes(kept, recorded)
            return kept
        except FileExistsError:
            number += 1


def results_of(specs: list[RunSpec], sweep_dir: Path) -> dict[str, dict[str, Any] | None]:
    return {spec.run_id: read_result(run_dir_of(sweep_dir, spec))[0] for spec in specs}


def run_sweep(suite: Suite, sweep_dir: str | Path, options: SweepOptions | None = None) -> dict[str, Any]:
    """Run every run of `suite` that is not finished or claimed; the caller writes the report (report.write_report)."""
    options = options or SweepOptions()
    if options.executor not in EXECUTE:
        raise UserError(f"unknown executor {options.executor!r}; choose one of: {', '.join(EXECUTE)}")
    suite = pin_precision(suite)
    sweep_dir = claim_sweep_dir(sweep_dir)
    replaced = record_suite(sweep_dir, suite)
    if replaced:
        print(
            f"note: {sweep_dir} held runs of another suite configuration ({replaced}); it now records this one, "
            f"and the report lists the earlier runs apart (kept in {SUITE_HISTORY_DIR}/)",
            file=sys.stderr,
        )
    selection = suite.selection_runs()
    progress = SweepProgress(suite.expected_runs(), quiet=options.quiet)
    statuses: dict[str, str] = {}
    interrupted = False
    with sigterm_as_interrupt():
        try:
            _run_stage(selection, sweep_dir, options, progress, statuses, EXECUTE[options.executor])
            if suite.staged:
                chosen = chosen_rates(choose_rates(suite, results_of(selection, sweep_dir)))
                _run_stage(suite.final_runs(chosen), sweep_dir, options, progress, statuses, EXECUTE[options.executor])
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.close()
    if interrupted:
        print(f"interrupted: finished runs are kept; run the same command again to resume ({sweep_dir})", file=sys.stderr)
    return {"sweep_dir": str(sweep_dir), "total": len(statuses), "statuses": statuses, "interrupted": interrupted}


def _run_stage(specs, sweep_dir, options, progress, statuses, execute) -> None:
    todo, skipped = plan_work(specs, sweep_dir, options.retry_failed)
    for spec, status in skipped:
        progress.finish_run(
            spec.run_id, f"skipped ({status}; {'--retry-failed reruns it' if status in FAILED_STATUSES else 'already finished'})"
        )
        statuses[spec.run_id] = status
    execute(todo, sweep_dir, options, progress, statuses)


class sigterm_as_interrupt:
    """Treat SIGTERM like Ctrl-C, so a killed sweep (or search) marks its current run and keeps the rest."""

    def __enter__(self):
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
        except ValueError:  # not the main thread
            pass
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False
