"""training.report_to=tensorboard: event files in RUN/tensorboard, or one line naming the extra."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptive_lora import train
from adaptive_lora.cli import main as cli_main
from adaptive_lora.config import RunConfig
from adaptive_lora.training import engine
from adaptive_lora.workdirs import clear_run_dir


def tensorboard_config(model_dir: Path, data: Path, out: Path) -> RunConfig:
    return RunConfig.from_dict(
        {
            "model": {"name": str(model_dir)},
            "data": {"source": str(data), "val_set_size": 8},
            "training": {
                "max_steps": 2,
                "micro_batch_size": 4,
                "logging_steps": 1,
                "sequence_len": 128,
                "report_to": "tensorboard",
            },
            "output": {"dir": str(out)},
        }
    )


def test_event_files_are_written_into_the_run_directory(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    run = tmp_path / "run"
    result = train(tensorboard_config(tiny_llama_dir, data_file, run))
    assert result["status"] == "done", result["error"]
    assert list((run / "tensorboard").glob("events.out.tfevents.*")) and not (run / "checkpoints").exists()
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    logged = [
        (m["step"], m["train_loss"])
        for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
        if "train_loss" in m
    ]
    assert [s for s, _ in losses] == [s for s, _ in logged] == [1, 2]
    assert [v for _, v in losses] == pytest.approx([v for _, v in logged])  # the losses metrics.jsonl holds

    clear_run_dir(run)  # a run file: clearing the run (e.g. --overwrite) removes it
    assert not (run / "tensorboard").exists()


def test_without_tensorboard_training_stops_with_one_line_naming_the_extra(
    tiny_llama_dir, data_file, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(engine, "is_tensorboard_available", lambda: False)
    args = ["train", "--model", str(tiny_llama_dir), "--data", str(data_file), "--out", str(tmp_path / "run")]
    overrides = [
        "training.max_steps=1",
        "training.micro_batch_size=4",
        "training.sequence_len=128",
        "training.report_to=tensorboard",
    ]
    assert cli_main([*args, "data.val_set_size=8", *overrides]) == 2
    err = capsys.readouterr().err  # transformers' loading progress bar may come first
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert "training.report_to=tensorboard" in line and "pip install 'adaptive-lora[tensorboard]'" in line
    assert "Traceback" not in err
