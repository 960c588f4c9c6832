"""Executors: where the runs of a sweep train. Every one ends in `execute_spec`, which claims a run first.

local       one process: the base model and tokenised data are loaded once and shared by the runs
processes   N worker processes (spawned), each with cores / N torch threads, so they do not oversubscribe
ray         Ray tasks on a local or remote cluster (`--ray-address`), with per-run CPU/GPU resources
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from ..errors import UserError
from ..schema import CLAIMS_DIR, FAILED_STATUSES, run_status
from ..training import prepare_base, train
from .progress import SweepProgress
from .suite import RunSpec

CLAIMED = "claimed"  # the status execute_spec returns for a run another process holds


@dataclasses.dataclass
class SweepOptions:
    executor: str = "local"
    workers: int = 2
    ray_address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    retry_failed: bool = False
    quiet: bool = False


def run_dir_of(sweep_dir: Path, spec: RunSpec) -> Path:
    return Path(sweep_dir) / "runs" / spec.run_id


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of `workers` processes sharing this machine's cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def execute_spec(spec: RunSpec, sweep_dir: Path, retry_failed: bool = False, base=None, progress: Callable | None = None) -> dict:
    """Claim and train one run of a sweep (every executor ends here); a run claimed elsewhere is skipped."""
    claims = Path(sweep_dir) / CLAIMS_DIR
    claims.mkdir(exist_ok=True)
    lock = FileLock(claims / f"{spec.run_id}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return {"status": CLAIMED, "error": "another process is training this run"}
    try:
        status = run_status(run_dir_of(sweep_dir, spec))  # it may have finished while we were not looking
        if status == "done" or (status in FAILED_STATUSES and not retry_failed):
            return {"status": status, "error": None, "skipped": True}
        config = spec.config.with_overrides({"output.dir": str(run_dir_of(sweep_dir, spec)), "output.overwrite": True})
        labels = {"label": spec.label, "budget_label": spec.budget.label}
        if base is not None:
            base.store = Path(sweep_dir)  # the base's scores are computed once per sweep, whichever worker is first
        return train(config, base=base, progress=progress, run_id=spec.run_id, labels=labels, keep_failures=True)
    finally:
        lock.release()


def status_line(result: dict) -> str:
    if result.get("skipped"):
        return f"skipped ({result.get('status')}, finished by another process)"
    if result.get("status") == CLAIMED:
        return "skipped (claimed: another process is training it)"
    if result.get("status") == "done" and result.get("eval_loss") is not None:
        return f"done, eval loss {result['eval_loss']:.4f}"
    return f"{result.get('status')}: {result.get('error')}"


def _run_local(todo: list[RunSpec], sweep_dir: Path, options: SweepOptions, progress: SweepProgress, statuses: dict) -> None:
    """Sequential, one process: the base model and tokenised data are loaded once and shared."""
    base = None
    for spec in todo:
        if base is None or not base.compatible_with(spec.config):
            base = prepare_base(spec.config)
        run_progress = progress.start_run(spec.run_id)
        result = execute_spec(spec, sweep_dir, options.retry_failed, base=base, progress=run_progress)
        statuses[spec.run_id] = result["status"]
        progress.finish_run(spec.run_id, status_line(result), run_progress)


_WORKER_BASE = None


def _worker_run(spec: RunSpec, sweep_dir: str, threads: int, retry_failed: bool) -> dict:
    """Runs in a worker process with `threads` torch threads; keeps its base model between the runs it is given."""
    global _WORKER_BASE
    torch.set_num_threads(threads)
    if _WORKER_BASE is None or not _WORKER_BASE.compatible_with(spec.config):
        _WORKER_BASE = prepare_base(spec.config)
    result = execute_spec(spec, Path(sweep_dir), retry_failed, base=_WORKER_BASE)
    return {k: result.get(k) for k in ("status", "eval_loss", "error", "skipped")} | {"threads": torch.get_num_threads()}


def _run_processes(todo: list[RunSpec], sweep_dir: Path, options: SweepOptions, progress: SweepProgress, statuses: dict) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = max(1, options.workers)
    threads = threads_per_worker(workers)
    context = multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(_worker_run, spec, str(sweep_dir), threads, options.retry_failed): spec for spec in todo}
        try:
            for future in as_completed(futures):
                spec = futures[future]
                result = _future_result(future)
                statuses[spec.run_id] = result["status"]
                progress.finish_run(spec.run_id, status_line(result))
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            # Runs already handed to a worker's queue cannot be cancelled: stop the workers, or a SIGTERM to this
            # process (not to its group) would leave them training the queued runs. Their runs have no result.json
            # and run again on resume.
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
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
        ray.init(
            address=options.ray_address,
            include_dashboard=False,
            log_to_driver=False,
            **({} if options.ray_address else {"num_cpus": os.cpu_count()}),
        )
    remote = ray.remote(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_calls=0)(_worker_run)
    threads = max(1, int(options.cpus_per_run))
    pending = {remote.remote(spec, str(Path(sweep_dir).resolve()), threads, options.retry_failed): spec for spec in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a failed task is one failed run
                result = {"status": "error", "error": f"ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"}
            statuses[spec.run_id] = result["status"]
            progress.finish_run(spec.run_id, status_line(result))
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


EXECUTE: dict[str, Callable] = {"local": _run_local, "processes": _run_processes, "ray": _run_ray}
