"""A progress line per trial: trial, kind, learning rate, step, validation loss, and kept or pruned (rich on a
terminal; plain lines with --quiet, when not a terminal, or from worker processes)."""

from __future__ import annotations

import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class TrialProgress:
    def __init__(self, steps: int, quiet: bool = False, prefix: str = ""):
        self.steps, self.prefix = steps, prefix
        self.live = None if quiet or not sys.stderr.isatty() else _live()

    def start(self, number: int, kind: str, rate: float) -> TrialLine:
        name = f"{self.prefix}trial {number} ({kind}, lr {rate:.2e})"
        task = self.live.add_task(name, total=self.steps, val="-", state="") if self.live else None
        if self.live:
            self.live.start()  # idempotent: a no-op while the display runs
        return TrialLine(self, name, task)


class TrialLine:
    def __init__(self, owner: TrialProgress, name: str, task):
        self.owner, self.name, self.task = owner, name, task
        self.last_val: float | None = None
        self.last_step = 0

    def step(self, step: int, total: int, loss: float | None) -> None:
        self.last_step = step
        if self.owner.live is not None:
            self.owner.live.update(self.task, completed=step, total=total)

    def evaluated(self, step: int, loss: float, pruned: bool) -> None:
        self.last_val, self.last_step = loss, step
        state = "pruned" if pruned else "kept"
        if self.owner.live is not None:
            self.owner.live.update(self.task, completed=step, val=f"{loss:.4f}", state=state)
        else:
            print(f"{self.name} step {step}/{self.owner.steps} val {loss:.4f} {state}", file=sys.stderr, flush=True)

    def finish(self, state: str, value: float | None = None) -> None:
        value = value if value is not None else self.last_val
        text = (
            f"{self.name} step {self.last_step}/{self.owner.steps} val {value:.4f} {state}"
            if value is not None
            else f"{self.name} {state}"
        )
        live = self.owner.live
        if live is not None:
            live.remove_task(self.task)
            live.console.print(text)
            if not live.tasks:
                live.stop()
        elif state != "pruned":  # a plain log already said "pruned" at the validation that stopped it
            print(text, file=sys.stderr, flush=True)


def _live() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("val {task.fields[val]} {task.fields[state]}"),
        TimeElapsedColumn(),
        transient=False,
    )
