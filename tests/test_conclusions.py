import math

import pandas as pd
import pytest

from adaptive_lora.report.conclusions import Comparison, attribution_sentence, capacity_sentence, conclude, direction, study_power
from adaptive_lora.report.family import PairedNumbers, judge_family, verdict_label

M = "\u2212"  # the minus sign the sentences use


def loss(label="attention_heavy", mean=-0.0012, low=-0.0040, high=0.0016, p=0.31, n=3, mde=0.0061, **kw) -> Comparison:
    values = dict(label=label, budget="r8", metric="test loss", higher_is_better=False, n_pairs=n, mean_diff=mean)
    values.update(ci_low=low, ci_high=high, p=p, mde=mde, unit="nats")
    return Comparison(**{**values, **kw})


def exact_match(mean, low, high, p, n=200, mde=0.031) -> Comparison:
    return Comparison("eva", "r16", "test exact match", True, n, mean, low, high, p, mde, pair_unit="test row", digits=3)


def test_no_detectable_difference_states_the_resolution():
    assert conclude(loss()) == (
        f"attention_heavy at r8: no detectable difference from uniform in test loss ({M}0.0012 nats, "
        f"95% CI [{M}0.0040, +0.0016], p = 0.31, 3 seeds); the study could have detected differences of about "
        "0.0061 nats or more."
    )
    up = conclude(exact_match(0.01, -0.02, 0.04, 0.52))
    assert up.startswith("eva at r16: no detectable difference from uniform in test exact match (+0.010, ")
    assert "95% CI [" + M + "0.020, +0.040], p = 0.52, 200 test rows" in up and "about 0.031 or more" in up
    assert direction(loss()) is None


def test_better_and_worse_respect_the_metric_direction():
    lower_loss = conclude(loss("eva", -0.012, -0.018, -0.006, 0.004, n=5))
    assert lower_loss == (
        f"eva at r8: better than uniform in test loss ({M}0.0120 nats, 95% CI [{M}0.0180, {M}0.0060], p = 0.004, "
        "5 seeds; lower is better; minimum detectable difference about 0.0061 nats)."
    )
    higher_loss = conclude(loss("linear_decay", 0.02, 0.011, 0.029, 0.0002, n=5))
    assert higher_loss.startswith("linear_decay at r8: worse than uniform in test loss (+0.0200 nats, 95% CI [+0.0110, +0.0290]")
    assert "p < 0.001" in higher_loss
    more_right = conclude(exact_match(0.05, 0.02, 0.08, 0.01))
    assert more_right.startswith("eva at r16: better than uniform in test exact match (+0.050, 95% CI [+0.020, +0.080]")
    assert "p = 0.01, 200 test rows; higher is better" in more_right
    fewer_right = conclude(exact_match(-0.05, -0.08, -0.02, 0.01))
    assert fewer_right.startswith(f"eva at r16: worse than uniform in test exact match ({M}0.050")


def test_a_verdict_needs_both_the_test_and_the_ci():
    p_only = conclude(loss(mean=-0.004, low=-0.009, high=0.001, p=0.03))
    assert "no detectable difference" in p_only and "p = 0.03" in p_only
    assert "p is below 0.05 but the 95% CI includes 0" in p_only
    ci_only = conclude(loss(mean=-0.004, low=-0.007, high=-0.001, p=0.09, p_label="Holm p"))
    assert "no detectable difference" in ci_only and "Holm p = 0.09" in ci_only
    assert "the 95% CI excludes 0 but Holm p is not below 0.05" in ci_only
    # Rounding must not carry p across 0.05 in either direction.
    assert "p = 0.0499" in conclude(loss(p=0.0499)) and "p = 0.05," in conclude(loss(p=0.0501))


def test_too_few_pairs_says_so_instead_of_guessing():
    one = conclude(loss(n=1, low=None, high=None, p=None, mde=None))
    assert one == (
        f"attention_heavy at r8: too few seeds for a test in test loss (1 seed, difference {M}0.0012 nats); "
        "no conclusion is drawn."
    )
    none = conclude(loss(n=0, mean=None, low=None, high=None, p=None, mde=None))
    assert none == "attention_heavy at r8: no seed where both it and uniform were measured in test loss; no conclusion is drawn."
    same = conclude(loss(mean=0.001, low=0.001, high=0.001, p=None, mde=0.0))
    assert "every one of the 3 seeds differs from uniform by the same +0.0010 nats" in same and "no conclusion" in same
    identical = conclude(exact_match(0.0, 0.0, 0.0, None, mde=0.0))
    assert identical == (
        "eva at r16: identical to uniform in test exact match in every one of the 200 test rows, so no test applies; "
        "no conclusion is drawn."
    )


