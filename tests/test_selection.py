"""Choosing the learning rate per strategy x budget on validation loss (sweep.selection), by hand-made results."""

from __future__ import annotations

import pytest

from adaptive_lora.sweep.selection import choose_rates, chosen_rates
from adaptive_lora.sweep.suite import suite_from_dict

RATES = [1e-4, 1e-3, 1e-2]


@pytest.fixture(scope="module")
def suite():
    return suite_from_dict(
        {
            "name": "selection-test",
            "strategies": [{"strategy": "uniform", "label": "u"}, {"strategy": "linear_decay", "label": "ld"}],
            "budgets": ["r4"],
            "seeds": [0, 1, 2],
            "learning_rates": RATES,
            "select_lr_on_seeds": 2,
        }
    )


def _results(suite, losses: dict[tuple[str, float, int], float | str | None]) -> dict:
    """run_id -> result.json: a float is a finished run's validation loss, a string a failed status, None not ended."""
    results = {}
    for spec in suite.runs:
        value = losses.get((spec.label, spec.learning_rate, spec.seed))
        if isinstance(value, float):
            results[spec.run_id] = {"status": "done", "validation": {"loss": value}}
        elif isinstance(value, str):
            results[spec.run_id] = {"status": value, "error": "boom"}
    return results


def test_the_lowest_mean_over_the_selection_seeds_is_chosen(suite):
    losses = {
        ("u", 1e-4, 0): 2.0, ("u", 1e-4, 1): 2.2,  # mean 2.10
        ("u", 1e-3, 0): 1.9, ("u", 1e-3, 1): 2.4,  # mean 2.15: seed 0 alone would pick this one
        ("u", 1e-2, 0): 2.5, ("u", 1e-2, 1): 2.5,
        ("u", 1e-2, 2): 0.1,  # seed 2 is not a selection seed: never read
    }  # fmt: skip
    choice = choose_rates(suite, _results(suite, losses))[("u", "r4")]
    assert choice.chosen == 1e-4 and choice.why_none is None
    assert choice.mean_validation_loss == {1e-4: pytest.approx(2.1), 1e-3: pytest.approx(2.15), 1e-2: pytest.approx(2.5)}
    assert choice.finished == {1e-4: 2, 1e-3: 2, 1e-2: 2}


def test_a_rate_that_failed_on_a_selection_seed_is_never_chosen(suite):
    losses = {("ld", r, s): 2.0 + r for r in RATES for s in (0, 1)} | {("ld", 1e-4, 1): "diverged"}
    choice = choose_rates(suite, _results(suite, losses))[("ld", "r4")]
    assert choice.mean_validation_loss[1e-4] is None
    assert choice.chosen == 1e-3  # 1e-4 had the lower loss on seed 0 but diverged on seed 1


def test_no_choice_until_every_selection_run_ended_and_the_reason(suite):
    losses = {("u", r, s): 2.0 for r in RATES for s in (0, 1)}
    del losses[("u", 1e-2, 1)]
    choice = choose_rates(suite, _results(suite, losses))[("u", "r4")]
    assert choice.chosen is None
    assert choice.why_none == "its learning-rate selection has not finished: 5 of 6 selection runs ended"
    failed = {("u", r, s): ("oom" if s == 0 else 2.0) for r in RATES for s in (0, 1)}
    choice = choose_rates(suite, _results(suite, failed))[("u", "r4")]
    assert choice.chosen is None and "no learning rate of the grid finished on every selection seed" in choice.why_none
    assert chosen_rates(choose_rates(suite, _results(suite, failed))) == {}
