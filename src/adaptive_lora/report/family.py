"""A family of comparisons judged together: Holm across it, the level each comparison must reach, its
minimum detectable effect (MDE) at that level, and its verdict.

A family is one metric at one budget: every group compared with the baseline there (seed-level or
per test row), or the capacity checks of one metric. Holm keeps the chance of any false "better" or
"worse" in a family at or below ALPHA. A verdict needs the Holm-corrected p below ALPHA and the 95% CI
to exclude 0 (conclusions.direction). With m tests in the family, Holm compares the smallest p with
ALPHA / m; a comparison whose p is below ALPHA / m gets its verdict whatever the other comparisons
show, so ALPHA / m is the level its MDE is computed at (Holm's worst case; when other comparisons are
real effects too, Holm's later steps are laxer and the true 80% point is somewhat smaller).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .conclusions import Comparison, direction
from .stats import ALPHA, holm, min_detectable_effect, sign_flip_mde


@dataclass(frozen=True)
class PairedNumbers:
    """One comparison's numbers before the family is judged: n pairs (seeds or test rows)."""

    n: int
    mean_diff: float | None
    sd_diff: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None  # unadjusted, two-sided
    sign_flip: bool = False  # p is from the sign-flip test (stats.sign_flip_p): its MDE is that test's


@dataclass(frozen=True)
class Judgement:
    p_holm: float | None
    family_size: int  # m: comparisons of the family with a p-value
    level: float  # ALPHA / m: what this comparison's p must beat in Holm's worst case; its MDE's level
    mde: float | None  # at `level`, 80% power, from the observed spread
    verdict: str


def family_level(family_size: int) -> float:
    return ALPHA / max(1, family_size)


def verdict_label(c: Comparison) -> str:
    """better / worse / no detectable difference, or why no test ran."""
    if c.p is None or c.mean_diff is None:
        if c.n_pairs == 0 or c.mean_diff is None:
            return "no test (no pairs)"
        if c.n_pairs == 1:
            return "no test (one pair)"
        if c.ci_low is not None and math.isclose(c.ci_low, c.ci_high, rel_tol=1e-9, abs_tol=1e-12):
            same = "no pair differs" if abs(c.mean_diff) <= 1e-12 else "every pair differs by the same amount"
            return f"no test ({same})"
        return "no test"
    return direction(c) or "no detectable difference"


def judge_family(tested: Sequence[PairedNumbers], higher_is_better: bool) -> list[Judgement]:
    """Holm-corrected p, family size, level, MDE and verdict of every comparison of one family."""
    adjusted = holm([t.p for t in tested])
    size = sum(p is not None for p in adjusted)
    level = family_level(size)
    judgements = []
    for t, p_holm in zip(tested, adjusted):
        mde = (sign_flip_mde if t.sign_flip else min_detectable_effect)(t.sd_diff, t.n, alpha=level)
        comparison = Comparison("", "", "", higher_is_better, t.n, t.mean_diff, t.ci_low, t.ci_high, p_holm, mde)
        judgements.append(Judgement(p_holm, size, level, mde, verdict_label(comparison)))
    return judgements
