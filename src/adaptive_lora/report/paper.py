"""The report as a short paper: an abstract, the question, and the sections a reader of a study expects
(does capacity bind?, attribution, limitations), every sentence generated from the runs and their
statistics, never written by hand.

    abstract_blocks      what was compared, how, and the answer, with its numbers
    question_blocks      the question and what this sweep varies
    capacity_blocks      the capacity checks (capacity.py) as a table and in words
    attribution_blocks   which part of a strategy's effect comes from its initialisation or dynamics
    limitations_blocks   what this study cannot say: one model, these data, this many steps, this hardware
"""

from __future__ import annotations

import pandas as pd

from ..schema import describe
from ..sweep.suite import Suite
from .blocks import DASH, Bullets, Heading, Para, Table, fmt_int, fmt_num, fmt_p
from .capacity import CAPACITY_BIND
from .collect import OWN_BUDGET, Run, done_runs
from .compare import EXACT_MATCH, Metric, primary_metric
from .conclusions import fmt_amount as _fmt_amount
from .findings import attribution_sentences, capacity_sentences, comparison, power_check
from .methods import config_value, cpu_text, env_value, joined
from .stats import finite

QUESTION = (
    "Does giving each layer and each module (attention q/k/v/o, MLP up/gate/down) its own LoRA rank beat "
    "uniform rank at the same number of trainable parameters?"
)


def _rows(stats: pd.DataFrame, metric: Metric, role: str) -> pd.DataFrame:
    if stats is None or stats.empty:
        return pd.DataFrame()
    return stats[(stats["metric"] == metric.column) & (stats["role"] == role)]


def fmt_amount(value, unit: str = "", digits: int = 4, signed: bool = True) -> str:
    """conclusions.fmt_amount, with a dash for a missing number."""
    number = finite(value)
    return DASH if number is None else _fmt_amount(number, unit, digits, signed)


def _unit(metric: Metric) -> str:
    return "nats" if "loss" in metric.column else ""


def _entries(df: pd.DataFrame, suite: Suite | None, roles: tuple[str, ...]) -> list[str]:
    """Labels of the planned entries with these roles (the suite's, else those that ran), in suite order."""
    if suite is not None:
        return list(dict.fromkeys(spec.label for spec in suite.runs if spec.role in roles))
    return list(dict.fromkeys(df.loc[df["role"].isin(roles), "label"]))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _design(df: pd.DataFrame, suite: Suite | None) -> str:
    done = done_runs(df)
    strategies = _entries(df, suite, ("strategy",))
    controls = _entries(df, suite, ("control", "capacity-control"))
    baseline = ", ".join(_entries(df, suite, ("baseline",))) or DASH
    budgets = [b for b in dict.fromkeys(df["budget_label"]) if b != OWN_BUDGET]
    seeds = (
        sorted({spec.seed for spec in suite.runs}) if suite is not None else sorted(int(s) for s in df["seed"].dropna().unique())
    )
    finished = {int(seed) for seed in done["seed"].dropna()}
    steps = done["steps"].dropna()
    rates = suite.learning_rates if suite is not None else sorted(df["learning_rate"].dropna().unique())
    parts = [
        f"{_count(len(strategies), 'allocation')} ({'; '.join(strategies)}) against {baseline}",
        f"at the budgets {', '.join(budgets)}" if budgets else "each at its own ranks",
        f"with {_count(len(controls), 'control')} ({'; '.join(controls)})" if controls else "",
        f"on {joined(df['model'], describe)} fine-tuned on {joined(df['data_source'])}",
        f"{fmt_int(steps.median())} optimizer steps per run" if len(steps) else "",
        f"{len(seeds)} seeds" + (f" planned ({len(finished)} with finished runs so far)" if len(finished) < len(seeds) else ""),
        (
            f"the learning rate chosen per allocation and budget from {len(rates)} rates on validation loss"
            if len(rates) > 1
            else ""
        ),
    ]
    return ", ".join(p for p in parts if p)


TESTED = ("better", "worse", "no detectable difference")


def _paired_how(rows: pd.DataFrame) -> str:
    if (rows["budget_label"] != OWN_BUDGET).all():
        return "at equal budget"
    if (rows["budget_label"] == OWN_BUDGET).all():
        return "of the closest size (each allocation at its own ranks)"
    return "at equal budget or, at their own ranks, of the closest size"