def test_from_row_turns_missing_numbers_into_none():
    row = {
        "label": "eva",
        "budget_label": "r8",
        "metric_name": "validation loss",
        "higher_is_better": False,
        "n_pairs": 2.0,
        "mean_diff": -0.01,
        "ci_low": float("nan"),
        "ci_high": float("nan"),
        "t_p_holm": float("nan"),
        "mde": math.nan,
        "baseline_label": "uniform_r8",
        "extra": "ignored",
    }
    c = Comparison.from_row(row, unit="nats")
    assert (c.n_pairs, c.ci_low, c.p, c.mde, c.baseline, c.p_label, c.unit) == (
        2,
        None,
        None,
        None,
        "uniform_r8",
        "Holm p",
        "nats",
    )
    sentence = conclude(c)
    assert "nan" not in sentence.lower() and "no conclusion is drawn" in sentence and f"{M}0.0100 nats" in sentence


def test_study_power_separated():
    control = loss("attn_rank1", 0.050, 0.030, 0.070, 0.002, n=3)
    separated, sentence = study_power(control)
    assert separated
    assert sentence == (
        "The study can separate a known-worse configuration: the capacity control (attn_rank1) at r8, a configuration "
        "known to be worse than uniform, came out worse in test loss (+0.0500 nats, 95% CI [+0.0300, +0.0700], "
        "p = 0.002, 3 seeds). That shows only that an effect of this size is visible; the smallest differences the "
        "comparisons could have detected are given with them."
    )


def test_study_power_underpowered():
    separated, sentence = study_power(loss("attn_rank1", 0.004, -0.002, 0.010, 0.12, n=3, mde=0.0150))
    assert not separated
    assert sentence.startswith("The study is underpowered: the capacity control (attn_rank1) at r8")
    assert "did not separate from it in test loss (+0.0040 nats, 95% CI [" + M + "0.0020, +0.0100], p = 0.12, 3 seeds" in sentence
    assert "about 0.0150 nats or more" in sentence
    assert sentence.endswith('no null result of this study should be read as "no difference".')
    few, sentence = study_power(loss("attn_rank1", 0.05, None, None, None, n=1, mde=None))
    assert not few and "underpowered" in sentence and "too few seeds for a test in test loss (1 seed" in sentence
    wrong_way, sentence = study_power(loss("attn_rank1", -0.03, -0.05, -0.01, 0.01))
    assert not wrong_way and "came out better in test loss" in sentence and "underpowered" in sentence


def test_attribution_to_initialisation():
    full = loss("eva", -0.071, -0.090, -0.052, 0.003)
    init = loss("eva_init_uniform", -0.070, -0.088, -0.052, 0.004)
    ranks = loss("eva_ranks_lora_init", 0.001, -0.006, 0.008, 0.71)
    assert attribution_sentence(full, init, ranks, strategy="EVA") == (
        f"EVA at r8 is better than uniform in test loss ({M}0.0710 nats, 95% CI [{M}0.0900, {M}0.0520], p = 0.003, "
        "3 seeds). EVA's gain is matched by its initialisation alone: its initialisation alone at uniform ranks "
        f"(eva_init_uniform) gives {M}0.0700 nats (95% CI [{M}0.0880, {M}0.0520], p = 0.004, 3 seeds), while its ranks "
        f"alone with standard LoRA (eva_ranks_lora_init) give +0.0010 nats (95% CI [{M}0.0060, +0.0080], p = 0.71, 3 seeds); "
        "no part of it is shown to come from its ranks."
    )


def test_attribution_to_ranks_both_and_untested():
    full = loss("adalora", 0.030, 0.010, 0.050, 0.01)  # worse: a shortfall
    dynamics = loss("adalora_uniform", 0.002, -0.004, 0.008, 0.4)
    ranks = loss("adalora_ranks", 0.028, 0.012, 0.044, 0.02)
    from_ranks = attribution_sentence(full, dynamics, ranks, strategy="AdaLoRA", mechanism="training dynamics")
    assert "AdaLoRA at r8 is worse than uniform in test loss (+0.0300 nats" in from_ranks
    assert (
        "AdaLoRA's shortfall is matched by its ranks alone: its ranks alone with standard LoRA (adalora_ranks) give +0.0280 nats"
        in (from_ranks)
    )
    assert "while its training dynamics alone at uniform ranks (adalora_uniform) gives +0.0020 nats" in from_ranks
    both = attribution_sentence(full, loss("adalora_uniform", 0.01, 0.004, 0.016, 0.03), ranks, strategy="AdaLoRA")
    assert "Both its initialisation and its ranks contribute to AdaLoRA's shortfall: " in both
    assert "(adalora_uniform) gives +0.0100 nats (95% CI [+0.0040, +0.0160], p = 0.03, 3 seeds), and its ranks" in both
    no_ranks = attribution_sentence(loss("eva", -0.07, -0.09, -0.05, 0.003), loss("eva_init", -0.06, -0.08, -0.04, 0.004))
    assert "Its initialisation alone gives a gain too: " in no_ranks and f"(eva_init) gives {M}0.0600 nats" in no_ranks
    assert no_ranks.endswith("no ranks-only control was run, so what the ranks add is untested.")


