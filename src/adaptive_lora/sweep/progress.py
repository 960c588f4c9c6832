"""Progress display: an overall sweep bar and a per-run bar with step and loss (rich), or plain
log lines with --quiet / when output is not a terminal."""

from __future__ import annotations

import sys
import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class RunProgress:
    """Callable progress sink for one run: `progress(step, total_steps, loss)`."""

    def __init__(self, progress: Progress | None, task_id=None, label: str = "", quiet: bool = False):
        self.progress, self.task_id, self.label, self.quiet = progress, task_id, label, quiet
        self._last_print = 0.0

    @classmethod
    def standalone(cls, label: str = "train", quiet: bool = False) -> RunProgress:
        if quiet or not sys.stderr.isatty():
            return cls(None, label=label, quiet=True)
        progress = _make_progress()
        progress.start()
        return cls(progress, progress.add_task(label, total=None, loss="-"), label)

    def __call__(self, step: int, total: int, loss: float | None) -> None:
        loss_text = f"{loss:.4f}" if loss is not None else "-"
        if self.progress is not None:
            self.progress.update(self.task_id, completed=step, total=total, loss=loss_text)
            if step >= total and len(self.progress.tasks) == 1:  # a standalone run's bar ends with it
                self.progress.stop()
        elif time.monotonic() - self._last_print > 10 or step >= total:
            self._last_print = time.monotonic()
            print(f"[{self.label}] step {step}/{total} loss {loss_text}", file=sys.stderr, flush=True)


def _make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        transient=False,
    )


class SweepProgress:
    """Overall bar (runs done/total, current run, ETA) plus a per-run bar."""

    def __init__(self, total_runs: int, quiet: bool = False):
        self.quiet = quiet or not sys.stderr.isatty()
        self.total, self.done = total_runs, 0
        self.progress = None if self.quiet else _make_progress()
        if self.progress:
            self.progress.start()
            self.overall = self.progress.add_task("sweep", total=total_runs, loss="-")

    def skip(self, label: str) -> None:
        self.finish_run(label, "skipped (already finished)")

    def start_run(self, label: str) -> RunProgress:
        if self.progress is None:
            print(f"[{self.done + 1}/{self.total}] {label}: running", file=sys.stderr, flush=True)
            return RunProgress(None, label=label, quiet=True)
        self.progress.update(self.overall, description=f"sweep: {label}")
        return RunProgress(self.progress, self.progress.add_task(f"  {label}", total=None, loss="-"), label)

    def finish_run(self, label: str, status: str, run_progress: RunProgress | None = None) -> None:
        self.done += 1
        if self.progress is None:
            print(f"[{self.done}/{self.total}] {label}: {status}", file=sys.stderr, flush=True)
            return
        if run_progress is not None and run_progress.task_id is not None:
            self.progress.remove_task(run_progress.task_id)
        self.progress.console.print(f"{label}: {status}")
        self.progress.update(self.overall, advance=1)

    def close(self) -> None:
        if self.progress:
            self.progress.stop()
