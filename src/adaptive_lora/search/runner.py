"""`run_search`: trials (one or more workers on one Optuna study), then the final stage. A search directory:

SEARCH/.adaptive-lora-search   marks it as ours
SEARCH/search.yaml             the run settings and the search's own settings
SEARCH/study.db                the Optuna study (the default storage; --storage puts it elsewhere)
SEARCH/trials/trial-NNNN/      one run directory per trial (a pruned trial's result says `pruned`)
SEARCH/final/                  the final stage: an ordinary sweep (suite.yaml, runs/, report) and search.json
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..anatomy import Anatomy
from ..budget import budget_for_rank
from ..config import RunConfig
from ..environment import resolved_precision_override
from ..errors import UserError
from ..io import atomic_write_text
from ..planning import anatomy_of
from ..schema import SUITE_FILE, write_search_record
from ..sweep.executors import SweepOptions, threads_per_worker
from ..sweep.runner import run_sweep, sigterm_as_interrupt
from ..sweep.suite import Budget, parse_budget, suite_from_dict
from ..workdirs import claim_search_dir, claim_sweep_dir
from .final import choose, final_suite, ranks_at_budget, search_record
from .settings import RUN_CONTROL, SearchConfig, identity_hash
from .space import SearchSpace
from .study import (
    counted,
    differences,
    load,
    open_storage,
    open_study,
    repair,
    run_worker,
    storage_url,
    study_name,
    wait_for_running,
)
from .trial import training_steps

SEARCH_CONFIG_FILE = "search.yaml"
FINAL_DIR = "final"


@dataclass
class SearchPlan:
    run: RunConfig  # the shared run settings (precision pinned to this machine)
    cfg: SearchConfig
    anatomy: Anatomy
    space: SearchSpace
    budget: Budget
    target: int  # the budget in trainable parameters
    identity: dict[str, Any]
    name: str  # the study's name


def prepare(run: RunConfig, cfg: SearchConfig) -> SearchPlan:
    """Check everything that needs no training (space, budget, test split) and name the study."""
    run = run.with_overrides(resolved_precision_override(run.model.precision, run.model.device))
    anatomy = anatomy_of(run.model.name, run.allocation.target_modules, run.model.trust_remote_code)
    space = SearchSpace(cfg, anatomy.roles())
    try:
        budget = parse_budget(cfg.budget, "search")
    except UserError:
        raise UserError(
            f"search --budget {cfg.budget!r} is neither a budget rank (e.g. r8) nor a parameter count (e.g. 1.5M)"
        ) from None
    target = budget.params if budget.params is not None else budget_for_rank(anatomy, budget.rank)
    try:
        ranks_at_budget(anatomy, run, space.profile_params(space.uniform_point(cfg.lr_min)), budget)
    except UserError as exc:
        raise UserError(f"search --budget {cfg.budget}: {exc}") from None
    run_dict = {k: v for k, v in run.to_dict().items() if k != "output"}
    identity = {"run": run_dict, "search": cfg.identity()}
    return SearchPlan(run, cfg, anatomy, space, budget, target, identity, study_name(cfg, identity_hash(run_dict, cfg)))


def describe(plan: SearchPlan) -> list[str]:
    cfg, uniform_rank = plan.cfg, plan.target / plan.anatomy.params_per_rank()
    lines = [
        f"budget {plan.budget.label}: {plan.target:,} trainable parameters (uniform rank {uniform_rank:.3g}) over "
        f"{len(plan.anatomy.modules)} modules, {plan.anatomy.num_layers} layers",
        f"family: profile (depth knots x role weights, shape rank {cfg.shape_rank}), rescaled to the budget",
        *plan.space.describe(),
        f"trials: {cfg.trials} in all, {len(plan.space.uniform_rates())} of them uniform at learning rates "
        f"{', '.join(f'{r:g}' for r in plan.space.uniform_rates())}; sampler TPE (seed {cfg.seed}), pruner {cfg.pruner}, "
        f"{cfg.evaluations} validations per trial",
        f"final stage: the best {cfg.top} distinct allocations and uniform, seeds {cfg.final_seeds}"
        if cfg.final
        else "final stage: not here (--no-final)",
        f"study: {plan.name}",
    ]
    return lines


def run_search(plan: SearchPlan, out: str | Path) -> dict[str, Any]:
    """Run the trials until the study has --trials (or --timeout), then the final stage; returns a summary."""
    from ..data import prepare_data
    from ..models import load_tokenizer

    cfg, run = plan.cfg, plan.run
    if cfg.final and not run.data.test_set_size:
        raise UserError(
            "search: the final stage judges on the test split and data.test_set_size is 0; set it (e.g. data.test_set_size=0.2), "
            "or run this worker with --no-final"
        )
    search_dir = claim_search_dir(out)
    _check_same_search(search_dir / SEARCH_CONFIG_FILE, plan.identity)
    atomic_write_text(
        search_dir / SEARCH_CONFIG_FILE, yaml.safe_dump({"run": plan.identity["run"], "search": cfg.to_dict()}, sort_keys=False)
    )
    data = prepare_data(run.data, load_tokenizer(run.model.name, run.model.trust_remote_code), run.training.sequence_len)
    steps = training_steps(len(data.train), run)
    eval_every = max(1, steps // cfg.evaluations)
    url = storage_url(cfg, search_dir)
    print(
        f"search {plan.name}: up to {cfg.trials} trials of {steps} steps, validation every {eval_every} -> {search_dir}",
        file=sys.stderr,
    )
    args = (
        run.to_dict(),
        cfg.to_dict(),
        plan.anatomy.roles(),
        plan.identity,
        plan.name,
        url,
        plan.budget,
        str(search_dir),
        steps,
        eval_every,
    )
    try:
        _run_workers(args, cfg.workers)
    except KeyboardInterrupt:
        print(f"interrupted: finished trials are kept; run the same command again to resume ({search_dir})", file=sys.stderr)
        raise
    study = load(plan.name, url)
    summary: dict[str, Any] = {
        "search_dir": str(search_dir),
        "study": plan.name,
        "trials": counted(study.get_trials(deepcopy=False)),
    }
    if not cfg.final:
        return summary
    wait_for_running(study)
    uniform, picks = choose(study, plan.space, plan.anatomy, run, plan.budget, cfg.top)
    final_dir = claim_sweep_dir(search_dir / FINAL_DIR)
    extra = {
        "steps": steps,
        "eval_every": eval_every,
        "pruner": cfg.pruner,
        "final_seeds": cfg.final_seeds,
        "search_seed": cfg.seed,
    }
    write_search_record(
        final_dir, search_record(study, plan.space, plan.budget, plan.target, uniform, picks, plan.anatomy, extra)
    )
    suite = suite_from_dict(
        final_suite(run, cfg, uniform, picks, plan.anatomy, f"search-{plan.name}"), source=str(final_dir / SUITE_FILE)
    )
    print(
        f"final stage: uniform (lr {uniform.rate:.3g}, trial {uniform.number}) and "
        f"{', '.join(f'trial {p.number} (lr {p.rate:.3g})' for p in picks)} on seeds {cfg.final_seeds} -> {final_dir}",
        file=sys.stderr,
    )
    executor = "local" if cfg.workers == 1 else "processes"
    swept = run_sweep(suite, final_dir, SweepOptions(executor=executor, workers=cfg.workers, quiet=cfg.quiet))
    return summary | {"final_dir": str(final_dir), "interrupted": swept["interrupted"], "statuses": swept["statuses"]}


def _check_same_search(config_file: Path, identity: dict[str, Any]) -> None:
    """A search directory holds one search: its trial folders are numbered per study, so another search there
    would overwrite them."""
    if not config_file.is_file():
        return
    try:
        recorded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        recorded = {}
    if not isinstance(recorded, dict) or not isinstance(recorded.get("search"), dict):
        raise UserError(f"{config_file} is not a search's settings; give a new --out")
    search = {k: v for k, v in recorded["search"].items() if k not in RUN_CONTROL}
    differs = differences({"run": recorded.get("run") or {}, "search": search}, identity)
    if differs:
        raise UserError(
            f"{config_file.parent} holds another search ({', '.join(differs[:3])} differ, see {config_file}); "
            "give a new --out, or the same settings to resume it"
        )


def _run_workers(args: tuple, workers: int) -> None:
    """One worker in this process, or `workers` spawned processes with cores / workers torch threads each."""
    if workers == 1:
        with sigterm_as_interrupt():
            _worker_main(*args, index=0, threads=None)
        return
    _repair_before_workers(*args)  # once: workers repairing at the same time would retry a trial twice
    context = multiprocessing.get_context("spawn")  # fork after torch threads start can deadlock
    threads = threads_per_worker(workers)
    processes = [context.Process(target=_worker_main, args=args, kwargs={"index": i, "threads": threads}) for i in range(workers)]
    with sigterm_as_interrupt():
        for process in processes:
            process.start()
        try:
            for process in processes:
                process.join()
        except KeyboardInterrupt:
            for process in processes:
                if process.is_alive():
                    os.kill(process.pid, signal.SIGTERM)  # each marks its trial interrupted (retried on resume)
            for process in processes:
                process.join()
            raise
    failed = [p.exitcode for p in processes if p.exitcode not in (0, None)]
    if failed:
        raise UserError(
            f"search: {len(failed)} of {workers} worker processes failed (exit code {failed[0]}); see the messages above"
        )


def _repair_before_workers(run, cfg, roles, identity, name, url, budget, search_dir, steps, eval_every) -> None:
    from .settings import search_config

    config = search_config(cfg) if isinstance(cfg, dict) else cfg
    study = open_study(config, identity, name, open_storage(url), SearchSpace(config, roles), steps, eval_every)
    repair(study)


def _worker_main(
    run, cfg, roles, identity, name, url, budget, search_dir, steps, eval_every, *, index: int, threads: int | None
) -> None:
    from .settings import search_config
    from .trial import TrainingObjective

    if threads:
        import torch

        torch.set_num_threads(threads)
    config = search_config(cfg) if isinstance(cfg, dict) else cfg
    if threads:  # a spawned worker: plain lines, each prefixed with the worker
        config.quiet = True
    space = SearchSpace(config, roles)
    if threads:  # a spawned worker: SIGTERM from its parent marks the running trial interrupted
        signal.signal(signal.SIGTERM, sigterm_as_interrupt._raise)
    objective = TrainingObjective(
        run, config, space, budget, search_dir, steps, eval_every, label=f"[w{index}] " if threads else ""
    )
    try:
        run_worker(config, identity, name, url, space, objective, steps, eval_every, worker=index, repaired=bool(threads))
    except UserError as exc:
        if threads:  # a spawned worker reports its one line and exits non-zero
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    except KeyboardInterrupt:
        if threads:
            raise SystemExit(130) from None
        raise