def test_attribution_refuses_when_controls_do_not_separate():
    full = loss("eva", -0.071, -0.090, -0.052, 0.003)
    weak_init = loss("eva_init", -0.02, -0.05, 0.01, 0.2)
    weak_ranks = loss("eva_ranks", -0.01, -0.04, 0.02, 0.5)
    sentence = attribution_sentence(full, weak_init, weak_ranks)
    assert "eva's gain cannot be attributed: no control separates from uniform in the same direction: " in sentence
    assert f"(eva_init) gives {M}0.0200 nats (95% CI [{M}0.0500, +0.0100], p = 0.2, 3 seeds)" in sentence
    assert f"(eva_ranks) give {M}0.0100 nats" in sentence
    # A control that separates the other way is no explanation either.
    opposite = attribution_sentence(full, loss("eva_init", 0.03, 0.01, 0.05, 0.01), weak_ranks)
    assert "cannot be attributed" in opposite
    untestable = attribution_sentence(full, loss("eva_init", -0.06, None, None, None, n=1))
    assert "cannot be attributed" in untestable and "(eva_init) cannot be tested: too few seeds for a test" in untestable
    nothing = attribution_sentence(loss("eva", -0.004, -0.02, 0.012, 0.5), weak_init, weak_ranks)
    assert nothing.startswith("eva at r8 in test loss: no detectable difference from uniform (" + M + "0.0040 nats")
    assert "so there is no effect to attribute" in nothing
    few = attribution_sentence(loss("eva", -0.07, None, None, None, n=1), weak_init)
    assert "too few seeds for a test" in few and "no effect to attribute" in few
    with pytest.raises(ValueError):
        attribution_sentence(full, exact_match(0.01, -0.01, 0.03, 0.3))


def test_seeds_planned_and_the_level_are_stated():
    c = loss(n=2, n_planned=3, level=0.01)
    sentence = conclude(c)
    assert "p = 0.31, 2 of 3 seeds)" in sentence
    assert sentence.endswith("about 0.0061 nats or more (80% power at its family's level 0.01).")
    assert "3 of 3 seeds" in conclude(loss(n_planned=3))
    assert "200 test rows" in conclude(exact_match(0.01, -0.02, 0.04, 0.52))  # rows: no plan of seeds


def test_capacity_sentence_both_ways():
    binds = capacity_sentence(loss("uniform", 0.30, 0.25, 0.35, 0.0005, budget="r2"), "uniform at r2", "uniform at r8")
    assert binds == (
        "Does capacity bind? uniform at r2 against uniform at r8, paired by seed, in test loss: yes, uniform at r2 is "
        "worse (+0.3000 nats, 95% CI [+0.2500, +0.3500], p < 0.001, 3 seeds). That gap of 0.3000 nats is the scale "
        "against which the allocation effects at these budgets are read."
    )
    free = capacity_sentence(loss("uniform", 0.002, -0.004, 0.008, 0.4, mde=0.012), "uniform at r2", "uniform at r8")
    assert "no detectable difference (+0.0020 nats" in free and "about 0.0120 nats or more" in free
    assert free.endswith(
        "so this study has no capacity gap to read allocation effects against; a gap smaller than that could have gone unseen."
    )
    more_hurts = capacity_sentence(loss("uniform", -0.05, -0.07, -0.03, 0.01), "uniform at r2", "uniform at r8")
    assert "uniform at r2 came out better than uniform at r8" in more_hurts and "no capacity gap" in more_hurts
    unknown = capacity_sentence(loss("uniform", 0.1, None, None, None, n=1), "uniform at r2", "uniform at r8")
    assert "too few seeds for a test" in unknown and unknown.endswith("so the size of a capacity effect is unknown.")