def _answer(stats: pd.DataFrame, metric: Metric, separated: bool | None, not_compared: int = 0) -> str:
    """not_compared: planned allocation groups with no comparison at all yet (no chosen rate, no finished run)."""
    rows = _rows(stats, metric, "strategy")
    if rows.empty:
        return "No allocation was compared with the baseline: there is no answer yet."
    counts = rows["verdict"].value_counts()
    better = rows[rows["verdict"] == "better"]
    unit = _unit(metric)
    mdes = [m for m in (finite(v) for v in rows["mde"]) if m is not None and m > 0]
    tally = (
        f"In {metric.name}, of {_count(len(rows), 'comparison')} with the baseline {_paired_how(rows)}, "
        f"{counts.get('better', 0)} came out "
        f"better, {counts.get('worse', 0)} worse and {counts.get('no detectable difference', 0)} showed no detectable difference"
    )
    untested = len(rows) - sum(counts.get(v, 0) for v in TESTED)
    tally += f" ({untested} could not be tested)" if untested else ""
    tally += f"; {not_compared} more planned comparisons have not run yet." if not_compared else "."
    if untested == len(rows):
        return tally + " There is no answer yet."
    if separated is False:
        return tally + " The capacity control did not separate, so the study is underpowered and its null results answer nothing."
    if len(better):
        named = "; ".join(
            f"{row['label']} at {row['budget_label']} ({fmt_amount(row['mean_diff'], unit, metric.digits)}, "
            f"95% CI [{fmt_amount(row['ci_low'], '', metric.digits)}, {fmt_amount(row['ci_high'], '', metric.digits)}])"
            for _, row in better.iterrows()
        )
        return tally + f" The answer here is yes for {named}."
    low, high = (fmt_amount(f(mdes), unit, metric.digits, signed=False) for f in (min, max)) if mdes else ("", "")
    span = f"{low} (the minimum detectable effect)" if low == high else f"{low} to {high} (the minimum detectable effects)"
    resolution = f" at a resolution of about {span}" if mdes else ""
    if separated is None:
        return tally + " No capacity control was tested, so these null results are not evidence of no difference."
    so_far = " so far" if untested or not_compared else ""
    return tally + f" The answer{so_far} is no: non-uniform allocation did not detectably beat uniform rank{resolution}."


def _not_compared(stats: pd.DataFrame, metric: Metric, suite: Suite | None) -> int:
    """Planned allocation groups (label, budget) that have no comparison in `stats` yet."""
    if suite is None:
        return 0
    planned = {spec.group for spec in suite.runs if spec.role == "strategy"}
    rows = _rows(stats, metric, "strategy")
    compared = set(zip(rows["label"], rows["budget_label"])) if len(rows) else set()
    return len(planned - compared)


