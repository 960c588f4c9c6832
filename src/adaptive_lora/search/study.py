"""The search engine: an Optuna study (TPE sampler, a pruner, RDB storage) worked by one or more processes.

Nothing here trains: `run_workers` drives any objective `objective(trial, values) -> validation loss` that
reports intermediate values with `trial.report` and raises `optuna.TrialPruned` when `trial.should_prune()`
(search/trial.py trains; the tests use a synthetic function of the same space).

- Storage: SQLite in the search directory by default, PostgreSQL (or any SQLAlchemy URL) with --storage.
  Heartbeats let another process fail and retry the trial of a worker that vanished (a machine lost);
  on this machine a worker that was killed is recognised at once by its PID.
- --trials counts the study's trials that ended (complete, pruned, failed in training), over every
  worker and invocation; a trial interrupted or killed does not count and runs again (same parameters).
  As with Optuna's MaxTrialsCallback, workers that finish together may run up to workers - 1 more.
- --timeout is Optuna's: no trial starts after that many seconds of this invocation; search.max_tokens stops
  starting trials once the study's trials have spent that many training tokens (equal-compute comparisons).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import sqlalchemy
from optuna.trial import TrialState

from ..errors import UserError
from ..schema import FAILED_STATUSES
from .settings import SearchConfig
from .space import SearchSpace

HEARTBEAT_S, GRACE_S = 30, 120  # a worker silent for GRACE_S seconds is taken for lost and its trial retried
IDENTITY_ATTR = "adaptive_lora_search"
KIND_UNIFORM, KIND_SEARCH = "uniform", "search"
Objective = Callable[[Any, dict[str, float]], float]

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


class TrialFailed(Exception):
    """A trial whose training failed (diverged, oom, error): recorded as FAIL with its reason, never retried."""


def storage_url(cfg: SearchConfig, search_dir: Path) -> str:
    return cfg.storage or f"sqlite:///{(Path(search_dir) / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    engine: dict[str, Any] = {"creator": _sqlite_connector(url)} if url.startswith("sqlite:///") else {"pool_pre_ping": True}
    try:
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
                )
            except sqlalchemy.exc.IntegrityError:  # workers that start together race to create the tables: the loser retries
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
    except ImportError as exc:
        raise UserError(
            f"storage {url.split(':', 1)[0]}: a database driver is missing ({exc}); for PostgreSQL: pip install 'adaptive-lora[postgres]'"
        ) from None
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy's many connection errors: one line naming the storage
        raise UserError(
            f"cannot open the search storage {url.split('@')[-1]}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from None


def _sqlite_connector(url: str) -> Callable[[], Any]:
    """SQLite in WAL mode: workers read while one writes, and a commit need not wait for the disk (synchronous=NORMAL
    keeps the file consistent; a power cut may lose the last commits, which a resumed search redoes)."""
    import sqlite3

    path = url[len("sqlite:///") :]

    def connect():
        connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        return connection

    return connect


def make_pruner(cfg: SearchConfig, steps: int, eval_every: int) -> optuna.pruners.BasePruner:
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=int(cfg.prune_after * steps), interval_steps=1)
    if cfg.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=eval_every, reduction_factor=3)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=eval_every, max_resource=steps, reduction_factor=3)
    return optuna.pruners.NopPruner()


def open_study(
    cfg: SearchConfig,
    identity: dict[str, Any],
    name: str,
    storage,
    space: SearchSpace,
    steps: int,
    eval_every: int,
    worker: int = 0,
):
    """Create the study (and enqueue the uniform trials), or load it and check that it is this search."""
    pruner = make_pruner(cfg, steps, eval_every)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, sampler=_sampler(cfg, worker), pruner=pruner, direction="minimize"
        )
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, pruner=pruner)
        created = False
    if not created:
        differs = differences(_wait_for_identity(study), identity)
        if differs:
            raise UserError(
                f"study {name!r} belongs to another search ({', '.join(differs[:3])} differ); give another --study name or --out"
            )
        # Seeded as the first run was, TPE's random start-up would propose that run's points again.
        study.sampler = _sampler(cfg, worker, len(study.get_trials(deepcopy=False)))
        return study
    for rate in space.uniform_rates():
        study.enqueue_trial(space.uniform_point(rate), user_attrs={"kind": KIND_UNIFORM})
    study.set_user_attr(IDENTITY_ATTR, identity)  # last: a loader that sees it knows the study is set up
    return study


def _sampler(cfg: SearchConfig, worker: int, existing: int = 0) -> optuna.samplers.TPESampler:
    """TPE seeded by the search's seed, the worker and how many trials the study already holds."""
    seed = cfg.seed + worker if existing == 0 else int(np.random.SeedSequence([cfg.seed, worker, existing]).generate_state(1)[0])
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=cfg.startup_trials, constant_liar=True)


