"""Paired statistics for strategy-vs-baseline comparisons: pure functions over numbers.

A sweep trains every strategy with the same seeds, so the natural comparison is paired: for each
seed, strategy loss minus baseline loss. Seed-to-seed variation (data order, init) then cancels.
Everything here returns plain floats or None (never NaN), so callers can format without checks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
ALPHA = 0.05


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
    ci_low: float | None
    ci_high: float | None
    t_p: float | None  # paired t-test, two-sided
    wilcoxon_p: float | None  # Wilcoxon signed-rank, two-sided
    wilcoxon_method: str | None  # "exact", "permutation" (ties/zeros) or "normal approximation"
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _clean(values: Sequence[float]) -> np.ndarray:
    """Drop None/NaN/inf: a missing measurement is not a zero."""
    array = np.array([np.nan if v is None else v for v in values], dtype=float)
    return array[np.isfinite(array)]


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
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return MeanCI(n, mean, std, mean - half, mean + half)


def min_exact_wilcoxon_p(n_pairs: int) -> float:
    """Smallest two-sided p an exact signed-rank test can give with n pairs: all signs equal, 2 / 2^n."""
    return min(1.0, 2.0 / 2**n_pairs)


def wilcoxon_method(diffs: Sequence[float]) -> str:
    """Which null distribution scipy's method='auto' uses for these differences (see its docs)."""
    d = np.asarray(diffs, dtype=float)
    nonzero = d[d != 0]
    ties_or_zeros = len(nonzero) < len(d) or len(np.unique(np.abs(nonzero))) < len(nonzero)
    if not ties_or_zeros and len(d) <= 50:
        return "exact"
    if ties_or_zeros and len(d) <= 13:
        return "permutation"
    return "normal approximation"


def _constant(diffs: np.ndarray) -> bool:
    """Equal up to float rounding (1.1 - 1.0 vs 2.1 - 2.0): t would be huge on noise alone."""
    return len(diffs) > 0 and float(np.ptp(diffs)) <= 1e-12 * max(1.0, float(np.max(np.abs(diffs))))


def _t_test_p(diffs: np.ndarray) -> float | None:
    if len(diffs) < 2 or _constant(diffs):  # zero variance: t is undefined
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _finite(sps.ttest_1samp(diffs, 0.0).pvalue)


def _wilcoxon_p(diffs: np.ndarray) -> float | None:
    if len(diffs) < 2 or not np.any(diffs != 0):  # all zero: scipy has no p-value to give
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _finite(sps.wilcoxon(diffs, method="auto").pvalue)


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


def paired_compare(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE) -> PairedResult:
    """Compare paired samples a and b (same order = same pair): mean of a - b with its CI and tests.

    Pairs where either side is missing or non-finite are dropped.
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    x = np.array([np.nan if v is None else v for v in a], dtype=float)
    y = np.array([np.nan if v is None else v for v in b], dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    diffs = x[keep] - y[keep]
    summary = mean_ci(diffs, confidence)
    return PairedResult(
        n_pairs=len(diffs),
        mean_diff=summary.mean,
        ci_low=summary.ci_low,
        ci_high=summary.ci_high,
        t_p=_t_test_p(diffs),
        wilcoxon_p=_wilcoxon_p(diffs),
        wilcoxon_method=wilcoxon_method(diffs) if len(diffs) >= 2 else None,
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