def control_sentences(stats: pd.DataFrame, metric: Metric, separated: bool | None) -> list[str]:
    """The capacity control against the baseline at each budget, for the abstract: one sentence per control
    and outcome, naming every budget it holds for."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    for _, row in _rows(stats, metric, "capacity-control").iterrows():
        own = row["baseline_budget"] == OWN_BUDGET
        against = row["baseline_label"] if own else f"the baseline at {row['baseline_budget']}"
        if separated is None:
            groups.setdefault((row["label"], None), []).append(against)
            continue
        word = "separated from" if row["verdict"] == "worse" else "did not separate from"  # verdicts know the metric's direction
        amount = fmt_amount(row["mean_diff"], _unit(metric), metric.digits)
        groups.setdefault((row["label"], word), []).append(
            f"{against} ({amount} in {metric.name}, Holm p {fmt_p(row['t_p_holm'])})"
        )
    sentences = []
    for (label, word), parts in groups.items():
        parts = parts[:1] + [part.removeprefix("the baseline ") for part in parts[1:]]  # "... at r2 and at r8"
        against = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        if word is None:
            sentences.append(f"Its capacity control ({label}) has too few finished seeds for a test against {against} yet.")
        else:
            sentences.append(f"Its capacity control ({label}) {word} {against}.")
    return sentences


def abstract_blocks(df: pd.DataFrame, stats: pd.DataFrame, suite: Suite | None) -> list:
    if df.empty:
        return []
    metric = primary_metric(df)
    separated, _ = power_check(stats, metric)
    sentences = [f"{QUESTION} This sweep compared {_design(df, suite)}."]
    sentences += control_sentences(stats, metric, separated)
    bind = _rows(stats, metric, CAPACITY_BIND)
    for _, row in bind.iterrows():
        pair = f"{row['label']} at {row['budget_label']} against {row['baseline_label']} at {row['baseline_budget']}"
        amount = fmt_amount(row["mean_diff"], _unit(metric), metric.digits)
        if row["verdict"] not in TESTED:
            sentences.append(f"Whether capacity binds is not tested yet ({pair}: {amount}, {row['verdict']}).")
            continue
        # verdicts know the metric's direction: "worse" is the smaller size doing worse, whatever the metric
        what = {"worse": "binds", "better": "runs the wrong way (the smaller size did better)"}.get(
            row["verdict"], "does not detectably bind"
        )
        sentences.append(f"Capacity {what}: {pair} differs by {amount} in {metric.name}, Holm p {fmt_p(row['t_p_holm'])}.")
    sentences.append(_answer(stats, metric, separated, _not_compared(stats, metric, suite)))
    if EXACT_MATCH.column in (set(stats["metric"]) if len(stats) else set()) and metric is not EXACT_MATCH:
        em = _rows(stats, EXACT_MATCH, "strategy")
        if len(em):
            counts = em["verdict"].value_counts()
            untested = len(em) - sum(counts.get(v, 0) for v in TESTED)
            sentences.append(
                f"In test exact match: {counts.get('better', 0)} better, {counts.get('worse', 0)} worse, "
                f"{counts.get('no detectable difference', 0)} no detectable difference"
                + (f" ({untested} could not be tested)." if untested else ".")
            )
    return [Heading(2, "Abstract"), Para(" ".join(sentences), "conclusion")]


def question_blocks(df: pd.DataFrame) -> list:
    if df.empty:
        return []
    budgets = [b for b in dict.fromkeys(df["budget_label"]) if b != OWN_BUDGET]
    how = (
        "Every allocation is rescaled to the same trainable-parameter budget as the baseline it is paired with"
        if budgets
        else "Each configuration keeps its own ranks and is paired with the baseline of the closest parameter count"
    )
    rates = (
        "The learning rate is chosen on the validation split"
        if df["learning_rate"].nunique() > 1
        else "All runs share one learning rate"
    )
    test = (
        "the test split only reports"
        if df.get("test_n_rows", pd.Series(dtype=float)).fillna(0).gt(0).any()
        else "there is no test split"
    )
    return [
        Heading(2, "The question"),
        Para(
            f"{QUESTION} {how}; each pair shares its seed (initialisation and data order), its data splits and its "
            f"training settings, so a paired difference measures the allocation. {rates}; {test}. A capacity control "
            "(far fewer parameters) must come out worse, or the study cannot show that it could have seen a difference."
        ),
    ]


def capacity_blocks(stats: pd.DataFrame, metric: Metric, suite: Suite | None = None) -> list:
    rows = _rows(stats, metric, CAPACITY_BIND)
    blocks = [Heading(2, "Does capacity bind?")]
    if rows.empty:
        sizes = sorted({spec.budget.label for spec in suite.runs if spec.role == "baseline"}) if suite else []
        blocks.append(
            Para(
                f"Not tested yet: the suite plans the baseline at {len(sizes)} sizes ({', '.join(sizes)}), but fewer than two of "
                "them have finished runs at a chosen learning rate."
                if len(sizes) > 1
                else "Not asked: this sweep has one baseline size, so there is no smaller capacity to compare with.",
                "note",
            )
        )
        return blocks
    table = [
        [
            f"{row['label']} at {row['budget_label']}",
            f"{row['baseline_label']} at {row['baseline_budget']}",
            fmt_num(row["mean_diff"], metric.digits),
            f"[{fmt_num(row['ci_low'], metric.digits)}, {fmt_num(row['ci_high'], metric.digits)}]",
            fmt_p(row["t_p_holm"]),
            f"{fmt_int(row['n_pairs'])}",
            str(row["verdict"]),
        ]
        for _, row in rows.iterrows()
    ]
    blocks.append(
        Table(["smaller", "larger", f"difference ({metric.name})", "95% CI", "Holm p", "seeds", "verdict"], table, {2, 4, 5})
    )
    blocks += [Para(sentence, "conclusion") for sentence in capacity_sentences(stats, metric)]
    return blocks


def attribution_blocks(stats: pd.DataFrame, metric: Metric, suite: Suite | None) -> list:
    sentences = attribution_sentences(stats, metric, suite)
    controls = _rows(stats, metric, "control")
    blocks = [Heading(2, "Attribution")]
    planned = [e for e in (suite.data.get("strategies") or []) if isinstance(e, dict) and e.get("isolates")] if suite else []
    if not sentences and controls.empty:
        why = (
            f"Its {len(planned)} attribution controls have no finished pairs with the baseline yet."
            if planned
            else "This sweep has no attribution controls (role: control with isolates)."
        )
        return blocks + [Para(why, "note")]
    blocks += [Para(sentence, "conclusion") for sentence in sentences]
    for _, row in controls.iterrows():
        c = comparison(row, metric)
        blocks.append(
            Para(
                f"Control {c.label} at {c.budget}: {row['verdict']} against {c.baseline} "
                f"({fmt_amount(c.mean_diff, c.unit, c.digits)}, Holm p {fmt_p(c.p)}).",
                "note",
            )
        )
    return blocks


def limitations_blocks(df: pd.DataFrame, runs: list[Run], suite: Suite | None) -> list:
    """What the study cannot say, from what it actually ran."""
    if df.empty:
        return []
    done = done_runs(df)
    steps = done["steps"].dropna()
    tokens = done["tokens_seen"].dropna()
    finished = len(done["seed"].dropna().unique())  # seeds whose runs all failed have not finished
    planned = len({spec.seed for spec in suite.runs}) if suite is not None else finished
    seeds = f"{planned} seeds" + (f" ({finished} with finished runs so far)" if finished < planned else "")
    precision = joined(config_value(r, "model", "precision") for r in runs)
    devices = f"{joined(env_value(r, 'device_name') for r in runs)} ({cpu_text(runs)})"
    items = [
        f"One model: {joined(df['model'], describe)} ({joined(df['total_params'], fmt_int)} parameters). Larger models have more "
        "layers and wider modules, where the best shape may differ; `recommend --model` transfers a shape, it does not test it.",
        f"One data set: {joined(df['data_source'])}, with {joined((r.result.get('data') or {}).get('n_train') for r in runs)} "
        "training rows. Another task or more data may need capacity elsewhere.",
        f"Short training: {fmt_int(steps.median()) if len(steps) else DASH} optimizer steps "
        f"({fmt_int(tokens.median()) if len(tokens) else DASH} tokens) per run. Allocation may matter more when training "
        "is long enough for capacity to bind harder.",
        f"{seeds}: the seed-level tests resolve only differences of the size the minimum detectable effects state; "
        "a smaller true effect may exist.",
        f"Hardware and precision: {devices}, {precision}. Results are deterministic given the configuration on one machine; "
        "another CPU or a GPU rounds differently and gives slightly different numbers.",
    ]
    if df["learning_rate"].nunique() > 1 and suite is not None and suite.staged:
        items.append(
            f"The learning rate was chosen on seed(s) {', '.join(map(str, suite.selection_seeds))} only, from "
            f"{df['learning_rate'].nunique()} rates: a rate between or beyond them could change a comparison."
            + _grid_edges(df, suite.learning_rates)
        )
    return [Heading(2, "Limitations"), Bullets(items)]


def _grid_edges(df: pd.DataFrame, grid: list[float]) -> str:
    """The groups whose chosen rate is the grid's highest or lowest: their best rate may lie outside it."""
    rates = sorted(grid)
    chosen = df[df["at_chosen_rate"].astype(bool)].groupby(["label", "budget_label"], sort=False)["learning_rate"].first()
    text = ""
    for edge, rate, beyond in (("highest", rates[-1], "higher"), ("lowest", rates[0], "lower")):
        groups = [f"{label} at {budget}" for (label, budget), r in chosen.items() if r == rate]
        if groups:
            text += (
                f" {_count(len(groups), 'group')} chose the grid's {edge} rate ({rate:g}), so a {beyond} rate might have "
                f"served {'it' if len(groups) == 1 else 'them'} better: {', '.join(groups)}."
            )
    return text