def test_verdict_labels_say_why_no_test_ran():
    def label(n, mean, low, high, p=None):
        return verdict_label(Comparison("s", "r8", "test exact match", True, n, mean, low, high, p, None))

    assert label(0, None, None, None) == "no test (no pairs)"
    assert label(1, 0.2, None, None) == "no test (one pair)"
    # Enough pairs, all differences identical: not "too few pairs" (the old label).
    assert label(60, 0.0, 0.0, 0.0) == "no test (no pair differs)"
    assert label(3, 0.1, 0.1, 0.1 + 1e-16) == "no test (every pair differs by the same amount)"
    assert label(3, 0.1, 0.05, 0.15, p=0.01) == "better" and label(3, 0.1, -0.05, 0.15, p=0.01) == "no detectable difference"


def test_judge_family_by_hand():
    # Three comparisons with p 0.004, 0.03, None (no test): m = 2, Holm: 2 x 0.004 = 0.008, max(0.008, 0.03) = 0.03.
    tested = [
        PairedNumbers(3, 0.05, 0.01, 0.03, 0.07, 0.004),
        PairedNumbers(3, -0.02, 0.02, -0.04, 0.001, 0.03),
        PairedNumbers(1, 0.01, None, None, None, None),
    ]
    first, second, third = judge_family(tested, higher_is_better=False)
    assert (first.p_holm, second.p_holm, third.p_holm) == (pytest.approx(0.008), pytest.approx(0.03), None)
    assert first.family_size == second.family_size == 2 and first.level == second.level == 0.025
    assert (first.verdict, second.verdict, third.verdict) == ("worse", "no detectable difference", "no test (one pair)")
    # MDE at the family level 0.025 with 3 pairs: d = 4.624820, found by solving for 80% power with the power
    # written as a chi-square average of normal tails (no noncentral t), times the spread 0.01.
    assert first.mde == pytest.approx(0.01 * 4.624820, rel=1e-6) and third.mde is None


# --- the abstract's one-line answer (report/paper.py) ------------------------------------------------


def _stats(*verdicts: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            dict(
                metric="test_loss",
                role="strategy",
                label=f"s{i}",
                budget_label="r8",
                verdict=v,
                mde=0.01,
                mean_diff=-0.02,
                ci_low=-0.03,
                ci_high=-0.01,
            )
            for i, v in enumerate(verdicts)
        ]
    )


UNTESTED = "too few seeds for any test"
NULL = "no detectable difference"


@pytest.mark.parametrize(
    "verdicts, separated, says, never",
    [
        ((UNTESTED, UNTESTED), None, "There is no answer yet.", "answer is no"),
        ((UNTESTED, UNTESTED), True, "There is no answer yet.", "answer is no"),
        ((NULL, UNTESTED), True, "The answer so far is no", "There is no answer"),
        ((NULL, NULL), True, "The answer is no: non-uniform allocation did not detectably beat", "so far"),
        ((NULL, NULL), None, "not evidence of no difference", "answer is no"),
        ((NULL, NULL), False, "underpowered", "answer is no"),
        (("better", NULL), True, "The answer here is yes for s0 at r8", "answer is no"),
    ],
)
def test_the_abstract_answers_only_what_was_tested(verdicts, separated, says, never):
    from adaptive_lora.report.compare import TEST_LOSS
    from adaptive_lora.report.paper import _answer

    answer = _answer(_stats(*verdicts), TEST_LOSS, separated)
    assert says in answer and never not in answer, answer
    assert f"of {len(verdicts)} comparisons" in answer


def test_groups_waiting_for_the_same_thing_share_one_sentence():
    from adaptive_lora.report.findings import unchosen_sentences

    waiting = "its learning-rate selection has not finished: 0 of 3 selection runs ended"
    groups = [
        {"label": "eva", "budget_label": "r2", "reason": waiting},
        {"label": "eva", "budget_label": "r8", "reason": waiting},
        {"label": "adalora", "budget_label": "r8", "reason": "every selection run failed"},
    ]
    assert unchosen_sentences(groups) == [
        f"2 groups have no chosen learning rate ({waiting}), so they are in no comparison: eva at r2, eva at r8.",
        "adalora at r8: no chosen learning rate (every selection run failed); it is in no comparison.",
    ]


def _control_row(n_pairs: int, mean: float | None, p: float | None, verdict: str) -> dict:
    return dict(
        metric="test_loss",
        metric_name="test loss",
        higher_is_better=False,
        role="capacity-control",
        label="control: r1 on v",
        budget_label="own",
        baseline_label="uniform",
        baseline_budget="r8",
        n_pairs=n_pairs,
        mean_diff=mean,
        ci_low=None if p is None else 0.01,
        ci_high=None if p is None else 0.09,
        t_p_holm=p,
        mde=0.02,
        verdict=verdict,
    )


