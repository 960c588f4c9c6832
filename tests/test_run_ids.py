"""Regression pin: committed studies find their runs by id, and an id hashes the resolved RunConfig. These ids
were listed by `adaptive-lora run SUITE --list` before the search (issue 21) added a strategy and a suite
entry key; a change to a RunConfig field, a default or the suite expansion changes them and fails here."""

from __future__ import annotations

import yaml

from adaptive_lora.sweep.suite import load_suite, suite_from_dict

PINNED = {
    "study-skills": (
        243,
        [
            "uniform__r2__lr0.0005__s0-7fde8152",
            "linear_increase__r2__lr0.001__s0-10711915",
            "empirical__r8__lr0.0005__s0-4080f94b",
            "adalora__r2__lr0.0005__s1-54c4a072",
            "adalora-dynamics-uniform-ranks__r8__lr0.001__s1-cbb48312",
            "control-r1-on-v__own__lr0.002__s2-b768e9fc",
        ],
    ),
    "budget-matched": (39, ["uniform__r4__s0-b30296e0", "control-r1-on-v__own__s2-b741f82a"]),
}


def test_built_in_suites_keep_their_run_ids():
    for name, (count, ids) in PINNED.items():
        # study-skills pins fp32 itself; budget-matched says auto, which `run` pins per machine (fp32 on these CPUs)
        listed = [spec.run_id for spec in load_suite(name, ["model.precision=fp32"]).runs]
        assert len(listed) == count, name
        assert set(ids) <= set(listed), (name, sorted(set(ids) - set(listed)))


def test_an_entry_learning_rate_trains_that_entry_at_its_rate_only():
    data = yaml.safe_load(
        """
        name: rates
        strategies:
          - {strategy: uniform, label: uniform}
          - {strategy: linear_decay, label: decay, learning_rate: 2.0e-3}
        budgets: [r8]
        seeds: [0, 1]
        """
    )
    plain = suite_from_dict({**data, "strategies": data["strategies"][:1]})
    suite = suite_from_dict(data)
    uniform = [r for r in suite.runs if r.label == "uniform"]
    assert [r.run_id for r in uniform] == [r.run_id for r in plain.runs]  # an entry without the key: as before
    decay = [r for r in suite.runs if r.label == "decay"]
    assert [r.config.training.learning_rate for r in decay] == [2.0e-3, 2.0e-3]
    assert all("__lr0.002__" in r.run_id for r in decay) and {r.seed for r in decay} == {0, 1}
    gridded = suite_from_dict({**data, "learning_rates": [1e-4, 5e-4]})
    assert {r.config.training.learning_rate for r in gridded.runs if r.label == "decay"} == {2.0e-3}  # outside the grid
    assert {r.config.training.learning_rate for r in gridded.runs if r.label == "uniform"} == {1e-4, 5e-4}
