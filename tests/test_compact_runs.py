"""scripts/compact-runs.py: rewrites finished, project-made run directories in the compact formats and
leaves every other directory, and every file's contents as read, unchanged."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

from adaptive_lora.schema import RESULT_FILE, RUN_MARKER, read_allocation, read_predictions

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "compact-runs.py"
MODULES = [
    {
        "name": f"model.layers.{layer}.self_attn.{role}_proj",
        "layer": layer,
        "role": role,
        "in_features": 64,
        "out_features": 64,
        "rank": 4,
        "alpha": 8.0,
    }
    for layer in range(3)
    for role in ("q", "v")
]
PREDICTIONS = [
    {
        "source": source,
        "split": "test",
        "row": row,
        "task": "chat",
        "prompt": f"question {row}",
        "reference": "yes",
        "prediction": "no" if source == "base" else "yes",
        "exact_match": None,
        "rouge_l": float(source == "adapter"),
        "new_tokens": 1,
    }
    for source in ("base", "adapter")
    for row in (3, 7)
]


def _old_run(path: Path, finished: bool = True, ours: bool = True) -> Path:
    """A run directory as earlier versions wrote it: modules as a list, every prediction row whole."""
    path.mkdir(parents=True)
    (path / "allocation.json").write_text(json.dumps({"strategy": "uniform", "modules": MODULES}, indent=2))
    (path / "predictions.jsonl").write_text("".join(json.dumps(row) + "\n" for row in PREDICTIONS))
    if ours:
        (path / RUN_MARKER).write_text("1")
    if finished:
        (path / RESULT_FILE).write_text("{}")
    return path


def test_compact_runs_rewrites_only_finished_project_runs_and_reads_back_the_same(tmp_path, capsys):
    done = _old_run(tmp_path / "runs" / "done")
    others = [_old_run(tmp_path / "runs" / "unfinished", finished=False), _old_run(tmp_path / "yours", ours=False)]
    untouched = {p: (p / "allocation.json").read_bytes() for p in others}
    sizes = {name: (done / name).stat().st_size for name in ("allocation.json", "predictions.jsonl")}

    namespace = runpy.run_path(str(SCRIPT))
    assert namespace["main"]([str(tmp_path)]) == 0
    assert "1 run directories rewritten" in capsys.readouterr().out

    assert isinstance(json.loads((done / "allocation.json").read_text())["modules"], dict)
    assert all((done / name).stat().st_size < size for name, size in sizes.items())
    assert [m.__dict__ for m in read_allocation(done).modules] == MODULES
    assert read_predictions(done) == PREDICTIONS
    assert {p: (p / "allocation.json").read_bytes() for p in others} == untouched


def test_compact_runs_names_a_bad_file_in_one_line(tmp_path, capsys):
    run = _old_run(tmp_path / "runs" / "bad")
    (run / "allocation.json").write_text("{oops")
    assert runpy.run_path(str(SCRIPT))["main"]([str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: allocation file") and "bad/allocation.json is not valid JSON" in err
    assert (run / "allocation.json").read_text() == "{oops"
