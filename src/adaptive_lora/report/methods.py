"""The report's Methods: enough to reproduce the study (model, data and splits, steps, tokens, seeds,
learning-rate selection, precision, hardware, wall time), read from the runs themselves."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..sweep.suite import Suite
from .blocks import DASH, Bullets, Heading, Para, fmt_int, fmt_num
from .collect import Run, done_runs
from .conclusions import level_text
from .stats import ALPHA

HYPERPARAMETERS = (
    ("training", "num_epochs"),
    ("training", "max_steps"),
    ("training", "micro_batch_size"),
    ("training", "gradient_accumulation_steps"),
    ("training", "sequence_len"),
    ("training", "warmup_ratio"),
    ("training", "lr_scheduler"),
    ("training", "max_grad_norm"),
    ("allocation", "lora_alpha"),
    ("allocation", "alpha_policy"),
    ("allocation", "lora_dropout"),
    ("allocation", "target_modules"),
    ("data", "prompt_format"),
    ("eval", "max_new_tokens"),
)


def unique(values) -> list:
    seen = []
    for value in values:
        if value is None or (isinstance(value, float) and pd.isna(value)) or value in seen:
            continue
        seen.append(value)
    return seen


def joined(values, fmt=str) -> str:
    found = unique(values)
    return ", ".join(fmt(v) for v in found) if found else DASH


def config_value(run: Run, section: str, key: str) -> Any:
    config = run.result.get("config")
    part = config.get(section) if isinstance(config, dict) else None
    value = part.get(key) if isinstance(part, dict) else None
    if value is None and key == "target_modules":
        return "all linear modules of the blocks"
    return ",".join(map(str, value)) if isinstance(value, list) else value


def env_value(run: Run, key: str) -> Any:
    env = run.result.get("environment")
    return env.get(key) if isinstance(env, dict) else None


def cpu_text(runs: list[Run]) -> str:
    """The CPU capability torch used and whether it had bf16 units, as the runs recorded them."""
    seen = joined(
        f"{env_value(r, 'cpu_capability')}, bf16 units {'yes' if env_value(r, 'cpu_bf16') else 'no'}"
        for r in runs
        if env_value(r, "cpu_capability")
    )
    return seen if seen != DASH else "not recorded"


def _hashes(value: Any) -> str:
    """{'train': '025b90b1...', ...} -> 'train 025b90b1c4a8, ...' (12 hex digits tell splits apart; each run's result.json has them in full)."""
    if isinstance(value, dict):
        return ", ".join(f"{split} {str(digest)[:12]}" for split, digest in value.items())
    return str(value)[:12] if value else DASH


def _data(run: Run, key: str) -> Any:
    data = run.result.get("data")
    return data.get(key) if isinstance(data, dict) else None


def _rate_selection(suite: Suite | None, df: pd.DataFrame) -> str:
    if suite is None or len(suite.learning_rates) < 2:
        return f"one learning rate for every strategy ({joined(df['learning_rate'], lambda v: f'{v:g}')}); no selection"
    seeds = ", ".join(map(str, suite.selection_seeds))
    how = (
        f"every rate trained on seed(s) {seeds}, then the other seeds at the chosen rate"
        if suite.staged
        else "every rate trained on every seed"
    )
    rates = ", ".join(f"{r:g}" for r in suite.learning_rates)
    return (
        f"grid {rates}, chosen per strategy and budget by the lowest mean validation loss ({how}); "
        "test metrics are reported at the chosen rate only, and the test split never enters the choice"
    )


def _families(stats: pd.DataFrame | None, unit: str) -> str:
    """'test loss, validation loss at r8: m = 5, level 0.01; ...': every family, its size and level."""
    if stats is None or stats.empty:
        return "none"
    where = stats["budget_label"].astype(str).map(lambda budget: f"at {budget}")
    if "role" in stats:
        where = where.where(stats["role"] != "capacity-bind", "in the capacity checks")
    by_size: dict[tuple[str, int], list[str]] = {}
    for (place, name), family in stats.assign(place=where).groupby(["place", "metric_name"], sort=False):
        size = int(family["family_size"].iloc[0])
        by_size.setdefault((place, size), []).append(name)
    parts = [
        f"{', '.join(names)} {place}: m = {size}" + (f", level {level_text(ALPHA / size)}" if size else " (no test)")
        for (place, size), names in by_size.items()
    ]
    return f"{'; '.join(parts)} ({unit})"


def statistics_text(stats: pd.DataFrame | None, row_stats: pd.DataFrame | None) -> str:
    text = (
        "Statistics: each group is paired with the baseline at the same budget and seed; mean difference with a 95% t "
        "confidence interval, paired t-test, and Wilcoxon signed-rank (reported beside, never used for a verdict). A "
        "family is one metric at one budget (and the capacity checks of one metric); Holm corrects across its m "
        f"comparisons, and better or worse needs the Holm-corrected p < {ALPHA} and the 95% CI excluding 0. Holm "
        f"compares the smallest p with {ALPHA}/m, so a comparison is sure of its verdict once its own p is below "
        f"{ALPHA}/m, whatever the others show: that is the level of its minimum detectable effect (MDE), the smallest "
        "true difference a paired t-test with these pairs and the observed spread detects with 80% power. Families: "
        + _families(stats, "pairs: seeds")
    )
    if row_stats is not None and not row_stats.empty:
        text += (
            ". Per test row the row is the unit: each row's paired difference is averaged over seeds, then exact match "
            "is tested by an exact sign-flip permutation test of the rows' totals and ROUGE-L by a t-test over rows, "
            "with a t CI and the MDE over rows (exact match: the sign-flip test's), Holm within each family: "
            + _families(row_stats, "pairs: test rows")
        )
    return text + "."


def methods_blocks(
    runs: list[Run],
    df: pd.DataFrame,
    suite: Suite | None,
    stats: pd.DataFrame | None = None,
    row_stats: pd.DataFrame | None = None,
) -> list:
    if not runs:
        return [Heading(2, "Methods"), Para("No valid runs.", "note")]
    done = done_runs(df) if len(df) else df
    splits = unique(
        f"{_data(r, 'n_train')} train / {_data(r, 'n_eval')} validation / {_data(r, 'n_test') or 0} test" for r in runs
    )
    hashes = unique(_hashes(_data(r, "split_hashes") or _data(r, "hash")) for r in runs)
    steps, tokens = done["steps"].dropna(), done["tokens_seen"].dropna()
    wall = df["wall_time_s"].dropna()
    seeds = sorted(int(s) for s in df["seed"].dropna().unique())
    blocks = [
        Heading(2, "Methods"),
        Bullets(
            [
                f"Model: {joined(df['model'])}; {joined(df['total_params'], fmt_int)} base parameters, frozen; LoRA adapters only.",
                f"Data: {joined(df['data_source'])}, split {'; '.join(splits)} rows (validation chooses, test reports); "
                f"split hashes {'; '.join(hashes)}.",
                f"Training: {fmt_int(steps.median()) if len(steps) else DASH} optimizer steps per run (median), "
                f"{fmt_int(tokens.median()) if len(tokens) else DASH} tokens seen per run; "
                + "; ".join(f"{key} {joined(config_value(r, s, key) for r in runs)}" for s, key in HYPERPARAMETERS)
                + ".",
                f"Seeds: {', '.join(map(str, seeds))} ({len(seeds)}); each seed changes adapter initialisation and data order, "
                "never the splits.",
                f"Learning rate: {_rate_selection(suite, df)}.",
                f"Budgets: {joined(df['budget_label'])}; trainable parameters per group in the results table.",
                f"Precision: {joined(config_value(r, 'model', 'precision') for r in runs)} (auto is pinned per machine: bf16 on "
                f"GPUs and on CPUs with AMX or AVX512-BF16 units, fp32 on other CPUs); CPU: {cpu_text(runs)}; "
                f"hardware: {joined(env_value(r, 'device_name') for r in runs)} ({joined(env_value(r, 'device') for r in runs)}, "
                f"{joined(env_value(r, 'threads') for r in runs)} threads); torch {joined(env_value(r, 'torch') for r in runs)}, "
                f"transformers {joined(env_value(r, 'transformers') for r in runs)}, peft {joined(env_value(r, 'peft') for r in runs)}; "
                f"adaptive-lora {joined(env_value(r, 'git_sha') for r in runs)}.",
                f"Run time: {fmt_num(wall.sum() / 60, 1)} minutes summed over {len(wall)} runs ({fmt_num(wall.mean(), 1)} s per "
                "run, evaluation included; runs in parallel workers overlap, so the sweep took less time than the sum)."
                if len(wall)
                else "Run time: not recorded.",
                statistics_text(stats, row_stats),
            ]
        ),
    ]
    for column, what in (("data_hash", "data hashes"), ("model", "models")):
        n = len(unique(df[column]))
        if n > 1:
            blocks.append(
                Para(
                    f"Runs used {n} different {what}: results measured on different {what} are not comparable, "
                    "and neither are the paired statistics across them.",
                    "warning",
                )
            )
    blocks += [Para(sentence, "warning") for sentence in unequal_budgets(df)]
    blocks += [Para(sentence, "note") for sentence in mixed_environments(runs, df)]
    return blocks


def _environment(run: Run) -> str:
    libraries = ", ".join(f"{name} {env_value(run, name)}" for name in ("torch", "transformers", "peft"))
    return f"{libraries}, CPU {env_value(run, 'cpu_capability') or 'not recorded'}"


def mixed_environments(runs: list[Run], df: pd.DataFrame) -> list[str]:
    """A study that grows over several machines mixes library versions and CPUs within its pairs: say so, with
    how far that alone moved a loss (the untrained model's validation loss is the same computation in every run)."""
    environments = unique(_environment(r) for r in runs)
    if len(environments) < 2:
        return []
    base = df["base_eval_loss"].dropna() if "base_eval_loss" in df else pd.Series(dtype=float)
    spread = (
        f" The untrained model's validation loss, the same computation in every run, differed between them by at most "
        f"{base.max() - base.min():.2g} nats: how far the environments alone move a loss, to set beside the minimum "
        "detectable effects."
        if len(base)
        else ""
    )
    return [f"Runs were trained in {len(environments)} environments ({'; '.join(environments)}), so pairs may mix them.{spread}"]


def unequal_budgets(df: pd.DataFrame, tolerance: float = 0.05) -> list[str]:
    """A budget label whose groups differ in trainable parameters by more than `tolerance`: `rN` is what
    uniform rank N costs on the modules an entry targets, so an entry with its own target_modules gets
    a smaller budget at the same label (give budgets as parameter counts to compare placements)."""
    sentences = []
    rows = df[(df["budget_label"] != "own") & (df["role"] != "capacity-control")].dropna(subset=["trainable_params"])
    for budget, at in rows.groupby("budget_label"):
        params = at.groupby("label")["trainable_params"].median()
        if len(params) > 1 and params.min() < (1 - tolerance) * params.max():
            listed = ", ".join(f"{label} {int(n):,}" for label, n in params.sort_values().items())
            sentences.append(
                f"Budget {budget} is not one parameter count: {listed}. Comparisons at {budget} are not at equal "
                "budget; for placements, give budgets as parameter counts (see the placement suite)."
            )
    return sentences
