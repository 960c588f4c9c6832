"""Paired statistics for strategy-vs-baseline comparisons: pure functions over numbers.

A sweep trains every strategy with the same seeds, so the natural comparison is paired: for each
seed, strategy loss minus baseline loss. Seed-to-seed variation (data order, init) then cancels.
The same pairing works per test row, with the row as the unit (a row's differences are averaged over
seeds first; exact match: the exact sign-flip permutation test), and the minimum detectable effect
says how small a difference a test could resolve at a given level. Everything here returns plain
floats or None (never NaN), so callers can format without checks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize, special
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.80  # conventional target power for the minimum detectable effect
EXACT_WILCOXON_MAX_PAIRS = 50  # no ties: scipy's exact null distribution, beyond this the normal approximation
PERMUTATION_MAX_PAIRS = 13  # ties: all 2^n sign flips (8,192 at 13) are enumerated, so the p-value is exact too


@dataclass(frozen=True)
class MeanCI:
    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None for n < 2
    ci_low: float | None  # t-based confidence interval of the mean; None for n < 2
    ci_high: float | None


@dataclass(frozen=True)
class PairedResult:
    n_pairs: int
    mean_diff: float | None  # mean of (a - b)
    sd_diff: float | None  # sample standard deviation of (a - b); None for n < 2
    ci_low: float | None
    ci_high: float | None
    t_p: float | None  # paired t-test, two-sided
    wilcoxon_p: float | None  # Wilcoxon signed-rank, two-sided
    wilcoxon_method: str | None  # the method that computed wilcoxon_p (see wilcoxon_method()); None: no test
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def finite(value: Any) -> float | None:
    """A finite float, or None (None, non-numbers, NaN and inf)."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _clean(values: Sequence[float]) -> np.ndarray:
    """Drop None/NaN/inf: a missing measurement is not a zero."""
    array = np.array([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


@lru_cache(maxsize=1024)
def t_quantile(q: float, df: int) -> float:
    """Student t quantile (scipy.special's, without scipy.stats' per-call overhead: simulations call it often)."""
    return float(special.stdtrit(df, q))


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> MeanCI:
    """Mean, sample std and the t-based confidence interval of the mean (Student t, n-1 df)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return MeanCI(0, None, None, None, None)
    mean = float(x.mean())
    if n < 2:
        return MeanCI(1, mean, None, None, None)
    std = float(x.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half)


def min_exact_wilcoxon_p(n_pairs: int) -> float:
    """Smallest two-sided p an exact signed-rank test can give with n pairs: all signs equal, 2 / 2^n."""
    return min(1.0, 2.0 / 2**n_pairs)


def _signed_rank_input(diffs: Sequence[float]) -> np.ndarray:
    """The nonzero differences (zero_method "wilcox": zeros carry no sign), scaled by the largest and
    rounded to 12 decimals, so values equal up to float rounding (1.1 - 1.0 vs 2.1 - 2.0) are ties.
    Ranks are scale-free, so the test statistic is unchanged otherwise. Missing values are dropped."""
    d = _clean(diffs)
    scale = float(np.max(np.abs(d))) if len(d) else 0.0
    if scale == 0.0:
        return d[:0]
    rounded = np.round(d / scale, 12)
    return rounded[rounded != 0]


def wilcoxon_method(diffs: Sequence[float]) -> str | None:
    """The method wilcoxon_test() uses, and so the label of its p-value; None when no test applies
    (fewer than 2 pairs, or every difference zero).

    "exact": no ties among the nonzero differences, at most 50 of them (scipy's exact null distribution);
    "permutation": ties, at most 13 nonzero differences, every sign flip enumerated (also exact);
    "normal approximation": otherwise (no continuity correction).
    """
    d = _signed_rank_input(diffs)
    if len(_clean(diffs)) < 2 or len(d) == 0:
        return None
    ties = len(np.unique(np.abs(d))) < len(d)
    if not ties and len(d) <= EXACT_WILCOXON_MAX_PAIRS:
        return "exact"
    if ties and len(d) <= PERMUTATION_MAX_PAIRS:
        return "permutation"
    return "normal approximation"


def wilcoxon_test(diffs: Sequence[float]) -> tuple[float | None, str | None]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences and the method that computed it.

    The method is chosen here and passed to scipy explicitly, so the label is what was computed
    whatever scipy's own "auto" rule is in the installed version.
    """
    method = wilcoxon_method(diffs)
    if method is None:
        return None, None
    d = _signed_rank_input(diffs)
    if method == "permutation":
        scipy_method = sps.PermutationMethod(n_resamples=2 ** len(d))  # >= every sign pattern: full enumeration
    else:
        scipy_method = "exact" if method == "exact" else "asymptotic"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sps.wilcoxon(d, zero_method="wilcox", correction=False, alternative="two-sided", method=scipy_method)
    return finite(result.pvalue), method


def _constant(diffs: np.ndarray) -> bool:
    """Equal up to float rounding (1.1 - 1.0 vs 2.1 - 2.0): t would be huge on noise alone."""
    return len(diffs) > 0 and float(np.ptp(diffs)) <= 1e-12 * max(1.0, float(np.max(np.abs(diffs))))


def t_test_p(diffs: Sequence[float]) -> float | None:
    """Two-sided one-sample t-test of mean 0 (a paired t-test on the differences); None when it is
    undefined (fewer than 2 values, or values equal up to float rounding)."""
    d = _clean(diffs)
    if len(d) < 2 or _constant(d):  # zero variance: t is undefined
        return None
    t = float(d.mean()) / (float(d.std(ddof=1)) / math.sqrt(len(d)))
    return finite(2.0 * float(special.stdtr(len(d) - 1, -abs(t))))


def paired_note(n_pairs: int, diffs: Sequence[float] = ()) -> str:
    """Plain-words caveats for a paired comparison of n_pairs seeds."""
    if n_pairs == 0:
        return "no pairs: no seed where both this strategy and its baseline finished"
    if n_pairs < 2:
        return "too few seeds for any test"
    d = np.asarray(diffs, dtype=float)
    notes = []
    if len(d) and not np.any(d != 0):
        notes.append("all differences are zero: no test applies")
    elif _constant(d):
        notes.append("every seed gives the same difference: the t-test is undefined")
    if n_pairs < 6:
        notes.append(
            "an exact Wilcoxon test cannot reach p < 0.05 with fewer than 6 pairs "
            f"(smallest possible p with {n_pairs}: {min_exact_wilcoxon_p(n_pairs):.4g})"
        )
    if n_pairs < 10:
        notes.append("with few seeds the t-test leans on the differences being roughly normal")
    return "; ".join(notes)


def paired_compare(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE, wilcoxon: bool = True) -> PairedResult:
    """Compare paired samples a and b (same order = same pair): mean of a - b with its CI and tests.

    Pairs where either side is missing or non-finite are dropped. The Wilcoxon test is reported beside
    the t-test and never enters a verdict; wilcoxon=False skips it (simulations of the verdict).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    x = np.array([np.nan if v is None else v for v in a], dtype=float)
    y = np.array([np.nan if v is None else v for v in b], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    diffs = x[keep] - y[keep]
    summary = mean_ci(diffs, confidence)
    wilcoxon_p, method = wilcoxon_test(diffs) if wilcoxon else (None, None)
    return PairedResult(
        n_pairs=len(diffs),
        mean_diff=summary.mean,
        sd_diff=summary.std,
        ci_low=summary.ci_low,
        ci_high=summary.ci_high,
        t_p=t_test_p(diffs),
        wilcoxon_p=wilcoxon_p,
        wilcoxon_method=method,
        note=paired_note(len(diffs), diffs),
    )


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values, in the input order; None entries stay None and do not count.

    Sorted ascending, the i-th (0-based) of m p-values is multiplied by (m - i); a running maximum
    keeps the adjusted values monotone, and they are capped at 1.
    """
    present = [(p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    m = len(present)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, index) in enumerate(sorted(present)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[index] = running
    return adjusted


# --- resolution: the minimum detectable effect of a paired t-test -------------------------------


def _t_critical(n: int, alpha: float) -> float:
    return float(sps.t.ppf(1 - alpha / 2, n - 1))


def _power_at_noncentrality(noncentrality: float, n: int, alpha: float) -> float:
    """Two-sided paired t-test power: P(|T| > t_crit) with T ~ noncentral t (n - 1 df).

    The lower tail is taken as the upper tail at -noncentrality: scipy's nct.cdf gives NaN far out there.
    """
    df, t_crit = n - 1, _t_critical(n, alpha)
    return float(sps.nct.sf(t_crit, df, noncentrality) + sps.nct.sf(t_crit, df, -noncentrality))


def paired_t_power(mean_diff: float, sd_diff: float, n: int, alpha: float = ALPHA) -> float | None:
    """Power of a two-sided paired t-test with n pairs against a true mean difference mean_diff,
    when the differences have standard deviation sd_diff. None for n < 2 or sd_diff <= 0."""
    if n < 2 or sd_diff is None or not math.isfinite(sd_diff) or sd_diff <= 0:
        return None
    return finite(_power_at_noncentrality(abs(mean_diff) * math.sqrt(n) / sd_diff, n, alpha))


@lru_cache(maxsize=256)
def _noncentrality_for_power(n: int, alpha: float, power: float) -> float:
    """The noncentrality at which the two-sided test with n pairs has the given power (power rises with it)."""

    def target(noncentrality: float) -> float:
        return _power_at_noncentrality(noncentrality, n, alpha) - power

    high = _t_critical(n, alpha) + float(sps.norm.ppf(power)) + 1.0
    while target(high) < 0:
        high *= 2
    return float(optimize.brentq(target, 0.0, high, xtol=1e-12))


def min_detectable_effect(sd_diff: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean paired difference that a two-sided paired t-test with n pairs detects with
    the given power, in the units of the differences: noncentrality * sd_diff / sqrt(n), exactly from the
    noncentral t distribution. Pairs can be seeds or test rows (per-row differences).

    None for n < 2 or a missing sd; 0.0 when the differences do not vary.
    """
    if not 0 < alpha < 1 or not alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1, got alpha {alpha}, power {power}")
    if n < 2 or sd_diff is None or not math.isfinite(sd_diff):
        return None
    if sd_diff < 0:
        raise ValueError(f"a standard deviation cannot be negative: {sd_diff}")
    if sd_diff == 0:
        return 0.0
    return finite(_noncentrality_for_power(int(n), float(alpha), float(power)) * sd_diff / math.sqrt(n))


def _sign_flip_power(mean_diff: float, sd_diff: float, n: int, alpha: float) -> float:
    """Normal approximation of the power of the two-sided sign-flip test of the sum of n differences with
    mean mean_diff and standard deviation sd_diff: the sum S is about N(n mean, n sd^2), and the test rejects
    when |S| exceeds z * sqrt(sum of squares), the sum of squares being about n (sd^2 + mean^2). The mean^2
    is what sets it apart from the t-test: sign flips measure spread around 0, not around the mean."""
    z = float(special.ndtri(1 - alpha / 2))
    threshold = z * math.sqrt(n * (sd_diff**2 + mean_diff**2))
    spread = sd_diff * math.sqrt(n)
    return float(special.ndtr((n * mean_diff - threshold) / spread) + special.ndtr((-n * mean_diff - threshold) / spread))


def sign_flip_mde(sd_diff: float | None, n: int, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest true mean difference the sign-flip test (sign_flip_p) detects with the given power over
    n differences (test rows) of standard deviation sd_diff, from the normal approximation above. None when
    no difference reaches that power: with sqrt(n) at or below the normal quantile the test cannot reach the
    level however large the effect (e.g. 5 rows at alpha 0.01), or with a missing sd; 0.0 when sd is 0."""
    if n < 2 or sd_diff is None or not math.isfinite(sd_diff):
        return None
    if sd_diff == 0:
        return 0.0
    high = sd_diff
    for _ in range(60):  # power rises with the effect toward 1 when sqrt(n) exceeds the quantile, else stays low
        if _sign_flip_power(high, sd_diff, n, alpha) >= power:
            return finite(optimize.brentq(lambda d: _sign_flip_power(d, sd_diff, n, alpha) - power, 0.0, high, xtol=1e-14))
        high *= 2
    return None


# --- per-row paired tests -----------------------------------------------------------------------


def sign_flip_p(row_totals: Sequence[int]) -> float | None:
    """Exact two-sided sign-flip permutation p-value of the sum of per-row paired differences.

    row_totals: per test row, an integer difference summed over seeds, e.g. for exact match the
    seeds where the strategy was right minus those where the baseline was (each between -k and k
    with k seeds). Under the null the two adapters are exchangeable on every row, so each row's
    total is as likely to carry either sign; the p-value is the share of all 2^n sign patterns whose
    |sum| is at least the observed one, counted exactly by convolution (no sampling). With one seed
    this is the exact McNemar (sign) test. None when every total is 0: no row tells the two apart.
    """
    totals = np.asarray(row_totals, dtype=float)
    if totals.size and not np.all(totals == np.round(totals)):
        raise ValueError("sign_flip_p needs integer row totals (e.g. right answers summed over seeds)")
    magnitudes = np.abs(totals).astype(np.int64)
    magnitudes = magnitudes[magnitudes > 0]
    if magnitudes.size == 0:
        return None
    total = int(magnitudes.sum())
    # distribution[j]: probability that the rows with a + sign sum to j (the signed sum is then 2j - total).
    # Rows of equal magnitude m, q of them, add m times a Binomial(q, 1/2) count: one convolution per magnitude.
    distribution = np.ones(1)
    for m, q in zip(*np.unique(magnitudes, return_counts=True)):
        step = np.zeros(int(m) * int(q) + 1)
        k = np.arange(q + 1)
        step[:: int(m)] = np.exp(special.gammaln(q + 1) - special.gammaln(k + 1) - special.gammaln(q - k + 1) - q * math.log(2))
        distribution = np.convolve(distribution, step)
    observed = abs(int(round(float(totals.sum()))))
    extreme = np.abs(2 * np.arange(total + 1) - total) >= observed
    return finite(min(1.0, float(distribution[extreme].sum())))
