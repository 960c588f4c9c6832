"""Runs of two suite configurations in one sweep directory never mix silently (issue 9, item 2).

The report's tables, counts and paired statistics cover only the runs of the recorded (latest)
suite; the others are listed apart with the key that differs, and the earlier suite is kept in
suites/<suite id>.yaml.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from adaptive_lora.report import write_report
from fixtures_runs import add_run, suite_entries, uniform_params, write_suite

LABELS = {"uniform": "uniform", "linear_decay": "linear_decay 16->4"}
SEEDS = (0, 1, 2)
EARLIER_DIFFS = (-0.50, -0.45, -0.55)  # linear_decay - uniform with data.max_samples=40
LATEST_DIFFS = (0.02, 0.04, 0.03)  # ... and with data.max_samples=80: the only ones the report may use


def suite_data(max_samples: int) -> dict:
    return {
        "strategies": suite_entries(LABELS),
        "budgets": ["r4"],
        "seeds": list(SEEDS),
        "data": {"max_samples": max_samples},
    }


def add_runs(sweep: Path, max_samples: int, diffs: tuple[float, ...]) -> set[str]:
    """The suite's runs, each recording the config the suite gives it (as `adaptive-lora run` does)."""
    from adaptive_lora.sweep.suite import suite_from_dict

    specs = {(s.label, s.seed): s for s in suite_from_dict({"name": "mix", **suite_data(max_samples)}).runs}
    run_ids = set()
    for strategy, label in LABELS.items():
        for seed, diff in zip(SEEDS, diffs):
            result = add_run(
                sweep,
                strategy=strategy,
                label=label,
                budget_label="r4",
                seed=seed,
                rank=4,
                budget_target=uniform_params(4),
                eval_loss=round(3.0 + 0.1 * seed + (diff if strategy != "uniform" else 0.0), 10),
            )
            path = sweep / "runs" / result["run_id"] / "result.json"
            recorded = json.loads(path.read_text())
            recorded["config"] = specs[(label, seed)].config.with_overrides({"output.dir": str(path.parent)}).to_dict()
            path.write_text(json.dumps(recorded))
            run_ids.add(result["run_id"])
    return run_ids


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A sweep run first with data.max_samples=40, then (suite.yaml now says so) with 80."""
    sweep = tmp_path_factory.mktemp("mixed") / "sweep"
    write_suite(sweep, "mix", **suite_data(40))
    earlier = add_runs(sweep, 40, EARLIER_DIFFS)
    write_suite(sweep, "mix", **suite_data(80))
    latest = add_runs(sweep, 80, LATEST_DIFFS)
    assert not earlier & latest  # the run id follows the resolved config: both sets are on disk
    info = write_report(sweep)
    return sweep, earlier, latest, info


def test_tables_and_counts_cover_only_the_recorded_suite(mixed):
    sweep, earlier, latest, info = mixed
    results = pd.read_csv(sweep / "results.csv")
    assert set(results["run_id"]) == latest and info["n_runs"] == len(latest)
    summary = pd.read_csv(sweep / "summary.csv")
    assert set(summary["n"]) == {len(SEEDS)}, summary


def test_paired_statistics_use_only_the_recorded_suite(mixed):
    sweep, *_ = mixed
    stats = pd.read_csv(sweep / "stats.csv")
    stats = stats[stats["metric"] == "eval_loss"] if "metric" in stats else stats  # one row per metric measured
    row = stats[stats["label"] == LABELS["linear_decay"]].iloc[0]
    assert row["n_pairs"] == len(SEEDS)
    assert row["mean_diff"] == pytest.approx(sum(LATEST_DIFFS) / len(LATEST_DIFFS), abs=1e-9)


def test_other_runs_are_listed_apart_with_the_differing_key(mixed):
    sweep, earlier, _, info = mixed
    assert {Path(o["path"]).name for o in info["others"]} == earlier
    for other in info["others"]:
        assert "data.max_samples: 40 here, 80 in the suite" in other["reason"], other
    report = (sweep / "report.md").read_text()
    section = report[report.index("Runs of other configurations (not included)") :]
    assert all(run_id in section for run_id in earlier)
    assert section.count("data.max_samples: 40 here, 80 in the suite") == len(earlier)


def test_recording_a_new_suite_keeps_the_earlier_one(tmp_path):
    from adaptive_lora.sweep.runner import record_suite
    from adaptive_lora.sweep.suite import suite_from_dict

    sweep = tmp_path / "sweep"
    first, second = (suite_from_dict({"name": "mix", **suite_data(n)}) for n in (40, 80))
    assert record_suite(sweep, first) is None
    assert record_suite(sweep, first) is None  # the same suite again: nothing to keep
    assert not (sweep / "suites").exists()
    assert record_suite(sweep, second) == first.suite_id
    kept = yaml.safe_load((sweep / "suites" / f"{first.suite_id}.yaml").read_text())
    assert kept == first.data and yaml.safe_load((sweep / "suite.yaml").read_text()) == second.data
    assert record_suite(sweep, first) == second.suite_id  # back again: both are kept
    assert sorted(p.name for p in (sweep / "suites").iterdir()) == sorted(f"{s.suite_id}.yaml" for s in (first, second))


def test_every_unreadable_suite_is_kept_under_its_own_number(tmp_path):
    from adaptive_lora.sweep.runner import record_suite
    from adaptive_lora.sweep.suite import suite_from_dict

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    suite = suite_from_dict({"name": "mix", **suite_data(40)})
    broken = [b"name: [unclosed\n", b"\xff\xfe not UTF-8\n", b"strategies: 3\n"]  # YAML error, bytes, not a suite
    for written in broken:
        (sweep / "suite.yaml").write_bytes(written)
        assert record_suite(sweep, suite) is None
    history = sweep / "suites"
    assert sorted(p.name for p in history.iterdir()) == ["unreadable-1.yaml", "unreadable-2.yaml", "unreadable-3.yaml"]
    assert [(history / f"unreadable-{n}.yaml").read_bytes() for n in (1, 2, 3)] == broken
    (sweep / "suite.yaml").write_bytes(broken[1])  # one kept before is not kept twice
    record_suite(sweep, suite)
    assert len(list(history.iterdir())) == 3 and yaml.safe_load((sweep / "suite.yaml").read_text()) == suite.data
    from adaptive_lora.errors import UserError

    for key, value in (("strategies", 3), ("budgets", "r8")):  # what made the third one unreadable: one line, not a crash
        with pytest.raises(UserError, match=f"'{key}' must be a list"):
            suite_from_dict({"name": "mix", **suite_data(40), key: value})


def test_two_real_runs_into_one_directory(tiny_llama_dir, data_file, tmp_path, capsys):
    from adaptive_lora.cli import main as cli_main

    suite = {
        "name": "tiny-mix",
        "model": {"name": str(tiny_llama_dir)},
        "data": {"source": str(data_file), "val_set_size": 8},
        "training": {"max_steps": 1, "micro_batch_size": 4, "sequence_len": 128},
        "strategies": [{"strategy": "uniform", "params": {"rank": 2}}],
        "seeds": [0],
        "eval": {"forgetting": None},  # not what this test measures, and the dearest part of a tiny run
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "sweep"
    assert cli_main(["run", str(path), "--out", str(out), "--quiet", "data.max_samples=40"]) == 0
    first_suite = (out / "suite.yaml").read_text()
    (first_run,) = (p.name for p in (out / "runs").iterdir())
    capsys.readouterr()
    assert cli_main(["run", str(path), "--out", str(out), "--quiet", "data.max_samples=36"]) == 0
    captured = capsys.readouterr()
    assert "held runs of another suite configuration" in captured.err
    assert [p.read_text() for p in (out / "suites").iterdir()] == [first_suite]
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 1 and results["run_id"].iloc[0] != first_run
    report = (out / "report.md").read_text()
    section = report[report.index("Runs of other configurations (not included)") :]
    assert first_run in section and "data.max_samples: 40 here, 36 in the suite" in section
