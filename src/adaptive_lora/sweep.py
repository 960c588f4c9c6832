"""Run a suite: resumable, with progress, in-process, in worker processes, or on Ray.

Each run writes into SWEEP/runs/<run_id>/. A run whose result.json says `done` is skipped on
the next invocation; failed runs (`diverged`, `oom`, `error`) are kept and reported, and rerun
only with `retry_failed`. An interrupted run has no `done` result, so it simply runs again.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import UserError
from .io import atomic_write_text, read_json
from .progress import SweepProgress
from .suite import RunSpec, Suite

FAILED = ("diverged", "oom", "error")
EXECUTORS = ("local", "processes", "ray")


@dataclasses.dataclass
class SweepOptions:
    executor: str = "local"
    workers: int = 2
    ray_address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    retry_failed: bool = False
    quiet: bool = False
    report: bool = True


def run_dir_of(sweep_dir: Path, spec: RunSpec) -> Path:
    return sweep_dir / "runs" / spec.run_id


def prior_status(run_dir: Path) -> str | None:
    try:
        return read_json(run_dir / "result.json").get("status")
    except (OSError, ValueError, AttributeError):
        return None


def plan_work(suite: Suite, sweep_dir: Path, retry_failed: bool) -> tuple[list[RunSpec], list[tuple[RunSpec, str]]]:
    """Split the suite into runs to do and runs to skip (with their recorded status)."""
    todo, skipped = [], []
    for spec in suite.runs:
        status = prior_status(run_dir_of(sweep_dir, spec))
        if status == "done" or (status in FAILED and not retry_failed):
            skipped.append((spec, status))
        else:
            todo.append(spec)
    return todo, skipped


def run_sweep(suite: Suite, sweep_dir: str | Path, options: SweepOptions | None = None) -> dict[str, Any]:
    options = options or SweepOptions()
    if options.executor not in EXECUTORS:
        raise UserError(f"unknown executor {options.executor!r}; choose one of: {', '.join(EXECUTORS)}")
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / "suite.yaml", yaml.safe_dump(suite.data, sort_keys=False))
    todo, skipped = plan_work(suite, sweep_dir, options.retry_failed)
    progress = SweepProgress(len(suite.runs), quiet=options.quiet)
    for spec, status in skipped:
        progress.finish_run(spec.run_id, f"skipped ({status}; {'--retry-failed reruns it' if status in FAILED else 'already finished'})")
    statuses: dict[str, str] = {spec.run_id: status for spec, status in skipped}
    interrupted = False
    with _sigterm_as_interrupt():
        try:
            execute = {"local": _run_local, "processes": _run_processes, "ray": _run_ray}[options.executor]
            execute(todo, sweep_dir, options, progress, statuses)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            progress.close()
    summary = {"sweep_dir": str(sweep_dir), "total": len(suite.runs), "statuses": statuses, "interrupted": interrupted}
    if interrupted:
        print(f"interrupted: finished runs are kept; run the same command again to resume ({sweep_dir})", file=sys.stderr)
        return summary
    if options.report:
        from .report import write_report

        summary["report"] = write_report(sweep_dir)
    return summary


def execute_spec(spec: RunSpec, sweep_dir: Path, base=None, progress: Callable | None = None) -> dict:
    """Train one run of a sweep (any executor ends here)."""
    from .training import train

    config = spec.config.with_overrides({"output.dir": str(run_dir_of(sweep_dir, spec)), "output.overwrite": True})
    labels = {"label": spec.label, "budget_label": spec.budget.label}
    return train(config, base=base, progress=progress, run_id=spec.run_id, labels=labels)


# --- executors ------------------------------------------------------------------------------


def _run_local(todo: list[RunSpec], sweep_dir: Path, options: SweepOptions, progress: SweepProgress, statuses: dict) -> None:
    """Sequential, one process: the base model and tokenised data are loaded once and shared."""
    from .training import prepare_base

    base = None
    for spec in todo:
        if base is None or not base.compatible_with(spec.config):
            base = prepare_base(spec.config)
        run_progress = progress.start_run(spec.run_id)
        result = execute_spec(spec, sweep_dir, base=base, progress=run_progress)
        statuses[spec.run_id] = result["status"]
        progress.finish_run(spec.run_id, _status_line(result), run_progress)


_WORKER_BASE = None


def _worker_run(spec: RunSpec, sweep_dir: str, threads: int) -> dict:
    """Runs in a worker process; keeps its base model between the runs it is given."""
    global _WORKER_BASE
    import torch

    from .training import prepare_base

    torch.set_num_threads(threads)
    if _WORKER_BASE is None or not _WORKER_BASE.compatible_with(spec.config):
        _WORKER_BASE = prepare_base(spec.config)
    result = execute_spec(spec, Path(sweep_dir), base=_WORKER_BASE)
    return {"status": result["status"], "eval_loss": result.get("eval_loss"), "error": result.get("error")}


def _run_processes(todo: list[RunSpec], sweep_dir: Path, options: SweepOptions, progress: SweepProgress, statuses: dict) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = max(1, options.workers)
    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_worker_run, spec, str(sweep_dir), threads): spec for spec in todo}
        try:
            for future in as_completed(futures):
                spec = futures[future]
                result = _future_result(future)
                statuses[spec.run_id] = result["status"]
                progress.finish_run(spec.run_id, _status_line(result))
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            raise


def _future_result(future) -> dict:
    try:
        return future.result()
    except UserError as exc:
        return {"status": "error", "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a crashed worker is one failed run, not a failed sweep
        return {"status": "error", "error": f"worker failed: {type(exc).__name__}: {exc}"}


def _run_ray(todo: list[RunSpec], sweep_dir: Path, options: SweepOptions, progress: SweepProgress, statuses: dict) -> None:
    try:
        import ray
    except ImportError:
        raise UserError("the ray executor needs the ray extra: pip install 'adaptive-lora[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=options.ray_address, include_dashboard=False, log_to_driver=False,
                 **({} if options.ray_address else {"num_cpus": os.cpu_count()}))
    remote = ray.remote(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_calls=0)(_worker_run)
    threads = max(1, int(options.cpus_per_run))
    pending = {remote.remote(spec, str(Path(sweep_dir).resolve()), threads): spec for spec in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a failed task is one failed run
                result = {"status": "error", "error": f"ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"}
            statuses[spec.run_id] = result["status"]
            progress.finish_run(spec.run_id, _status_line(result))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _status_line(result: dict) -> str:
    if result.get("status") == "done" and result.get("eval_loss") is not None:
        return f"done, eval loss {result['eval_loss']:.4f}"
    return f"{result.get('status')}: {result.get('error')}"


class _sigterm_as_interrupt:
    """Treat SIGTERM like Ctrl-C, so a killed sweep marks its current run and keeps the rest."""

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
