"""Several processes on one sweep: every run is trained exactly once, and a lock left by a dead
process never blocks a run (issue 9, item 3).

Claims are OS file locks (filelock: flock on Unix), which die with their process. Limits, from
filelock's behaviour: on a shared filesystem whose flock does not reach the other machines (NFS
mounted with `nolock` or `local_lock=flock`) two machines can claim the same run; where flock is
missing, filelock falls back to a marker file, and a claim by a process killed on another machine
stays until SWEEP/.claims/<run_id>.lock is deleted (one on the same machine is reclaimed).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from adaptive_lora.schema import CLAIMS_DIR
from adaptive_lora.sweep.executors import CLAIMED, SweepOptions, execute_spec
from adaptive_lora.sweep.runner import pin_precision, run_sweep
from adaptive_lora.sweep.suite import load_suite
from adaptive_lora.workdirs import claim_sweep_dir

DONE_LINE = re.compile(r"^\[\d+/\d+\] (\S+): done, eval loss", re.MULTILINE)


def write_suite(tmp_path: Path, model_dir: Path, data: Path, seeds: list[int]) -> Path:
    suite = {
        "name": "claims",
        "model": {"name": str(model_dir)},
        "data": {"source": str(data), "val_set_size": 8},
        "training": {"max_steps": 1, "micro_batch_size": 4, "logging_steps": 1, "sequence_len": 128},
        "strategies": [
            {"strategy": "uniform", "params": {"rank": 2}},
            {"strategy": "linear_decay", "params": {"start": 4, "end": 1}},
        ],
        "seeds": seeds,
        "eval": {"forgetting": None},  # not what this test measures, and the dearest part of a tiny run
    }
    path = tmp_path / "claims-suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_two_processes_on_one_sweep_train_every_run_exactly_once(tiny_llama_dir, data_file, tmp_path):
    suite_path = write_suite(tmp_path, tiny_llama_dir, data_file, seeds=[0, 1])
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "adaptive_lora", "run", str(suite_path), "--out", str(out), "--quiet"]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=240) for process in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    run_ids = {spec.run_id for spec in pin_precision(load_suite(str(suite_path))).runs}  # the CLI pins precision: auto
    trained = [run_id for _, err in outputs for run_id in DONE_LINE.findall(err)]
    assert sorted(trained) == sorted(run_ids), outputs  # each run trained by exactly one of the two
    for run_id in run_ids:
        run_dir = out / "runs" / run_id
        assert json.loads((run_dir / "result.json").read_text())["status"] == "done"
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert [m["step"] for m in metrics if "train_loss" in m] == [1], run_id  # one training's lines, not two
        assert (run_dir / "train.log").read_text().count("status done") == 1


def test_a_lock_left_by_a_killed_process_does_not_block_the_run(tiny_llama_dir, data_file, tmp_path):
    suite = pin_precision(
        load_suite(str(write_suite(tmp_path, tiny_llama_dir, data_file, seeds=[0])), ["strategies=[{strategy: uniform}]"])
    )
    (spec,) = suite.runs
    out = claim_sweep_dir(tmp_path / "sweep")
    lock_path = out / CLAIMS_DIR / f"{spec.run_id}.lock"
    lock_path.parent.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); time.sleep(120)",
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        # While another process holds the claim, this one skips the run and touches nothing.
        assert execute_spec(spec, out)["status"] == CLAIMED
        assert not (out / "runs" / spec.run_id).exists()
    finally:
        holder.kill()  # SIGKILL: no chance to release or delete anything
        holder.wait(timeout=30)
    assert lock_path.exists()  # the stale lock file is still there
    summary = run_sweep(suite, out, SweepOptions(quiet=True))
    assert summary["statuses"] == {spec.run_id: "done"}
    assert json.loads((out / "runs" / spec.run_id / "result.json").read_text())["status"] == "done"
