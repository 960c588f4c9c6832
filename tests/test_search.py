"""The search engine on a synthetic objective with a known optimum (no training): it finds the optimum's
neighbourhood, prunes poor trials by the median rule, enqueues uniform, resumes and counts trials; and the
search's one-line errors."""

from __future__ import annotations

import math
import socket
import statistics
import time

import optuna
import pytest

import search_synthetic as synthetic
from adaptive_lora.cli import main as cli_main
from adaptive_lora.search.settings import search_config
from adaptive_lora.search.space import SearchSpace, role_groups
from adaptive_lora.search.study import KIND_UNIFORM, counted, repair

TRIALS = 40  # the stated number of trials within which the search must reach the optimum's neighbourhood


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('synthetic') / 'study.db'}"
    study = synthetic.run(url, "synthetic", TRIALS)
    return study, SearchSpace(synthetic.settings(), synthetic.ROLES)


def test_the_search_finds_the_optimums_neighbourhood(found):
    study, space = found
    best = study.best_trial
    params = space.profile_params(best.params)
    # the optimum: depth falls to 0.3 of its start, attention at 0.35 of the MLP's weight, learning rate 1e-3
    depth_ratio = params["depth"][1] / params["depth"][0]
    role_ratio = params["roles"]["q"] / params["roles"]["up"]
    rate = space.learning_rate(best.params)
    assert abs(math.log(depth_ratio / 0.3)) < math.log(1.7), depth_ratio
    assert abs(math.log(role_ratio / 0.35)) < math.log(1.7), role_ratio
    assert abs(math.log(rate / 1e-3)) < math.log(1.7), rate
    # ... far closer than where it started: the uniform trials (all weights 1), enqueued first
    uniform = [t for t in study.trials if t.user_attrs.get("kind") == KIND_UNIFORM]
    assert [t.number for t in uniform] == [0, 1, 2] and best.value < min(t.value for t in uniform if t.value is not None) / 5
    assert all(space.profile_params(t.params)["depth"] == [1.0, 1.0] for t in uniform)


def test_pruning_stops_trials_worse_than_the_median_of_those_finished_before(found):
    study, space = found
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the median pruner stopped no trial"
    for trial in pruned:
        assert max(trial.intermediate_values) < synthetic.STEPS - synthetic.EVAL_EVERY  # stopped before its last validation
        earlier = [t.value for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.number < trial.number]
        # intermediate = final + the same offset for every trial, so the median rule compares the finals
        assert synthetic.distance(space, trial.params) > statistics.median(earlier)
        assert trial.user_attrs["status"] == "pruned" and trial.user_attrs["tokens"] < synthetic.STEPS * 100
    assert counted(trials) == TRIALS and len(trials) == TRIALS


def test_a_second_run_resumes_and_a_killed_trial_runs_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = synthetic.run(url, "resume", 5)
    first = {t.number: t.datetime_complete for t in study.trials}
    # a trial left RUNNING by a worker of this machine that no longer exists (killed): PID 2**22 + 1 is above pid_max
    trial = study.ask()
    SearchSpace(synthetic.settings(), synthetic.ROLES).suggest(trial)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{2**22 + 1}")
    assert counted(study.get_trials()) == 5
    assert repair(study) == 1  # failed and enqueued again with the same parameters
    study = synthetic.run(url, "resume", 8)
    trials = study.get_trials()
    assert {t.number: t.datetime_complete for t in trials if t.number in first} == first  # finished trials are not rerun
    assert counted(trials) == 8
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == trial.number]
    assert len(retried) == 1 and retried[0].params == study.trials[trial.number].params


def test_timeout_and_token_cap_stop_new_trials_as_optunas_timeout_does(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = synthetic.run(url, "timeout", 10, timeout=1e-9)  # no trial may start after the timeout
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.WAITING] * 3  # only the enqueued uniform trials
    study = synthetic.run(url, "timeout", 10, max_tokens=2 * synthetic.STEPS * 100)  # two full trials' tokens
    assert counted(study.trials) == 2 and study.trials[0].user_attrs["tokens"] == synthetic.STEPS * 100