def differences(recorded: dict, identity: dict) -> list[str]:
    """Dotted names of the settings in which two identities ({run: {...}, search: {...}}) differ."""
    found = []
    for part in sorted(set(recorded) | set(identity)):
        a, b = recorded.get(part) or {}, identity.get(part) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                found += (
                    [f"{part}.{key}.{k}" for k in sorted(set(a[key]) | set(b[key])) if a[key].get(k) != b[key].get(k)]
                    if isinstance(a.get(key), dict) and isinstance(b.get(key), dict)
                    else [f"{part}.{key}"]
                )
    return found


def _wait_for_identity(study, attempts: int = 60) -> dict:
    """A study another worker created a moment ago may not carry its identity yet."""
    for _ in range(attempts):
        recorded = study.user_attrs.get(IDENTITY_ATTR)
        if recorded is not None:
            return recorded
        time.sleep(0.5)
    raise UserError(f"study {study.study_name!r} exists but is not an adaptive-lora search; give another --study name")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def counted(trials) -> int:
    """Trials that ended for good: complete, pruned, or failed in training (not interrupted, not lost)."""
    return sum(
        t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and t.user_attrs.get("status") in FAILED_STATUSES)
        for t in trials
    )


def tokens_spent(trials) -> int:
    """Training tokens the study's trials have spent (running ones so far): the search's compute."""
    # a retried trial waiting to run carries a copy of its earlier attempt's count, which is counted there
    return sum(int(t.user_attrs.get("tokens") or 0) for t in trials if t.state != TrialState.WAITING)


def repair(study) -> int:
    """Fail the trials of killed workers on this machine, and retry those and interrupted ones (same parameters)."""
    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    # Optuna fails (and retries) trials whose heartbeat stopped only inside optimize(), which a worker skips when
    # the finished trials plus a stale running one already make --trials: do it here, or the study stays one short.
    optuna.storages.fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    repaired = 0
    for trial in trials:
        if trial.state == TrialState.RUNNING and _killed_here(trial.user_attrs.get("worker")):
            try:
                study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # another process repaired it first
        elif not (trial.state == TrialState.FAIL and trial.user_attrs.get("status") == "interrupted"):
            continue
        if trial.number not in retried:
            retry(study, study._storage.get_trial(trial._trial_id))
            repaired += 1
    return repaired


def _killed_here(worker: str | None) -> bool:
    host, _, pid = (worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def run_worker(
    cfg: SearchConfig,
    identity: dict,
    name: str,
    url: str,
    space: SearchSpace,
    objective: Objective,
    steps: int,
    eval_every: int,
    worker: int = 0,
    repaired: bool = False,
) -> optuna.Study:
    """One worker: open (or create) the study, repair it (unless the parent did, `repaired`), and optimise until
    --trials, --timeout or Ctrl-C. Returns the study."""
    study = open_study(cfg, identity, name, open_storage(url), space, steps, eval_every, worker)
    if not repaired:
        repair(study)

    def enough(trials) -> bool:
        if cfg.max_tokens is not None and tokens_spent(trials) >= cfg.max_tokens:
            return True
        return counted(trials) + sum(t.state == TrialState.RUNNING for t in trials) >= cfg.trials

    def stop_when_enough(study, _trial) -> None:
        if enough(study.get_trials(deepcopy=False)):
            study.stop()

    def run(trial) -> float:
        trial.set_user_attr("worker", worker_name())
        trial.set_user_attr("kind", trial.user_attrs.get("kind", KIND_SEARCH))
        trial.set_user_attr("tokens", 0)  # a retried trial's copy of its earlier attempt's count: counted there
        values = space.suggest(trial)
        try:
            value = objective(trial, values)
        except optuna.TrialPruned:
            trial.set_user_attr("status", "pruned")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("status", "interrupted")
            raise
        except TrialFailed as exc:
            trial.set_user_attr("status", str(exc).split(":", 1)[0])
            trial.set_user_attr("error", str(exc))
            raise
        trial.set_user_attr("status", "done")
        return value

    if enough(study.get_trials(deepcopy=False)):
        return study
    study.optimize(run, timeout=cfg.timeout, callbacks=[stop_when_enough], catch=(TrialFailed,))
    return study


def wait_for_running(study, poll_s: float = HEARTBEAT_S) -> int:
    """Wait until no trial of the study runs (workers on other machines may still be training), so that the final
    stage chooses from every trial; a lost worker's trial ends by its heartbeat. Returns the trials waited for."""
    waited = 0
    while True:
        optuna.storages.fail_stale_trials(study)
        running = sum(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False))
        if not running:
            return waited
        if not waited:
            print(f"waiting for {running} trial(s) still running elsewhere before the final stage", file=sys.stderr)
        waited = max(waited, running)
        time.sleep(poll_s)


def load(name: str, url: str):
    return optuna.load_study(study_name=name, storage=open_storage(url))


def study_name(cfg: SearchConfig, identity_hash: str) -> str:
    return cfg.study or f"adaptive-lora-{identity_hash}"
