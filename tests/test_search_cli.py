"""`adaptive-lora search` end to end on a tiny model, offline: trials with pruning on, killed and resumed without
rerunning finished trials, then the final stage (uniform and the best allocation at their own rates, fresh seeds)
as a sweep that `report` and `recommend` accept."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from adaptive_lora.cli import main as cli_main
from adaptive_lora.schema import read_search_record

TRIALS = 4  # 2 uniform (its rate) + 2 searched


def search_command(model: Path, data: Path, out: Path) -> list[str]:
    return [
        "search",
        "--model",
        str(model),
        "--data",
        str(data),
        "data.val_set_size=8",
        "data.test_set_size=8",
        "training.max_steps=2",
        "training.micro_batch_size=4",
        "training.sequence_len=128",
        "training.logging_steps=1",
        "allocation.lora_r=4",
        "eval.generate=false",
        "eval.forgetting=null",
        "--budget",
        "r4",
        "--lr",
        "1e-3:3e-2",
        "--trials",
        str(TRIALS),
        "--top",
        "1",
        "--final-seeds",
        "1,2",
        "search.uniform_rates=2",
        "search.evaluations=2",
        "search.startup_trials=3",
        "--out",
        str(out),
        "--quiet",
    ]


def trial_results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/result.json"))}


def test_search_end_to_end_resumes_and_feeds_report_and_recommend(tiny_llama_dir, data_file, tmp_path):
    out = tmp_path / "search"
    command = [sys.executable, "-m", "adaptive_lora", *search_command(tiny_llama_dir, data_file, out)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # one trial ended and the next one started
            ended = (
                [r for r in trial_results(out).values() if r["status"] in ("done", "pruned")] if (out / "trials").exists() else []
            )
            started = list((out / "trials").glob("*/metrics.jsonl")) if (out / "trials").exists() else []
            if ended and len(started) > len(ended):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the search did not get going in time")
        process.send_signal(signal.SIGKILL)  # no chance to clean up: its trial stays RUNNING in the study
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    before = {name: r for name, r in trial_results(out).items() if r["status"] in ("done", "pruned")}
    assert before and len(before) < TRIALS
    mtimes = {name: (out / "trials" / name / "result.json").stat().st_mtime_ns for name in before}

    assert cli_main(search_command(tiny_llama_dir, data_file, out)) == 0
    after = trial_results(out)
    assert {name: (out / "trials" / name / "result.json").stat().st_mtime_ns for name in before} == mtimes  # not rerun
    ended = {name: r for name, r in after.items() if r["status"] in ("done", "pruned")}
    assert len(ended) == TRIALS  # the killed trial ran again under a new number; the total is still --trials
    assert all(r["test"] is None for r in after.values())  # trials never touched the test split
    assert all(r["validation"] and r["validation"]["loss"] > 0 for r in after.values() if r["status"] == "done")

    study = optuna.load_study(study_name=_study_name(out), storage=f"sqlite:///{out / 'study.db'}")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    uniform = min((t for t in complete if t.user_attrs.get("kind") == "uniform"), key=lambda t: t.value)
    best = min((t for t in complete if t.user_attrs.get("kind") != "uniform"), key=lambda t: t.value)
    assert all(t.user_attrs.get("tokens", 0) > 0 for t in complete)

    final = out / "final"
    suite = yaml.safe_load((final / "suite.yaml").read_text())
    assert suite["seeds"] == [1, 2] and suite["budgets"] == ["r4"]
    entries = {e["label"]: e for e in suite["strategies"]}
    assert entries["uniform"]["learning_rate"] == pytest.approx(uniform.params["learning_rate"])
    assert entries[f"search trial {best.number}"]["learning_rate"] == pytest.approx(best.params["learning_rate"])
    assert entries["control: r1 on v"]["role"] == "capacity-control"
    runs = [json.loads(p.read_text()) for p in final.glob("runs/*/result.json")]
    assert len(runs) == 3 * 2 and {r["seed"] for r in runs} == {1, 2} and all(r["status"] == "done" for r in runs)
    assert all(r["test"]["loss"] > 0 for r in runs)  # judged on the test split
    matched = {r["trainable_params"] for r in runs if r["label"] != "control: r1 on v"}
    assert max(matched) - min(matched) < 200  # budget-matched

    record, problem = read_search_record(final)
    assert problem is None and len(record["trials"]) >= TRIALS
    assert record["best"]["trial"] == best.number and record["uniform"]["trial"] == uniform.number
    report = (final / "report.md").read_text()  # written by `search` with the report's write_report
    assert "## Search" in report and (final / "figures" / "search_history.png").is_file()
    assert (final / "figures" / "search_best_allocation.png").is_file()
    assert cli_main(["recommend", str(final), "--out", str(tmp_path / "recommended")]) == 0
    assert (tmp_path / "recommended").is_dir()


def _study_name(out: Path) -> str:
    return optuna.get_all_study_names(storage=f"sqlite:///{out / 'study.db'}")[0]


def test_a_run_stopped_by_its_pruner_ends_pruned_never_done(tiny_llama_dir, data_file, tmp_path):
    from adaptive_lora.schema import read_metrics, read_result
    from adaptive_lora.training import Pruned, finished_result, train

    heard = []

    def on_eval(step: int, loss: float, tokens: int) -> None:
        heard.append((step, loss, tokens))
        raise Pruned(step)

    config = {
        "model": {"name": str(tiny_llama_dir)},
        "data": {"source": str(data_file), "val_set_size": 8},
        "training": {"max_steps": 6, "eval_steps": 2, "micro_batch_size": 4, "sequence_len": 128, "logging_steps": 1},
        "allocation": {"lora_r": 4},
        "eval": {"generate": False, "forgetting": None},
        "output": {"dir": str(tmp_path / "run")},
    }
    result = train(config, on_eval=on_eval)
    assert result["status"] == "pruned" and result["steps"] == 2 and result["eval_loss"] is None
    assert [step for step, _, _ in heard] == [2] and heard[0][2] == result["tokens_seen"] > 0
    recorded, problem = read_result(tmp_path / "run")
    assert problem is None and recorded["status"] == "pruned"
    assert finished_result(tmp_path / "run") is None  # a sweep or a second train() runs it again
    assert not (tmp_path / "run" / "adapter").exists()
    evals = [r for r in read_metrics(tmp_path / "run") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 2] and evals[1]["eval_loss"] == heard[0][1]
