"""Sweeps on a tiny model: expansion, resume, skipping, executors, CLI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from adaptive_lora.cli import main as cli_main
from adaptive_lora.errors import UserError
from adaptive_lora.report import write_report
from adaptive_lora.sweep.executors import SweepOptions
from adaptive_lora.sweep.runner import run_sweep
from adaptive_lora.sweep.suite import load_suite, parse_budget


def write_suite(tmp_path: Path, model_dir: Path, data: Path, max_steps: int = 3, **extra) -> Path:
    suite = {
        "name": "tiny",
        "model": {"name": str(model_dir)},
        "data": {"source": str(data), "val_set_size": 8},
        "training": {
            "max_steps": max_steps,
            "micro_batch_size": 4,
            "learning_rate": 1e-2,
            "logging_steps": 1,
            "sequence_len": 128,
        },
        "allocation": {"lora_r": 4, "lora_alpha": 8},
        "strategies": [
            {"strategy": "uniform", "params": {"rank": 4}},
            {"strategy": "linear_decay", "params": {"start": 8, "end": 2}},
        ],
        "budgets": ["r4"],
        "seeds": [0, 1],
        **extra,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((sweep / "runs").glob("*/result.json"))}


def test_suite_expands_to_the_product_with_stable_ids(tiny_llama_dir, data_file, tmp_path):
    suite = load_suite(str(write_suite(tmp_path, tiny_llama_dir, data_file)))
    assert len(suite.runs) == 2 * 1 * 2
    again = load_suite(str(write_suite(tmp_path, tiny_llama_dir, data_file)))
    assert [r.run_id for r in suite.runs] == [r.run_id for r in again.runs]
    assert {r.config.allocation.budget_rank for r in suite.runs} == {4}
    overridden = load_suite(str(write_suite(tmp_path, tiny_llama_dir, data_file)), ["seeds=[0,1,2]", "training.max_steps=2"])
    assert len(overridden.runs) == 6 and overridden.runs[0].config.training.max_steps == 2
    assert overridden.runs[0].run_id != suite.runs[0].run_id  # the id follows the resolved config


def test_budget_parsing_and_bad_suites(tmp_path):
    assert (
        parse_budget("r8", "x").rank == 8
        and parse_budget("1.5M", "x").params == 1_500_000
        and parse_budget(20000, "x").label == "20k"
    )
    with pytest.raises(UserError, match="budget 'lots'"):
        parse_budget("lots", "x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategies: [{strategy: uniform}]\nbugdets: [r4]\n")
    with pytest.raises(UserError, match="unknown key 'bugdets'"):
        load_suite(str(bad))
    with pytest.raises(UserError, match="neither a built-in suite"):
        load_suite("no-such-suite")


def test_builtin_suites_expand():
    seed_study = load_suite("seed-study")
    labels = ["uniform r8", "uniform r16", "linear_decay 16->4", "attention_heavy 16/8", "empirical x16", "control: r1 on v"]
    assert list(dict.fromkeys(r.label for r in seed_study.runs)) == labels
    assert all(r.budget.label == "own" for r in seed_study.runs) and len({r.seed for r in seed_study.runs}) >= 3
    assert {r.label for r in seed_study.runs if r.role == "capacity-control"} == {"control: r1 on v"}
    matched = load_suite("budget-matched")
    assert len({r.seed for r in matched.runs}) >= 3 and {r.budget.label for r in matched.runs} == {"r4", "r8", "own"}
    assert {r.budget.label for r in matched.runs if r.role == "capacity-control"} == {"own"}  # trained once, not per budget


def test_learning_rate_grid_doubles_the_listing(capsys):
    assert cli_main(["run", "budget-matched", "--list"]) == 0
    single = [line for line in capsys.readouterr().out.splitlines() if "  (" in line]
    assert cli_main(["run", "budget-matched", "--list", "learning_rates=[1e-4,5e-4]"]) == 0
    double = [line for line in capsys.readouterr().out.splitlines() if "  (" in line]
    assert len(double) == 2 * len(single) and {" lr 0.0001 ", " lr 0.0005 "} <= {
        line[line.index(" lr ") : line.index(" seed")] + " " for line in double
    }


def test_staged_selection_lists_the_later_seeds_as_pending():
    staged = load_suite("budget-matched", ["learning_rates=[1e-4,5e-4,1e-3]", "select_lr_on_seeds=1"])
    assert staged.staged and staged.selection_seeds == [0]
    groups = 6 * 2 + 1  # six strategies at r4 and r8, and the capacity control once
    assert len(staged.runs) == groups * 3 * 3  # every rate x every seed can exist
    assert len(staged.selection_runs()) == groups * 3 and staged.expected_runs() == groups * 3 + groups * 2
    assert {r.seed for r in staged.selection_runs()} == {0}


def test_sweep_runs_reports_and_skips_finished_runs(tiny_llama_dir, data_file, tmp_path, capsys):
    suite_path = write_suite(tmp_path, tiny_llama_dir, data_file)
    out = tmp_path / "sweep"
    assert cli_main(["run", str(suite_path), "--out", str(out), "--quiet"]) == 0
    first = results(out)
    assert len(first) == 4 and all(r["status"] == "done" for r in first.values())
    assert all(r["budget_label"] == "r4" for r in first.values())
    achieved = {r["trainable_params"] for r in first.values()}
    assert max(achieved) - min(achieved) < 200  # budget-matched: within one rank-step of each other
    for name in ("results.csv", "summary.csv", "stats.csv", "report.md", "report.html"):
        assert (out / name).is_file(), name
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    capsys.readouterr()
    assert cli_main(["run", str(suite_path), "--out", str(out), "--quiet"]) == 0
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes  # nothing was retrained
    assert capsys.readouterr().err.count("skipped (done") == 4


def test_failed_runs_are_kept_and_retried_only_when_asked(tiny_llama_dir, data_file, tmp_path, capsys):
    suite_path = write_suite(tmp_path, tiny_llama_dir, data_file, seeds=[0])
    out = tmp_path / "sweep"
    diverging = ["training.learning_rate=1e12", "training.max_grad_norm=0", "training.warmup_ratio=0", "training.max_steps=6"]
    capsys.readouterr()
    assert cli_main(["run", str(suite_path), *diverging, "--out", str(out), "--quiet"]) == 1  # no run finished
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"no run of {out} finished (2 diverged)" in errors[0] and "--retry-failed" in errors[0]
    assert set(r["status"] for r in results(out).values()) == {"diverged"}
    summary = run_sweep(load_suite(str(suite_path), diverging), out, SweepOptions(quiet=True))
    assert set(summary["statuses"].values()) == {"diverged"}  # skipped, still reported
    write_report(out)
    report = (out / "report.md").read_text()
    assert "diverged" in report and "nan" not in report.lower().replace("diverged (nan)", "")
    mtimes = [p.stat().st_mtime_ns for p in sorted((out / "runs").glob("*/result.json"))]
    run_sweep(load_suite(str(suite_path), diverging), out, SweepOptions(quiet=True, retry_failed=True))
    assert [p.stat().st_mtime_ns for p in sorted((out / "runs").glob("*/result.json"))] != mtimes


def test_killed_sweep_resumes_where_it_stopped(tiny_llama_dir, data_file, tmp_path):
    suite_path = write_suite(tmp_path, tiny_llama_dir, data_file, max_steps=40)
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "adaptive_lora", "run", str(suite_path), "--out", str(out), "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until one run is done and the next has started training
            done = [r for r in results(out).values() if r["status"] == "done"] if (out / "runs").exists() else []
            started = [p for p in (out / "runs").glob("*/metrics.jsonl")] if (out / "runs").exists() else []
            if done and len(started) > len(done):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep did not get going in time")
        process.send_signal(signal.SIGKILL)  # no chance to clean up
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    before = results(out)
    finished = {run_id for run_id, r in before.items() if r["status"] == "done"}
    assert finished and len(finished) < 4
    mtimes = {run_id: (out / "runs" / run_id / "result.json").stat().st_mtime_ns for run_id in finished}
    summary = run_sweep(load_suite(str(suite_path), ["training.max_steps=40"]), out, SweepOptions(quiet=True))
    after = results(out)
    assert len(after) == 4 and all(r["status"] == "done" for r in after.values())
    assert {run_id: (out / "runs" / run_id / "result.json").stat().st_mtime_ns for run_id in finished} == mtimes
    assert summary["interrupted"] is False


def test_sigterm_marks_the_current_run_interrupted(tiny_llama_dir, data_file, tmp_path):
    suite_path = write_suite(tmp_path, tiny_llama_dir, data_file, max_steps=400, seeds=[0])
    out = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "adaptive_lora", "run", str(suite_path), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list((out / "runs").glob("*/metrics.jsonl")):
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "run the same command again to resume" in err
    statuses = [r["status"] for r in results(out).values()]
    assert statuses == ["interrupted"]


def test_local_and_process_executors_give_identical_results(tiny_llama_dir, data_file, tmp_path):
    suite_path = write_suite(tmp_path, tiny_llama_dir, data_file, seeds=[0])
    local = run_sweep(load_suite(str(suite_path)), tmp_path / "local", SweepOptions(quiet=True))
    procs = run_sweep(load_suite(str(suite_path)), tmp_path / "procs", SweepOptions(executor="processes", workers=2, quiet=True))
    assert set(local["statuses"].values()) == set(procs["statuses"].values()) == {"done"}
    a, b = results(tmp_path / "local"), results(tmp_path / "procs")
    assert a.keys() == b.keys()
    for run_id in a:
        assert a[run_id]["eval_loss"] == pytest.approx(b[run_id]["eval_loss"], abs=1e-6), run_id
        assert a[run_id]["trainable_params"] == b[run_id]["trainable_params"]


@pytest.mark.ray
def test_ray_executor_on_a_local_instance(tiny_llama_dir, data_file, tmp_path):
    ray = pytest.importorskip("ray")
    suite_path = write_suite(tmp_path, tiny_llama_dir, data_file, seeds=[0])
    run_sweep(load_suite(str(suite_path)), tmp_path / "local", SweepOptions(quiet=True))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_sweep(
            load_suite(str(suite_path)), tmp_path / "ray", SweepOptions(executor="ray", cpus_per_run=1, quiet=True)
        )
    finally:
        ray.shutdown()
    assert set(on_ray["statuses"].values()) == {"done"}
    a, b = results(tmp_path / "local"), results(tmp_path / "ray")
    assert a.keys() == b.keys()
    for run_id in a:
        assert a[run_id]["eval_loss"] == pytest.approx(b[run_id]["eval_loss"], abs=1e-6)


def test_report_command_and_missing_directory(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
