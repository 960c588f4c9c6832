"""Conclusions in words, generated from the paired numbers and never saying more than they support.

One sentence per strategy x budget (conclude), whether the study could have seen a difference at all
(study_power, from the capacity control: a configuration known to be worse than uniform), whether
capacity binds (capacity_sentence: the baseline at a smaller budget against a larger one), and which
part of a strategy's effect comes from its initialisation or training dynamics rather than its ranks
(attribution_sentence). A difference counts only when p < 0.05 AND the 95% CI excludes 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from .stats import ALPHA, finite

MINUS = "\u2212"  # typographic minus: "−0.0012" reads as a number, "-0.0012" as a hyphen


@dataclass(frozen=True)
class Comparison:
    """One paired comparison of a strategy with the baseline (uniform) on one metric."""

    label: str
    budget: str
    metric: str  # what the report calls it, e.g. "test loss"
    higher_is_better: bool
    n_pairs: int
    mean_diff: float | None  # strategy - baseline
    ci_low: float | None  # 95% CI of mean_diff
    ci_high: float | None
    p: float | None  # Holm-corrected where applicable: say so in p_label
    mde: float | None  # minimum detectable effect, in the units of mean_diff
    unit: str = ""  # e.g. "nats"
    n_planned: int | None = None  # seeds planned for both sides ("2 of 3 seeds"); None: not known
    level: float | None = None  # the level the MDE is computed at (its family's, family.py)
    pair_unit: str = "seed"  # what a pair is: "seed" or "test row"
    p_label: str = "p"  # e.g. "Holm p"
    baseline: str = "uniform"
    digits: int = 4

    def __post_init__(self) -> None:
        # Numbers arrive from pandas rows: a missing value is NaN there, None here.
        for name in ("mean_diff", "ci_low", "ci_high", "p", "mde", "level"):
            object.__setattr__(self, name, finite(getattr(self, name)))
        object.__setattr__(self, "n_pairs", int(self.n_pairs) if finite(self.n_pairs) is not None else 0)
        planned = finite(self.n_planned)
        object.__setattr__(self, "n_planned", int(planned) if planned is not None else None)

    @classmethod
    def from_row(cls, row: Mapping[str, Any], **overrides: Any) -> Comparison:
        """From a paired_stats row (label, budget_label, metric_name, higher_is_better, n_pairs, mean_diff,
        ci_low, ci_high, t_p_holm, mde, baseline_label, and when present n_planned, mde_level); overrides
        set the rest (unit, digits, p_label...)."""
        values = {
            "label": row["label"],
            "budget": row["budget_label"],
            "metric": row["metric_name"],
            "higher_is_better": bool(row["higher_is_better"]),
            "n_pairs": row["n_pairs"],
            "mean_diff": row["mean_diff"],
            "ci_low": row["ci_low"],
            "ci_high": row["ci_high"],
            "p": row["t_p_holm"],
            "mde": row["mde"],
            "p_label": "Holm p",
            "n_planned": row.get("n_planned"),
            "level": row.get("mde_level"),
        }
        baseline = row.get("baseline_label")
        if isinstance(baseline, str) and baseline:
            values["baseline"] = baseline
        values.update(overrides)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# --- formatting ---------------------------------------------------------------------------------


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}".replace("-", MINUS)


def fmt_amount(value: float, unit: str = "", digits: int = 4, signed: bool = True) -> str:
    """'+0.0120 nats', or unsigned '0.0120 nats'."""
    text = _signed(value, digits) if signed else f"{abs(value):.{digits}f}"
    return f"{text} {unit}" if unit else text


def _amount(c: Comparison, value: float, signed: bool = True) -> str:
    return fmt_amount(value, c.unit, c.digits, signed)


def _p_text(c: Comparison) -> str:
    """Two significant digits, more where rounding would carry p across 0.05 (0.0499 is not "0.05")."""
    p = c.p
    if p < 0.001:
        return f"{c.p_label} < 0.001"
    for significant in (2, 3, 4, 5):
        text = f"{p:.{significant}g}"
        if (float(text) < ALPHA) == (p < ALPHA):
            return f"{c.p_label} = {text if '.' in text else text + '.0'}"
    return f"{c.p_label} {'<' if p < ALPHA else '≥'} {ALPHA}"


def _count(c: Comparison) -> str:
    return f"{c.n_pairs} {c.pair_unit}{'' if c.n_pairs == 1 else 's'}"


def _pairs(c: Comparison) -> str:
    """'3 seeds', or with the plan known '2 of 3 seeds' (a failed seed is never dropped silently)."""
    if c.n_planned is not None and c.pair_unit == "seed":
        return f"{c.n_pairs} of {c.n_planned} seed{'' if c.n_planned == 1 else 's'}"
    return _count(c)


def _detail(c: Comparison) -> str:
    """'95% CI [−0.0040, +0.0016], p = 0.31, 3 seeds', as far as the numbers exist."""
    parts = []
    if c.ci_low is not None and c.ci_high is not None:
        parts.append(f"95% CI [{_signed(c.ci_low, c.digits)}, {_signed(c.ci_high, c.digits)}]")
    if c.p is not None:
        parts.append(_p_text(c))
    parts.append(_pairs(c))
    return ", ".join(parts)


def _numbers(c: Comparison) -> str:
    """'−0.0012 nats, 95% CI [−0.0040, +0.0016], p = 0.31, 3 seeds'."""
    return f"{_amount(c, c.mean_diff)}, {_detail(c)}"


def _direction_word(c: Comparison) -> str:
    return "higher is better" if c.higher_is_better else "lower is better"


# --- verdicts -----------------------------------------------------------------------------------


def _testable(c: Comparison) -> bool:
    return c.n_pairs >= 2 and None not in (c.mean_diff, c.p, c.ci_low, c.ci_high)


def direction(c: Comparison) -> str | None:
    """'better' or 'worse' than the baseline when p < ALPHA and the CI excludes 0, else None."""
    if not _testable(c) or not c.p < ALPHA or c.ci_low <= 0 <= c.ci_high:
        return None
    return "better" if (c.ci_low > 0) == c.higher_is_better else "worse"


def _untestable_reason(c: Comparison) -> str | None:
    """Why no verdict is possible, in words with the numbers; None when the comparison is testable."""
    if c.n_pairs == 0 or c.mean_diff is None:
        return f"no {c.pair_unit} where both it and {c.baseline} were measured in {c.metric}"
    if c.n_pairs < 2:
        return f"too few {c.pair_unit}s for a test in {c.metric} ({_pairs(c)}, difference {_amount(c, c.mean_diff)})"
    if not _testable(c):
        if c.ci_low is not None and c.ci_low == c.ci_high == 0:
            return f"identical to {c.baseline} in {c.metric} in every one of the {_count(c)}, so no test applies"
        if c.ci_low is not None and c.ci_low == c.ci_high:
            same = _amount(c, c.mean_diff)
            return f"every one of the {_count(c)} differs from {c.baseline} by the same {same} in {c.metric}, so no test applies"
        return f"no test result in {c.metric} ({_amount(c, c.mean_diff)}, {_pairs(c)})"
    return None


def level_text(level: float) -> str:
    """0.01 -> '0.01', 0.05 / 3 -> '0.0167'."""
    return f"{level:.3g}"


def _resolution(c: Comparison) -> str:
    if c.mde is None or c.mde <= 0:
        return "the study's resolution is unknown"
    at = f" (80% power at its family's level {level_text(c.level)})" if c.level is not None else ""
    return f"the study could have detected differences of about {_amount(c, c.mde, signed=False)} or more{at}"


def _disagreement(c: Comparison) -> str:
    """When test and CI disagree, say which way: the verdict needs both."""
    if c.p < ALPHA:
        return f"; {c.p_label} is below {ALPHA} but the 95% CI includes 0"
    if c.ci_low > 0 or c.ci_high < 0:
        return f"; the 95% CI excludes 0 but {c.p_label} is not below {ALPHA}"
    return ""


def conclude(c: Comparison) -> str:
    """One sentence: better, worse or no detectable difference from the baseline, with the numbers."""
    head = f"{c.label} at {c.budget}"
    reason = _untestable_reason(c)
    if reason is not None:
        return f"{head}: {reason}; no conclusion is drawn."
    verdict = direction(c)
    if verdict is None:
        return (
            f"{head}: no detectable difference from {c.baseline} in {c.metric} ({_numbers(c)}{_disagreement(c)}); "
            f"{_resolution(c)}."
        )
    mde = f"; minimum detectable difference about {_amount(c, c.mde, signed=False)}" if c.mde else ""
    return f"{head}: {verdict} than {c.baseline} in {c.metric} ({_numbers(c)}; {_direction_word(c)}{mde})."


NULL_WARNING = 'no null result of this study should be read as "no difference"'


def study_power(control: Comparison) -> tuple[bool, str]:
    """Did the capacity control (a configuration known to be worse) come out worse than the baseline?

    If it did not, the study is underpowered, and its null results say nothing.
    """
    what = (
        f"the capacity control ({control.label}) at {control.budget}, a configuration known to be worse than {control.baseline},"
    )
    verdict = direction(control)
    if verdict == "worse":
        return True, (
            f"The study can separate a known-worse configuration: {what} came out worse in {control.metric} "
            f"({_numbers(control)}). That shows only that an effect of this size is visible; the smallest differences "
            "the comparisons could have detected are given with them."
        )
    reason = _untestable_reason(control)
    if reason is not None:
        return False, f"The study is underpowered: {what} cannot be checked: {reason}; {NULL_WARNING}."
    if verdict == "better":
        return False, (
            f"The study's capacity check failed: {what} came out better in {control.metric} ({_numbers(control)}), "
            f"which it should not; treat the study as underpowered until that is explained: {NULL_WARNING}."
        )
    return False, (
        f"The study is underpowered: {what} did not separate from it in {control.metric} "
        f"({_numbers(control)}{_disagreement(control)}; {_resolution(control)}); {NULL_WARNING}."
    )


def _control(phrase: str, c: Comparison, verb: str) -> str:
    """'its ranks alone with standard LoRA (eva_ranks) give +0.0010 nats (95% CI [...], p = 0.71, 3 seeds)'."""
    reason = _untestable_reason(c)
    if reason is not None:
        return f"{phrase} ({c.label}) cannot be tested: {reason}"
    return f"{phrase} ({c.label}) {verb} {_amount(c, c.mean_diff)} ({_detail(c)})"


def attribution_sentence(
    full: Comparison,
    init_only: Comparison,
    ranks_only: Comparison | None = None,
    *,
    strategy: str | None = None,
    mechanism: str = "initialisation",
) -> str:
    """Where the effect of a strategy that changes more than ranks (EVA: initialisation; AdaLoRA: training
    dynamics, pass mechanism="training dynamics") comes from, from two controls against the same baseline:
    its mechanism alone at uniform ranks (init_only) and its ranks alone with standard LoRA (ranks_only).
    A part is credited only when its control separates from the baseline in the same direction.
    """
    for control in (init_only, ranks_only):
        if control is not None and control.metric != full.metric:
            raise ValueError(f"attribution needs one metric: {full.metric!r} vs {control.metric!r} ({control.label})")
    name = strategy or full.label
    verdict = direction(full)
    mech = _control(f"its {mechanism} alone at uniform ranks", init_only, "gives")
    ranks = _control("its ranks alone with standard LoRA", ranks_only, "give") if ranks_only is not None else None
    controls = f"{mech}, and {ranks}" if ranks else f"{mech}; no ranks-only control was run"
    if verdict is None:
        reason = _untestable_reason(full)
        status = reason if reason is not None else f"no detectable difference from {full.baseline} ({_numbers(full)})"
        return f"{name} at {full.budget} in {full.metric}: {status}, so there is no effect to attribute; controls: {controls}."
    noun = "gain" if verdict == "better" else "shortfall"
    opening = f"{name} at {full.budget} is {verdict} than {full.baseline} in {full.metric} ({_numbers(full)}). "
    from_mechanism = direction(init_only) == verdict
    from_ranks = ranks_only is not None and direction(ranks_only) == verdict
    if from_mechanism and from_ranks:
        return opening + f"Both its {mechanism} and its ranks contribute to {name}'s {noun}: {controls}."
    if from_mechanism and ranks_only is None:
        return opening + f"Its {mechanism} alone gives a {noun} too: {controls}, so what the ranks add is untested."
    if from_mechanism:
        return (
            opening
            + f"{name}'s {noun} is matched by its {mechanism} alone: {mech}, while {ranks}; no part of it is shown to come from its ranks."
        )
    if from_ranks:
        return (
            opening
            + f"{name}'s {noun} is matched by its ranks alone: {ranks}, while {mech}; no part of it is shown to come from its {mechanism}."
        )
    return opening + (
        f"{name}'s {noun} cannot be attributed: no control separates from {full.baseline} in the same direction: {controls}."
    )


def capacity_sentence(c: Comparison, smaller: str, larger: str) -> str:
    """Does capacity bind? c: the baseline at the smaller size minus the baseline at the larger one."""
    head = f"Does capacity bind? {smaller} against {larger}, paired by seed, in {c.metric}"
    reason = _untestable_reason(c)
    if reason is not None:
        return f"{head}: {reason}; so the size of a capacity effect is unknown."
    verdict = direction(c)
    if verdict is None:
        return (
            f"{head}: no detectable difference ({_numbers(c)}{_disagreement(c)}); {_resolution(c)}. Allocation only "
            "moves capacity around, and more capacity did not detectably help here, so this study has no capacity "
            "gap to read allocation effects against; a gap smaller than that could have gone unseen."
        )
    if verdict == "worse":
        return (
            f"{head}: yes, {smaller} is worse ({_numbers(c)}). That gap of {_amount(c, c.mean_diff, signed=False)} "
            "is the scale against which the allocation effects at these budgets are read."
        )
    return (
        f"{head}: {smaller} came out better than {larger} ({_numbers(c)}): more capacity hurt here, so there is "
        "no capacity gap to read allocation effects against."
    )
