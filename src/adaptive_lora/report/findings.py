"""The top of the report: whether the study could see a difference at all, and what it found.

1. Power: the capacity control (a configuration known to be worse) must come out worse than the
   baseline (paired, Holm p < 0.05, CI excluding 0). If it does not, the report opens with an
   UNDERPOWERED flag, and no null result of the study should be read as "no difference". If it
   does, that shows only that an effect of its size is visible.
2. Does capacity bind? The baseline at a smaller budget against a larger one (capacity.py): if more
   capacity does not help detectably, allocation can hardly matter; if it does, its gap is the scale.
3. What the study could see: per family (metric x budget), its size m, the level ALPHA / m a
   comparison must reach, and the minimum detectable differences there, set against the capacity gap.
4. Conclusion: one sentence per strategy and budget on the primary metric (test loss, else
   validation loss), and on exact match where the data is verifiable, each with its effect, 95%
   CI, p, "k of n seeds" and minimum detectable effect (report.conclusions writes the words); groups
   without a chosen learning rate are named with the reason.
5. Attribution: for a strategy whose suite carries controls (EVA: initialisation; AdaLoRA:
   training dynamics), which part the effect comes from.
"""

from __future__ import annotations

import pandas as pd

from ..sweep.suite import Suite
from .blocks import Heading, Para
from .capacity import CAPACITY_BIND
from .collect import OWN_BUDGET
from .compare import EXACT_MATCH, Metric, primary_metric
from .conclusions import Comparison, attribution_sentence, capacity_sentence, conclude, fmt_amount, level_text, study_power
from .stats import ALPHA, finite

MECHANISM = {"initialisation": "initialisation", "dynamics": "training dynamics"}
ALLOCATION_ROLES = ("strategy", "control")  # the comparisons the question is about


def comparison(row: pd.Series | dict, metric: Metric) -> Comparison:
    unit = "nats" if "loss" in metric.column else ""
    return Comparison.from_row(row, unit=unit, digits=metric.digits)


def _of(stats: pd.DataFrame, metric: Metric, *roles: str) -> pd.DataFrame:
    return stats[(stats["metric"] == metric.column) & stats["role"].isin(roles)] if len(stats) else stats


def power_check(stats: pd.DataFrame, metric: Metric) -> tuple[bool | None, list[str]]:
    """(True: the control separated at every budget, False: it did not somewhere, None: not tested, because
    there is no control or it has fewer than 2 seeds paired with the baseline), sentences."""
    controls = [comparison(row, metric) for _, row in _of(stats, metric, "capacity-control").iterrows()]
    if not controls or any(c.n_pairs < 2 or c.mean_diff is None for c in controls):
        return None, []  # a study in progress is not underpowered, it is not tested yet
    results = [study_power(c) for c in controls]
    return all(ok for ok, _ in results), [sentence for _, sentence in results]


def _name(label: str, budget: str) -> str:
    return label if budget == OWN_BUDGET else f"{label} at {budget}"


def capacity_sentences(stats: pd.DataFrame, metric: Metric) -> list[str]:
    return [
        capacity_sentence(
            comparison(row, metric),
            _name(row["label"], row["budget_label"]),
            _name(row["baseline_label"], row["baseline_budget"]),
        )
        for _, row in _of(stats, metric, CAPACITY_BIND).iterrows()
    ]


def capacity_gaps(stats: pd.DataFrame, metric: Metric) -> dict[str, tuple[float, str]]:
    """budget -> (the gap, what it is) for the budgets of every capacity check where capacity binds
    (the smaller size came out worse); a budget in two checks takes the one where it is the larger."""
    gaps: dict[str, tuple[float, str]] = {}
    for _, row in _of(stats, metric, CAPACITY_BIND).iterrows():
        if row["verdict"] != "worse":
            continue
        gap = abs(float(row["mean_diff"]))
        what = f"{_name(row['label'], row['budget_label'])} against {_name(row['baseline_label'], row['baseline_budget'])}"
        gaps[row["baseline_budget"]] = (gap, what)
        gaps.setdefault(row["budget_label"], (gap, what))
    return gaps


def resolution_sentences(stats: pd.DataFrame, metric: Metric) -> list[str]:
    """Per budget: the family's size and level, and the minimum detectable differences of the comparisons
    the question is about, set against the capacity gap there when capacity binds."""
    rows = _of(stats, metric, *ALLOCATION_ROLES, "capacity-control")
    gaps = capacity_gaps(stats, metric)
    unit = "nats" if "loss" in metric.column else ""
    sentences = []
    for budget in dict.fromkeys(rows["budget_label"]) if len(rows) else []:
        family = rows[rows["budget_label"] == budget]
        size = int(finite(family["family_size"].iloc[0]) or 0)
        allocation = family[family["role"].isin(ALLOCATION_ROLES)]
        mdes = sorted((float(m), label) for label, m in zip(allocation["label"], allocation["mde"]) if (finite(m) or 0) > 0)
        if size == 0 or not mdes:
            continue
        level = ALPHA / size
        if size == 1:
            how = f"one comparison has a test, so it is judged at p < {ALPHA}"
        else:
            how = (
                f"{size} comparisons form one family; a verdict needs Holm p < {ALPHA}, which a comparison is sure of "
                f"once its own p is below {ALPHA}/{size} = {level_text(level)}"
            )
        low, high = mdes[0], mdes[-1]
        amount = lambda value: fmt_amount(value, unit, metric.digits, signed=False)  # noqa: E731
        if len(mdes) == 1:
            span = f"about {amount(low[0])} ({low[1]})"
        elif amount(low[0]) == amount(high[0]):
            span = f"about {amount(low[0])} for each of the {len(mdes)} comparisons"
        else:
            span = f"about {amount(low[0])} ({low[1]}) to {amount(high[0])} ({high[1]})"
        sentence = (
            f"What the study could see at {budget} in {metric.name}: {how}. At that level, with 80% power, the smallest "
            f"detectable differences are {span}"
        )
        if budget in gaps:
            gap, what = gaps[budget]
            shares = dict.fromkeys(f"{100 * value / gap:.0f}%" for value, _ in (low, high))
            share = " to ".join(shares)
            sentence += f", {share} of the capacity gap of {amount(gap)} ({what})"
        sentences.append(sentence + ".")
    return sentences


