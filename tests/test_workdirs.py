"""Nothing a user made is lost: `train`, `run` and `report` refuse a directory they did not make,
and clearing a run directory removes only what a run wrote (issue 9, item 1).

Every refusal is checked byte for byte and mtime for mtime on the whole tree, through the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from adaptive_lora.cli import main as cli_main


def train_args(model_dir: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        f"model.name={model_dir}",
        f"data.source={data}",
        "data.val_set_size=8",
        "training.max_steps=1",
        "training.micro_batch_size=4",
        "training.sequence_len=128",
        "eval.forgetting=null",  # not what these tests measure, and the dearest part of a tiny run
        "--out",
        str(out),
        *extra,
    ]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root (and root itself): kind, bytes and mtime, so any change shows."""
    entries = {".": ("dir", None, root.stat().st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        entries[str(path.relative_to(root))] = (
            ("dir", None, stat.st_mtime_ns) if path.is_dir() else ("file", path.read_bytes(), stat.st_mtime_ns)
        )
    return entries


def users_directory(path: Path) -> Path:
    """A directory a user made: a file, a sub-folder with a file, and a file named like one of ours."""
    (path / "notes").mkdir(parents=True)
    (path / "thesis.tex").write_text("\\section{Results}\n")
    (path / "notes" / "todo.md").write_text("- back up the data\n")
    (path / "metrics.jsonl").write_text('{"mine": true}\n')
    return path


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


STALE_FILES = {
    "config.yaml": "stale: true\n",
    "metrics.jsonl": '{"step": 99, "train_loss": 9.9}\n',
    "train.log": "00:00:00 stale line\n",
    ".result.json.123.abcd.tmp": "torn",
    "result.json": json.dumps({"run_id": "x", "status": "interrupted"}),
}


@pytest.fixture(scope="module")
def finished_run(tiny_llama_dir, data_file, tmp_path_factory) -> Path:
    """A run directory of ours holding an unfinished run and a user's file, trained once per module
    through the CLI (test_an_unfinished_run_directory_is_cleared_and_retrained checks that training)."""
    from adaptive_lora.schema import RUN_MARKER

    out = tmp_path_factory.mktemp("finished") / "run"
    out.mkdir()
    (out / RUN_MARKER).touch()
    for name, text in STALE_FILES.items():
        (out / name).write_text(text)
    (out / "my-notes.txt").write_text("keep me\n")
    assert cli_main(train_args(tiny_llama_dir, data_file, out)) == 0
    return out


def tiny_suite(tmp_path: Path, model_dir: Path, data: Path) -> Path:
    suite = {
        "name": "tiny",
        "model": {"name": str(model_dir)},
        "data": {"source": str(data), "val_set_size": 8},
        "training": {"max_steps": 1, "micro_batch_size": 4, "sequence_len": 128},
        "strategies": [{"strategy": "uniform", "params": {"rank": 2}}],
        "seeds": [0],
        "eval": {"forgetting": None},
    }
    path = tmp_path / "tiny-suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_train_refuses_a_users_directory_and_changes_nothing(tiny_llama_dir, data_file, tmp_path, capsys):
    out = users_directory(tmp_path / "my-project")
    before = snapshot(out)
    for extra in ((), ("--overwrite",), ("--resume",)):
        capsys.readouterr()
        assert cli_main(train_args(tiny_llama_dir, data_file, out, *extra)) == 2, extra
        line = one_error_line(capsys.readouterr().err)
        assert str(out) in line and "--out" in line and "nothing was changed" in line
        assert snapshot(out) == before, extra


def test_a_directory_holding_only_the_users_config_is_the_users(tiny_llama_dir, data_file, tmp_path, capsys):
    """config.yaml alone is not a run from before markers: it may be the config the user trains from."""
    out = tmp_path / "experiment"
    out.mkdir()
    config = out / "config.yaml"
    config.write_text(
        f"# my experiment: keep these notes\nmodel: {{name: {tiny_llama_dir}}}\n"
        f"data: {{source: {data_file}, val_set_size: 8}}\ntraining: {{max_steps: 1, micro_batch_size: 4, sequence_len: 128}}\n"
    )
    before = snapshot(out)
    assert cli_main(["train", str(config), "--out", str(out)]) == 2
    assert str(out) in one_error_line(capsys.readouterr().err)
    assert snapshot(out) == before


def test_train_api_refuses_a_users_directory(tiny_llama_dir, data_file, tmp_path):
    from adaptive_lora import train
    from adaptive_lora.errors import UserError

    out = users_directory(tmp_path / "my-project")
    before = snapshot(out)
    config = {
        "model": {"name": str(tiny_llama_dir)},
        "data": {"source": str(data_file), "val_set_size": 8},
        "training": {"max_steps": 1, "micro_batch_size": 4, "sequence_len": 128},
        "output": {"dir": str(out), "overwrite": True},
    }
    with pytest.raises(UserError, match="not an adaptive-lora run directory"):
        train(config)
    assert snapshot(out) == before


def test_overwrite_keeps_a_users_file_in_a_finished_run_directory(finished_run, tiny_llama_dir, data_file, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    (out / "my-notes.txt").write_text("observations I made about this run\n")
    (out / "plots").mkdir()
    (out / "plots" / "hand-made.svg").write_text("<svg/>")
    first = json.loads((out / "result.json").read_text())
    assert cli_main(train_args(tiny_llama_dir, data_file, out, "--overwrite")) == 0
    assert (out / "my-notes.txt").read_text() == "observations I made about this run\n"
    assert (out / "plots" / "hand-made.svg").read_text() == "<svg/>"
    second = json.loads((out / "result.json").read_text())
    assert second["status"] == "done" and second["wall_time_s"] != first["wall_time_s"]  # it was retrained


def test_run_refuses_a_users_directory_and_changes_nothing(tiny_llama_dir, data_file, tmp_path, capsys):
    suite = tiny_suite(tmp_path, tiny_llama_dir, data_file)
    out = users_directory(tmp_path / "my-project")
    before = snapshot(out)
    assert cli_main(["run", str(suite), "--out", str(out), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "--out" in line
    assert snapshot(out) == before


def test_report_refuses_a_users_directory_and_writes_nothing(tmp_path, capsys):
    out = users_directory(tmp_path / "my-project")
    # Even one that looks like a folder of runs: nothing marks it as ours.
    (out / "old-run").mkdir()
    (out / "old-run" / "result.json").write_text(json.dumps({"run_id": "x", "status": "done"}))
    before = snapshot(out)
    assert cli_main(["report", str(out)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(out) in line and "nothing was written" in line
    assert snapshot(out) == before


def test_an_unfinished_run_directory_is_cleared_and_retrained(finished_run):
    """As before issue 9: a run of ours that did not finish is started again from scratch (see the fixture)."""
    out = finished_run
    assert json.loads((out / "result.json").read_text())["status"] == "done"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics and all(m["step"] in (0, 1) for m in metrics)
    assert "stale" not in (out / "train.log").read_text() and "stale" not in (out / "config.yaml").read_text()
    assert not (out / ".result.json.123.abcd.tmp").exists()
    assert (out / "my-notes.txt").read_text() == "keep me\n"


def test_clearing_keeps_checkpoints_for_resume_and_never_touches_other_files(tmp_path):
    from adaptive_lora.schema import RUN_FILES, RUN_MARKER
    from adaptive_lora.workdirs import claim_run_dir, clear_run_dir

    out = claim_run_dir(tmp_path / "run")
    for name in RUN_FILES:
        if name == "adapter":  # with what a run writes there
            (out / name).mkdir()
            (out / name / "adapter_model.safetensors").write_bytes(b"\0")
        elif name == "checkpoints":
            (out / name / "checkpoint-1").mkdir(parents=True)
            (out / name / "checkpoint-1" / "optimizer.pt").write_bytes(b"\0")
        else:
            (out / name).write_text("x")
    (out / "checkpoints" / "checkpoint-2").mkdir()
    (out / ".adapter.tmp").mkdir()
    (out / ".result.json.4242.0a1b2c3d.tmp").write_text("torn")
    (out / "my-notes.txt").write_text("keep me\n")
    (out / ".my-draft.tmp").write_text("a user's hidden temporary file is not ours\n")
    (out / "my-folder").mkdir()
    clear_run_dir(out, keep_checkpoints=True)
    mine = [RUN_MARKER, "my-notes.txt", ".my-draft.tmp", "my-folder"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*mine, "checkpoints"])
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    clear_run_dir(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(mine)


def test_a_run_directory_from_before_markers_is_still_recognised(finished_run, tiny_llama_dir, data_file, tmp_path, capsys):
    from adaptive_lora.schema import RUN_MARKER
    from adaptive_lora.workdirs import check_run_dir, is_run_dir

    out = tmp_path / "legacy"
    shutil.copytree(finished_run, out)
    (out / RUN_MARKER).unlink()  # what 3b29899 wrote: config.yaml, result.json, metrics.jsonl, ... only
    (out / "my-notes.txt").unlink()
    assert is_run_dir(out)
    check_run_dir(out)  # no error
    result = (out / "result.json").read_bytes()
    capsys.readouterr()
    assert cli_main(train_args(tiny_llama_dir, data_file, out)) == 0
    assert "already holds a finished run" in capsys.readouterr().out
    assert (out / "result.json").read_bytes() == result


def test_a_file_where_the_directory_should_be_is_one_line(tmp_path, tiny_llama_dir, data_file, capsys):
    from adaptive_lora.errors import UserError
    from adaptive_lora.workdirs import claim_run_dir, claim_sweep_dir

    out = tmp_path / "results.txt"
    out.write_text("my results\n")
    with pytest.raises(UserError, match="results.txt"):
        claim_run_dir(out)
    with pytest.raises(UserError, match="results.txt"):
        claim_sweep_dir(out)
    assert cli_main(train_args(tiny_llama_dir, data_file, out)) == 2
    assert str(out) in one_error_line(capsys.readouterr().err)
    assert out.read_text() == "my results\n"


def another_trainers_directory(path: Path) -> Path:
    """What another trainer leaves (issue 18, item 1): its own config.yaml, train.log and checkpoints/."""
    (path / "checkpoints").mkdir(parents=True)
    (path / "config.yaml").write_text("model_name_or_path: gpt2\nlearning_rate: 3.0e-5\nnum_train_epochs: 3\n")
    (path / "train.log").write_text("step 100: loss 1.234\n")
    (path / "checkpoints" / "step-100.bin").write_bytes(b"\x00\x01weights")
    return path


def test_another_trainers_run_directory_survives_train_and_overwrite(tiny_llama_dir, data_file, tmp_path, capsys):
    """Names alone (config.yaml, train.log, checkpoints/) are no proof that adaptive-lora wrote a directory."""
    out = another_trainers_directory(tmp_path / "their-run")
    before = snapshot(out)
    for extra in ((), ("--overwrite",)):
        capsys.readouterr()
        assert cli_main(train_args(tiny_llama_dir, data_file, out, *extra)) == 2, extra
        line = one_error_line(capsys.readouterr().err)
        assert str(out) in line and "nothing was changed" in line
        assert snapshot(out) == before, extra


def test_an_unmarked_directory_is_ours_only_with_a_result_or_config_we_wrote(finished_run, tmp_path):
    from adaptive_lora.errors import UserError
    from adaptive_lora.schema import RUN_MARKER
    from adaptive_lora.workdirs import check_run_dir, is_run_dir

    ours = json.loads((finished_run / "result.json").read_text())
    config = yaml.safe_load((finished_run / "config.yaml").read_text())
    cases = {
        # proof: our result.json (required keys, known status, the versions it ran with) or a full config dump
        "our result": ({"result.json": json.dumps(ours), "train.log": "x\n"}, True),
        "our config": ({"config.yaml": yaml.safe_dump(config), "train.log": "x\n"}, True),
        # what 3b29899 dumped: no eval section, no test_set_size, packing or token_budget
        "pre-marker config": (
            {
                "config.yaml": yaml.safe_dump(
                    {
                        k: {kk: vv for kk, vv in v.items() if kk not in ("test_set_size", "packing", "token_budget")}
                        for k, v in config.items()
                        if k != "eval"
                    }
                ),
                "train.log": "x\n",
            },
            True,
        ),
        # no proof
        "a result without versions": (
            {"result.json": json.dumps({k: v for k, v in ours.items() if k != "environment"}), "config.yaml": "{}\n"},
            False,
        ),
        "a hand-written adaptive-lora config": (
            {"config.yaml": yaml.safe_dump({"model": config["model"], "training": config["training"]}), "train.log": "x\n"},
            False,
        ),
        "another trainer's result": ({"result.json": json.dumps({"accuracy": 0.9}), "config.yaml": "lr: 1\n"}, False),
        "unreadable files": ({"result.json": "{", "config.yaml": "[", "train.log": "x\n"}, False),
        "empty files": ({"result.json": "null", "config.yaml": "", "train.log": ""}, False),
    }
    for name, (files, is_ours) in cases.items():
        out = tmp_path / name.replace(" ", "-").replace("'", "")
        out.mkdir()
        for file, text in files.items():
            (out / file).write_text(text)
        assert (RUN_MARKER not in files) and is_run_dir(out) == (is_ours and "result.json" in files), name
        if is_ours:
            check_run_dir(out)
        else:
            with pytest.raises(UserError, match="not an adaptive-lora run directory"):
                check_run_dir(out)


def test_a_sub_directory_named_like_ours_that_holds_foreign_files_is_never_cleared(
    finished_run, tiny_llama_dir, data_file, tmp_path, capsys
):
    """Even in a marked run directory: checkpoints/ or tensorboard/ the run did not write is refused, not cleared."""
    from adaptive_lora.workdirs import clear_run_dir

    for name, foreign in (("checkpoints", "step-100.bin"), ("tensorboard", "my-plot.png"), ("adapter", "notes.md")):
        out = tmp_path / name / "run"
        shutil.copytree(finished_run, out)
        (out / name).mkdir(exist_ok=True)
        (out / name / foreign).write_text("the user's\n")
        before = snapshot(out)
        capsys.readouterr()
        assert cli_main(train_args(tiny_llama_dir, data_file, out, "--overwrite")) == 2, name
        line = one_error_line(capsys.readouterr().err)
        assert str(out / name) in line and foreign in line
        assert snapshot(out) == before, name
        clear_run_dir(out)  # the API call alone does not remove it either
        assert (out / name / foreign).read_text() == "the user's\n"
        assert not (out / "result.json").exists()


def test_clearing_removes_what_a_run_wrote_in_its_sub_directories(tmp_path):
    from adaptive_lora.workdirs import check_run_dir, claim_run_dir, clear_run_dir

    out = claim_run_dir(tmp_path / "run")
    for path in ("checkpoints/checkpoint-2/trainer_state.json", "checkpoints/tmp-checkpoint-4/optimizer.pt"):
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        (out / path).write_text("{}")
    (out / "tensorboard").mkdir()
    (out / "tensorboard" / "events.out.tfevents.1.host.1.0").write_bytes(b"\0")
    (out / "adapter").mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        (out / "adapter" / name).write_text("{}")
    check_run_dir(out)  # no error
    clear_run_dir(out)
    assert [p.name for p in out.iterdir()] == [".adaptive-lora-run"]
