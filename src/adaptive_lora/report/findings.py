"""The top of the report: whether the study could see a difference at all, and what it found.

1. Power: the capacity control (a configuration known to be worse) must come out worse than the
   baseline (paired, Holm p < 0.05, CI excluding 0). If it does not, the report opens with an
   UNDERPOWERED flag, and no null result of the study should be read as "no difference".
2. Conclusion: one sentence per strategy and budget on the primary metric (test loss, else
   validation loss), and on exact match where the data is verifiable, each with its effect, 95%
   CI, p and minimum detectable effect (report.conclusions writes the words).
3. Attribution: for a strategy whose suite carries controls (EVA: initialisation; AdaLoRA:
   training dynamics), which part the effect comes from.
"""

from __future__ import annotations

import pandas as pd

from ..sweep.suite import Suite
from .blocks import Heading, Para
from .compare import EXACT_MATCH, Metric, primary_metric
from .conclusions import Comparison, attribution_sentence, conclude, study_power

MECHANISM = {"initialisation": "initialisation", "dynamics": "training dynamics"}


def comparison(row: pd.Series | dict, metric: Metric) -> Comparison:
    unit = "nats" if "loss" in metric.column else ""
    return Comparison.from_row(row, unit=unit, digits=metric.digits)


def power_check(stats: pd.DataFrame, metric: Metric) -> tuple[bool | None, list[str]]:
    """(True: the control separated at every budget, False: it did not somewhere, None: no control), sentences."""
    rows = stats[(stats["metric"] == metric.column) & (stats["role"] == "capacity-control")] if len(stats) else stats
    if rows.empty:
        return None, []
    results = [study_power(comparison(row, metric)) for _, row in rows.iterrows()]
    return all(ok for ok, _ in results), [sentence for _, sentence in results]


def conclusion_sentences(stats: pd.DataFrame, metrics: list[Metric]) -> list[str]:
    sentences = []
    for metric in metrics:
        rows = stats[(stats["metric"] == metric.column) & (stats["role"] == "strategy")]
        sentences += [conclude(comparison(row, metric)) for _, row in rows.iterrows()]
    return sentences


def attribution_sentences(stats: pd.DataFrame, metric: Metric, suite: Suite | None) -> list[str]:
    """For each strategy with controls in the suite: which part of its effect survives in which control."""
    if suite is None or stats.empty:
        return []
    entries = [e for e in suite.data.get("strategies") or [] if isinstance(e, dict)]
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


def findings_blocks(df: pd.DataFrame, stats: pd.DataFrame, suite: Suite | None) -> list:
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
        blocks.append(
            Para(
                "This sweep has no capacity control (role: capacity-control), so its power to detect a difference is untested.",
                "warning",
            )
        )
    elif separated:
        blocks += [Para(sentence, "conclusion") for sentence in power]
    sentences = conclusion_sentences(stats, metrics)
    if not sentences:
        blocks.append(Para("No strategy was compared with the baseline (no finished pairs).", "note"))
    blocks += [Para(sentence, "conclusion") for sentence in sentences]
    blocks += [Para(sentence, "conclusion") for sentence in attribution_sentences(stats, metric, suite)]
    blocks.append(
        Para(
            f"Primary metric: {metric.name}. Every sentence is generated from the paired statistics below "
            "(seed-level, Holm-corrected within a budget): better or worse only when p < 0.05 and the 95% CI "
            "excludes 0; otherwise the sentence gives the smallest difference the study could have detected.",
            "note",
        )
    )
    return blocks