@pytest.mark.parametrize(
    "row, separated, abstract",
    [
        (
            _control_row(1, 0.05, None, "no test (one pair)"),
            None,
            "has too few finished seeds for a test against the baseline at r8 yet",
        ),
        (
            _control_row(0, None, None, "no test (no pairs)"),
            None,
            "has too few finished seeds for a test against the baseline at r8 yet",
        ),
        (_control_row(3, 0.05, 0.01, "worse"), True, "separated from the baseline at r8"),
        (_control_row(3, 0.01, 0.40, "no detectable difference"), False, "did not separate from the baseline at r8"),
    ],
)
def test_a_control_with_too_few_seeds_is_untested_not_underpowered(row, separated, abstract):
    from adaptive_lora.report.compare import TEST_LOSS
    from adaptive_lora.report.findings import power_check
    from adaptive_lora.report.paper import control_sentences

    stats = pd.DataFrame([row])
    assert power_check(stats, TEST_LOSS)[0] is separated
    assert abstract in " ".join(control_sentences(stats, TEST_LOSS, separated))


def test_planned_comparisons_that_have_not_run_make_the_answer_provisional():
    from adaptive_lora.report.compare import TEST_LOSS
    from adaptive_lora.report.paper import _answer

    answer = _answer(_stats(NULL, NULL), TEST_LOSS, True, not_compared=3)
    assert "of 2 comparisons" in answer and "3 more planned comparisons have not run yet." in answer
    assert "The answer so far is no" in answer


def test_runs_from_several_environments_are_named_with_what_that_alone_moved():
    from pathlib import Path

    from adaptive_lora.report.collect import Run
    from adaptive_lora.report.methods import mixed_environments

    def run(transformers: str, cpu: str) -> Run:
        env = {"torch": "2.13.0", "transformers": transformers, "peft": "0.21.2", "cpu_capability": cpu}
        return Run(Path("r"), {"strategy": "uniform", "environment": env})

    same = [run("5.24.0", "AVX2"), run("5.24.0", "AVX2")]
    frame = pd.DataFrame({"base_eval_loss": [4.114185, 4.114195]})
    assert mixed_environments(same, frame) == []
    (sentence,) = mixed_environments([run("5.24.0", "AVX2"), run("5.25.0", "AVX512")], frame)
    assert sentence.startswith("Runs were trained in 2 environments (torch 2.13.0, transformers 5.24.0, peft 0.21.2, CPU AVX2;")
    assert "differed between them by at most 1e-05 nats" in sentence


def test_capacity_not_yet_tested_is_not_called_unasked():
    from types import SimpleNamespace

    from adaptive_lora.report.compare import TEST_LOSS
    from adaptive_lora.report.paper import capacity_blocks

    def spec(role, budget):
        return SimpleNamespace(role=role, budget=SimpleNamespace(label=budget))

    planned = SimpleNamespace(runs=[spec("baseline", "r2"), spec("baseline", "r8"), spec("strategy", "r8")])
    one_size = SimpleNamespace(runs=[spec("baseline", "r8"), spec("strategy", "r8")])
    assert capacity_blocks(pd.DataFrame(), TEST_LOSS, planned)[1].text.startswith(
        "Not tested yet: the suite plans the baseline at 2 sizes (r2, r8)"
    )
    assert capacity_blocks(pd.DataFrame(), TEST_LOSS, one_size)[1].text.startswith("Not asked: this sweep has one baseline size")


def test_the_tally_says_how_the_baseline_was_paired():
    from adaptive_lora.report.compare import TEST_LOSS
    from adaptive_lora.report.paper import _answer

    assert "comparison with the baseline at equal budget," in _answer(_stats(NULL), TEST_LOSS, True)
    own = _stats(NULL).assign(budget_label="own")
    assert "comparison with the baseline of the closest size (each allocation at its own ranks)," in _answer(own, TEST_LOSS, True)


def test_one_comparison_is_counted_and_resolved_in_the_singular():
    from adaptive_lora.report.compare import TEST_LOSS
    from adaptive_lora.report.paper import _answer

    one = _answer(_stats(NULL), TEST_LOSS, True)
    assert "of 1 comparison with the baseline" in one
    assert "at a resolution of about 0.0100 nats (the minimum detectable effect)" in one
    two = _answer(_stats(NULL, NULL).assign(mde=[0.01, 0.02]), TEST_LOSS, True)
    assert "of 2 comparisons with" in two and "about 0.0100 nats to 0.0200 nats (the minimum detectable effects)" in two
