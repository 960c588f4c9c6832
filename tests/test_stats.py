import math

import numpy as np
import pytest
from scipy import stats as sps

from adaptive_lora.report.stats import holm, mean_ci, min_exact_wilcoxon_p, paired_compare, paired_note, wilcoxon_method

T_975_DF3 = 3.182446305284263  # Student t 97.5% quantile, 3 degrees of freedom (printed tables: 3.182)


def test_mean_ci_by_hand():
    s = mean_ci([1.0, 2.0, 3.0, 4.0])
    std = math.sqrt(5 / 3)  # sum of squared deviations 5, over n-1 = 3
    half = T_975_DF3 * std / 2  # / sqrt(4)
    assert (s.n, s.mean, s.std) == (4, 2.5, pytest.approx(std))
    assert s.ci_low == pytest.approx(2.5 - half) and s.ci_high == pytest.approx(2.5 + half)


def test_mean_ci_small_and_missing():
    assert mean_ci([]) == mean_ci([None, float("nan")])
    assert mean_ci([]).mean is None
    one = mean_ci([3.0, None])
    assert (one.n, one.mean, one.std, one.ci_low, one.ci_high) == (1, 3.0, None, None, None)


def test_paired_compare_matches_hand_and_scipy():
    a = [3.0, 3.1, 3.2, 2.9, 3.05]
    b = [3.1, 3.15, 3.32, 2.95, 3.0]
    diffs = np.array(a) - np.array(b)  # -0.10 -0.05 -0.12 -0.05 +0.05
    r = paired_compare(a, b)
    assert r.n_pairs == 5
    assert r.mean_diff == pytest.approx(-0.054)
    half = sps.t.ppf(0.975, 4) * diffs.std(ddof=1) / math.sqrt(5)
    assert (r.ci_low, r.ci_high) == (pytest.approx(-0.054 - half), pytest.approx(-0.054 + half))
    assert r.t_p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert r.wilcoxon_p == pytest.approx(sps.wilcoxon(a, b).pvalue)


def test_exact_wilcoxon_known_values():
    # All n differences negative and distinct: the exact two-sided p is 2 / 2^n.
    three = paired_compare([0.9, 1.95, 2.88], [1.0, 2.0, 3.0])
    assert three.wilcoxon_p == pytest.approx(0.25) and three.wilcoxon_method == "exact"
    six = paired_compare([0, 0, 0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert six.wilcoxon_p == pytest.approx(2 / 64)
    assert three.t_p == pytest.approx(sps.ttest_rel([0.9, 1.95, 2.88], [1.0, 2.0, 3.0]).pvalue)


def test_pairs_with_missing_values_are_dropped():
    r = paired_compare([1.0, None, 3.0, float("nan"), 5.5], [0.5, 2.0, 2.0, 1.0, 5.0])
    assert r.n_pairs == 3
    assert r.mean_diff == pytest.approx((0.5 + 1.0 + 0.5) / 3)
    with pytest.raises(ValueError):
        paired_compare([1.0], [1.0, 2.0])


def test_holm_worked_example():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])


def test_holm_caps_at_one_and_skips_missing():
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([0.04, None, 0.01]) == [pytest.approx(0.04), None, pytest.approx(0.02)]
    assert holm([]) == []


def test_too_few_pairs():
    one = paired_compare([1.0], [0.5])
    assert one.n_pairs == 1 and one.mean_diff == 0.5
    assert (one.ci_low, one.t_p, one.wilcoxon_p) == (None, None, None)
    assert one.note == "too few seeds for any test"
    assert paired_compare([], []).note.startswith("no pairs")


def test_wilcoxon_floor_note():
    # The note's claim: below 6 pairs the exact test cannot reach 0.05; from 6 on it can.
    assert min_exact_wilcoxon_p(5) > 0.05 > min_exact_wilcoxon_p(6)
    for n in (2, 3, 5):
        assert "cannot reach p < 0.05 with fewer than 6 pairs" in paired_note(n, np.arange(1, n + 1))
    assert "cannot reach" not in paired_note(6, np.arange(1, 7))


def test_degenerate_differences_give_none_not_nan():
    same = paired_compare([1.1, 2.2, 3.3], [1.0, 2.1, 3.2])  # every difference 0.1, up to float rounding
    same_exact = paired_compare([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])
    assert same_exact.t_p is None and "t-test is undefined" in same_exact.note
    assert same.mean_diff == pytest.approx(0.1)
    assert same.t_p is None  # rounding noise in the differences must not make t huge
    zero = paired_compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert zero.t_p is None and zero.wilcoxon_p is None and "all differences are zero" in zero.note


def test_wilcoxon_method_names():
    assert wilcoxon_method([0.1, -0.2, 0.3]) == "exact"
    assert wilcoxon_method([0.1, 0.1, 0.3]) == "permutation"  # ties
    assert wilcoxon_method([0.0, 0.1, 0.3]) == "permutation"  # a zero
    assert wilcoxon_method(np.linspace(0.1, 6.0, 60)) == "normal approximation"