def test_roles_are_grouped_or_individual_and_bad_ones_are_named():
    roles = ["q", "k", "v", "o", "up", "gate", "down"]
    assert role_groups("grouped", roles) == [("attention", ("q", "k", "v", "o")), ("mlp", ("up", "gate", "down"))]
    assert [name for name, _ in role_groups("individual", roles)] == roles
    assert role_groups("q+k,v,o,up+gate+down", roles)[0] == ("q+k", ("q", "k"))
    space = SearchSpace(search_config({"knots": 3, "roles": "none", "lr_min": 1e-3, "lr_max": 1e-3}), roles)
    assert [d.name for d in space.dimensions] == ["depth_0", "depth_1", "depth_2"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--roles", "q+query"], "unknown role 'query'"),
        (["--roles", "q,k"], "role 'v' of this model is in no group"),
        (["--knots", "1", "--roles", "none", "--lr", "1e-3"], "the space is empty"),
        (["--budget", "10"], "budget 10 is below the smallest possible"),
        (["--budget", "lots"], "neither a budget rank"),
        (["--final-seeds", "0,1"], "final_seeds must be fresh"),
        (["search.knots=0"], "knots must be from 1 to 16"),
        (["search.colour=red"], "unknown key 'colour'"),
    ],
)
def test_bad_input_is_one_line(tiny_llama_dir, flags, message, capsys):
    assert cli_main(["search", "--model", str(tiny_llama_dir), "--list", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_list_shows_the_space_and_the_budget(tiny_llama_dir, capsys):
    assert cli_main(["search", "--model", str(tiny_llama_dir), "--list", "--budget", "r4", "--lr", "1e-4:1e-2"]) == 0
    out = capsys.readouterr().out
    params_per_rank = 2 * (32 + 32) + 2 * (32 + 16) + 2 * (32 + 48) + (48 + 32)  # q, o; k, v; up, gate; down (tiny llama)
    assert f"budget r4: {4 * params_per_rank * 2:,} trainable parameters" in out  # 2 layers
    assert "learning_rate    log-uniform [0.0001, 0.01]" in out and "role_attention" in out and "depth_2" in out


def test_a_resumed_study_does_not_replay_its_random_start_up_points(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert len(synthetic.run(url, "replay", 6).trials) == 6  # 3 uniform trials, then 3 of TPE's random start-up points
    again = synthetic.run(url, "replay", 9)  # 3 more, still in the start-up phase (8 trials)
    sampled = [tuple(sorted(t.params.items())) for t in again.trials if t.user_attrs.get("kind") != "uniform"]
    assert len(sampled) == 6 and len(set(sampled)) == 6, "the resumed run proposed the first run's points again"


def test_another_search_in_the_same_directory_is_refused_before_anything_is_written(tmp_path):
    import yaml

    from adaptive_lora.errors import UserError
    from adaptive_lora.search.runner import _check_same_search

    config_file = tmp_path / "search.yaml"
    identity = {"run": {"model": {"name": "m"}}, "search": {"budget": "r8", "seed": 0}}
    _check_same_search(config_file, identity)  # a new directory: nothing to compare
    config_file.write_text(yaml.safe_dump({"run": identity["run"], "search": {**identity["search"], "trials": 40}}))
    _check_same_search(config_file, identity)  # the same search with another trial count resumes
    with pytest.raises(UserError, match=r"holds another search \(search.budget differ, see .*search.yaml\); give a new --out"):
        _check_same_search(config_file, {**identity, "search": {"budget": "r16", "seed": 0}})


def test_the_final_stage_needs_a_trial_beyond_the_uniform_ones():
    from adaptive_lora.errors import UserError
    from adaptive_lora.search.settings import search_config

    with pytest.raises(UserError, match=r"trials \(3\) must exceed uniform_rates \(3\)"):
        search_config({"trials": 3, "uniform_rates": 3})
    assert search_config({"trials": 3, "uniform_rates": 3, "final": False}).trials == 3


def test_the_parent_repairs_once_before_its_workers_start(tmp_path):
    from adaptive_lora.search.runner import _repair_before_workers

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = synthetic.run(url, "parent", 4)
    trial = study.ask()
    SearchSpace(synthetic.settings(), synthetic.ROLES).suggest(trial)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{2**22 + 1}")  # killed: above pid_max
    cfg = synthetic.settings(trials=4).to_dict()
    args = (
        {},
        cfg,
        synthetic.ROLES,
        synthetic.IDENTITY,
        "parent",
        url,
        None,
        str(tmp_path),
        synthetic.STEPS,
        synthetic.EVAL_EVERY,
    )
    _repair_before_workers(*args)
    _repair_before_workers(*args)  # a second repair finds nothing left to retry
    waiting = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == study.trials[trial.number].params


def short_heartbeat_storage(tmp_path):
    """The search's storage settings with a heartbeat grace of 1 s, so a silent worker is stale at once."""
    return optuna.storages.RDBStorage(
        f"sqlite:///{tmp_path / 'study.db'}",
        heartbeat_interval=1,
        grace_period=1,
        heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3),
    )


def test_a_trial_whose_heartbeat_stopped_on_another_machine_is_retried_by_repair(tmp_path):
    storage = short_heartbeat_storage(tmp_path)
    study = optuna.create_study(storage=storage, study_name="stale")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr("worker", "another-host:123")  # not this machine's: only its heartbeat can tell
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    repair(study)
    states = [t.state for t in study.get_trials()]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.WAITING]


def test_the_final_stage_waits_for_trials_still_running_elsewhere(tmp_path):
    from adaptive_lora.search.study import wait_for_running

    storage = short_heartbeat_storage(tmp_path)
    study = optuna.create_study(storage=storage, study_name="elsewhere")
    assert wait_for_running(study, poll_s=0.1) == 0
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)  # a worker on another machine, silent from now on
    assert wait_for_running(study, poll_s=0.2) == 1  # returns once its heartbeat is stale and it is failed
    assert study.get_trials()[0].state == optuna.trial.TrialState.FAIL