def conclusion_sentences(stats: pd.DataFrame, metrics: list[Metric]) -> list[str]:
    sentences = []
    for metric in metrics:
        sentences += [conclude(comparison(row, metric)) for _, row in _of(stats, metric, "strategy").iterrows()]
    return sentences


def _entries(suite: Suite | None) -> list[dict]:
    return [e for e in (suite.data.get("strategies") or [] if suite else []) if isinstance(e, dict)]


def attribution_sentences(stats: pd.DataFrame, metric: Metric, suite: Suite | None) -> list[str]:
    """For each strategy with controls in the suite: which part of its effect survives in which control."""
    if suite is None or stats.empty:
        return []
    entries = _entries(suite)
    by_label = {str(e.get("label")): e for e in entries if e.get("label")}
    rows = stats[stats["metric"] == metric.column]
    sentences = []
    for _, full in rows[rows["role"] == "strategy"].iterrows():
        strategy = full["strategy"]
        controls = [e for e in entries if e.get("strategy") == strategy and e.get("role") == "control" and e.get("isolates")]
        if not controls:
            continue
        at = rows[rows["budget_label"] == full["budget_label"]]
        mechanism_only = _control(at, controls, ("initialisation", "dynamics"), metric)
        if mechanism_only is None:
            continue
        kind = by_label.get(str(mechanism_only.label), {}).get("isolates", "initialisation")
        sentences.append(
            attribution_sentence(
                comparison(full, metric),
                mechanism_only,
                _control(at, controls, ("allocation",), metric),
                strategy=full["label"],
                mechanism=MECHANISM.get(kind, kind),
            )
        )
    return sentences


def _control(at: pd.DataFrame, controls: list[dict], kinds: tuple[str, ...], metric: Metric) -> Comparison | None:
    labels = [str(e["label"]) for e in controls if e["isolates"] in kinds]
    found = at[at["label"].isin(labels)]
    return comparison(found.iloc[0], metric) if len(found) else None


def unchosen_sentences(unchosen: list[dict]) -> list[str]:
    """One sentence per reason: a study in progress has many groups waiting for the same thing."""
    by_reason: dict[str, list[str]] = {}
    for group in unchosen:
        by_reason.setdefault(group["reason"], []).append(f"{group['label']} at {group['budget_label']}")
    return [
        f"{names[0]}: no chosen learning rate ({reason}); it is in no comparison."
        if len(names) == 1
        else f"{len(names)} groups have no chosen learning rate ({reason}), so they are in no comparison: {', '.join(names)}."
        for reason, names in by_reason.items()
    ]


def findings_blocks(df: pd.DataFrame, stats: pd.DataFrame, suite: Suite | None, unchosen: list[dict] = ()) -> list:
    """unchosen: groups without a chosen learning rate (plan.groups_without_rate), named with the reason."""
    if df.empty:
        return []
    metric = primary_metric(df)
    measured = set(stats["metric"]) if len(stats) else set()
    metrics = [metric] + ([EXACT_MATCH] if EXACT_MATCH.column in measured else [])
    separated, power = power_check(stats, metric)
    blocks = []
    if separated is False:
        blocks.append(Para("UNDERPOWERED. " + " ".join(power), "alarm"))
    blocks.append(Heading(2, "Conclusion"))
    if separated is None:
        planned = [str(e.get("label")) for e in _entries(suite) if e.get("role") == "capacity-control"]
        blocks.append(
            Para(
                f"The capacity control ({', '.join(planned)}) has too few finished seeds for a test, so this study's power to detect a difference is untested."
                if planned
                else "This sweep has no capacity control (role: capacity-control), so its power to detect a difference is untested.",
                "warning",
            )
        )
    elif separated:
        blocks += [Para(sentence, "conclusion") for sentence in power]
    blocks += [Para(sentence, "conclusion") for sentence in capacity_sentences(stats, metric)]
    blocks += [Para(sentence, "conclusion") for m in metrics for sentence in resolution_sentences(stats, m)]
    sentences = conclusion_sentences(stats, metrics)
    sentences += unchosen_sentences(unchosen)
    if not sentences:
        blocks.append(Para("No strategy was compared with the baseline (no finished pairs).", "note"))
    blocks += [Para(sentence, "conclusion") for sentence in sentences]
    blocks += [Para(sentence, "conclusion") for sentence in attribution_sentences(stats, metric, suite)]
    blocks.append(
        Para(
            f"Primary metric: {metric.name}. Every sentence is generated from the paired statistics below (seed-level; "
            "one family per metric and budget, Holm-corrected within it): better or worse only when the Holm-corrected "
            "p < 0.05 and the 95% CI excludes 0; otherwise the sentence gives the smallest difference the study could "
            "have detected at its family's level (Methods, Statistics).",
            "note",
        )
    )
    return blocks
