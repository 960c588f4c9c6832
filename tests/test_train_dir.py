"""`train` and its run directory: one process at a time, nothing created on bad input, every step trains,
wall time accounted for by phase, and the base model's scores stored once per sweep."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from adaptive_lora.cli import main as cli_main
from adaptive_lora.schema import RUN_MARKER, read_allocation
from adaptive_lora.training import scoring
from adaptive_lora.training.base_store import BASE_STORE_DIR, stored_base_scores

TINY_TRAIN = ["data.val_set_size=8", "training.micro_batch_size=4", "training.sequence_len=128", "eval.forgetting=null"]


def train_command(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "adaptive_lora",
        "train",
        f"model.name={model}",
        f"data.source={data}",
        *TINY_TRAIN,
        *extra,
        "--out",
        str(out),
    ]


_WAIT_THEN_TRAIN = """
import sys, time
from pathlib import Path
from adaptive_lora.cli import main  # imported while the first run starts, so the attempt below is immediate
marker = Path(sys.argv[1])
while not (marker.is_file() and marker.read_text().strip()):  # the first run holds the lock and wrote its PID
    time.sleep(0.02)
sys.exit(main(sys.argv[2:]))
"""


def test_a_second_train_on_the_same_directory_exits_at_once_and_the_first_run_stays_whole(tiny_llama_dir, data_file, tmp_path):
    out = tmp_path / "same"
    second_args = train_command(tiny_llama_dir, data_file, out, "allocation.lora_r=8", "training.max_steps=150")[3:]
    second = subprocess.Popen(
        [sys.executable, "-c", _WAIT_THEN_TRAIN, str(out / RUN_MARKER), *second_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = subprocess.Popen(
        train_command(tiny_llama_dir, data_file, out, "allocation.lora_r=4", "training.max_steps=150"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, second_err = second.communicate(timeout=300)
        assert first.poll() is None, "the first run ended before the second was tried: make it longer"
        assert second.returncode == 2
        (line,) = second_err.strip().splitlines()
        assert str(out) in line and f"PID {first.pid}" in line
        _, err = first.communicate(timeout=600)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    assert first.returncode == 0, err[-2000:]
    result = json.loads((out / "result.json").read_text())
    config = yaml.safe_load((out / "config.yaml").read_text())
    allocation = read_allocation(out).to_dict()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config == result["config"] and config["allocation"]["lora_r"] == 4
    assert {m["rank"] for m in allocation["modules"]} == {4} and adapter["r"] == 4
    assert (out / "train.log").read_text().count("status done") == 1
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # one curve, not two interleaved


@pytest.mark.parametrize("where", ["--out", "default"])
def test_bad_data_leaves_no_run_directory(where, tiny_llama_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["train", f"model.name={tiny_llama_dir}", "--data", "skills:n=abc"]
    if where == "--out":
        args += ["--out", str(tmp_path / "out")]
    assert cli_main(args) == 2
    assert "skills" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_one_step_run_changes_the_adapter(tiny_llama_dir, data_file, tmp_path):
    out = tmp_path / "one"
    assert cli_main(train_command(tiny_llama_dir, data_file, out, "training.max_steps=1")[3:]) == 0
    lora_b = {k: v for k, v in load_file(out / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # B starts at zero: only a real step moves it


def test_wall_time_is_accounted_for_by_phase(tiny_llama_dir, data_file, tmp_path):
    out = tmp_path / "phases"
    assert cli_main(train_command(tiny_llama_dir, data_file, out, "training.max_steps=2")[3:]) == 0
    result = json.loads((out / "result.json").read_text())
    phases = result["time_by_phase_s"]
    assert set(phases) == {"load", "plan", "base_eval", "train", "eval", "save", "other"}
    assert all(seconds >= 0 for seconds in phases.values())
    assert sum(phases.values()) == pytest.approx(result["wall_time_s"], abs=0.01)  # rounded to ms per phase
    assert phases["train"] == pytest.approx(result["train_time_s"], abs=0.01)
    assert result["precision"] == result["config"]["model"]["precision"] == result["environment"]["precision"]


def test_base_scores_are_computed_once_per_sweep_and_reused_after_a_restart(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    from adaptive_lora.sweep.executors import SweepOptions
    from adaptive_lora.sweep.runner import run_sweep
    from adaptive_lora.sweep.suite import suite_from_dict

    suite = {
        "name": "store",
        "model": {"name": str(tiny_llama_dir)},
        "data": {"source": str(data_file), "val_set_size": 8, "test_set_size": 4},
        "training": {"max_steps": 1, "micro_batch_size": 4, "sequence_len": 128},
        "eval": {"forgetting": None, "max_new_tokens": 4},
        "strategies": [{"strategy": "uniform", "params": {"rank": 2}}],
        "seeds": [0, 1],
    }
    calls = []  # the base's scoring (scoring.base_scores calls scoring.score for the base only)
    real_score = scoring.score
    monkeypatch.setattr(scoring, "score", lambda *args, **kw: calls.append(args[3]) or real_score(*args, **kw))
    out = tmp_path / "sweep"
    run_sweep(suite_from_dict(suite, ["seeds=[0]"]), out, SweepOptions(quiet=True))
    assert calls == ["base"]
    (stored,) = (out / BASE_STORE_DIR).glob("*.json")
    written = stored.stat().st_mtime_ns
    calls.clear()
    run_sweep(suite_from_dict(suite), out, SweepOptions(quiet=True))  # a new process's base: nothing in memory
    assert calls == [] and stored.stat().st_mtime_ns == written
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    assert len(results) == 2 and results[0]["base"] == results[1]["base"]
    assert (
        results[0]["base_eval_loss"]
        == results[1]["base_eval_loss"]
        == json.loads(stored.read_text())["value"]["validation"]["loss"]
    )


_WORKER = """
import sys, time
from pathlib import Path
from adaptive_lora.training.base_store import stored_base_scores
def compute():
    with open(sys.argv[2], "a") as log:
        log.write("computed\\n")
    time.sleep(1.0)  # long enough for the other worker to arrive while this one computes
    return {"value": 1}
print(stored_base_scores(Path(sys.argv[1]), {"k": 1}, compute)["value"])
"""


def test_two_workers_compute_the_base_scores_once(tmp_path):
    log = tmp_path / "computed.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(log)], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    assert [w.communicate(timeout=60)[0].strip() for w in workers] == ["1", "1"]
    assert log.read_text().splitlines() == ["computed"]
    assert stored_base_scores(tmp_path, {"k": 1}, lambda: pytest.fail("read, not computed")) == {"value": 1}
    assert stored_base_scores(tmp_path, {"k": 2}, lambda: {"value": 2}) == {"value": 2}  # another key: computed
