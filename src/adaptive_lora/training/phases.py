"""Where a run's wall time goes: load, plan, base_eval, train, eval, save (result.json's time_by_phase_s)."""

from __future__ import annotations

import contextlib
import time


class PhaseTimer:
    """Seconds per named phase, and the wall time since the timer was made (the start of the run)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - start

    def seconds(self) -> dict[str, float]:
        """Each phase's seconds, and `other`: the wall time no phase accounts for (logging, writing files)."""
        spent = dict(self._seconds)
        spent["other"] = max(0.0, self.elapsed() - sum(spent.values()))
        return {name: round(value, 3) for name, value in spent.items()}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started
