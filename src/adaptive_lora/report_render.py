"""report.md and report.html from one list of blocks, so both always say the same thing.

Numbers are formatted here and only here: a missing or non-finite value is shown as "—".
The HTML is self-contained: inline CSS and PNG figures as base64 data URIs, so it opens from disk,
from an e-mail attachment or a CI artifact alike.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from .figures import FigureFile
from .report import OWN_BUDGET, Run, budget_order, done_runs
from .stats import ALPHA

DASH = "—"

# The original study's published table (DialoGPT-medium, 200 Alpaca rows, one seed, fp16).
# `match` finds our counterpart at budget `own`: (strategy, uniform rank or None).
STUDY_TABLE = (
    {"strategy": "Baseline Rank 16", "eval_loss": 4.90, "perplexity": 134.0, "params": "6.3M", "exact": 6_291_456,
     "efficiency": "1.7%", "time": "81.8s", "match": ("uniform", 16)},
    {"strategy": "Linear Decay", "eval_loss": 5.11, "perplexity": 165.1, "params": "6.3M", "exact": None,
     "efficiency": "1.7%", "time": "83.5s", "match": ("linear_decay", None)},
    {"strategy": "Baseline Rank 8", "eval_loss": 5.31, "perplexity": 203.3, "params": "3.1M", "exact": 3_145_728,
     "efficiency": "0.9%", "time": "87.5s", "match": ("uniform", 8)},
    {"strategy": "Attention-Heavy", "eval_loss": None, "perplexity": None, "params": "5.1M", "exact": None,
     "efficiency": "1.4%", "time": "90.2s", "match": ("attention_heavy", None)},
    {"strategy": "Empirical", "eval_loss": None, "perplexity": None, "params": "3.5M", "exact": None,
     "efficiency": "1.0%", "time": "88.8s", "match": ("empirical", None)},
)
STUDY_DIVERGED = "diverged (NaN)"
STUDY_NOTE = (
    "The original study (DialoGPT-medium, 200 Alpaca rows, one seed, fp16) applied only the first layer's rank "
    "to every layer, averaged attention-heavy ranks into one, and its attention-heavy and empirical runs diverged "
    "to NaN in fp16; its adaptive rows therefore do not measure the strategies they name. Ours apply every "
    "module's planned rank (verified after PEFT wrapping), train in fp32/bf16 and stop diverged runs with the step."
)


@dataclass
class ReportContext:
    title: str
    sweep: Path
    suite: dict[str, Any]
    runs: list[Run]
    df: pd.DataFrame
    summary: pd.DataFrame
    stats: pd.DataFrame
    figures: list[FigureFile]
    figure_errors: list[str]
    skipped: list[dict[str, str]]
    seed_study: bool = False


# --- number formatting ------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and not math.isfinite(value)


def fmt_num(value: Any, digits: int = 4) -> str:
    return DASH if _missing(value) else f"{float(value):,.{digits}f}"


def fmt_int(value: Any) -> str:
    return DASH if _missing(value) else f"{int(round(float(value))):,}"


def fmt_params(value: Any) -> str:
    """Exact counts as 3,145,728; a non-integer mean (runs of different size) as 3.15M."""
    if _missing(value):
        return DASH
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.1f}"


def fmt_p(value: Any) -> str:
    if _missing(value):
        return DASH
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def fmt_mean_ci(row: pd.Series | dict, metric: str, fmt: Callable[[Any], str]) -> str:
    """"mean ± half-width of the 95% CI", or just the mean when there is no CI (n < 2)."""
    mean, high = row.get(f"{metric}_mean"), row.get(f"{metric}_ci_high")
    if _missing(mean):
        return DASH
    if _missing(high) or high - mean == 0:  # no CI (n < 2), or identical values (e.g. parameter counts)
        return fmt(mean)
    return f"{fmt(mean)} ± {fmt(high - mean)}"


def fmt_text(value: Any) -> str:
    return DASH if _missing(value) or value == "" else str(value)


# --- blocks -----------------------------------------------------------------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    kind: str = "p"  # p | note | warning


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # right-aligned column indices


@dataclass
class Figure:
    file: FigureFile


def _unique(values) -> list:
    seen = []
    for value in values:
        if not _missing(value) and value not in seen:
            seen.append(value)
    return seen


def _joined(values, fmt: Callable[[Any], str] = str) -> str:
    found = _unique(values)
    return ", ".join(fmt(v) for v in found) if found else DASH


def _config_value(run: Run, section: str, key: str) -> Any:
    config = run.result.get("config")
    part = config.get(section) if isinstance(config, dict) else None
    return part.get(key) if isinstance(part, dict) else None


def _env_value(run: Run, key: str) -> Any:
    env = run.result.get("environment")
    return env.get(key) if isinstance(env, dict) else None


HYPERPARAMETERS = (
    ("training", "learning_rate"), ("training", "num_epochs"), ("training", "max_steps"),
    ("training", "micro_batch_size"), ("training", "gradient_accumulation_steps"), ("training", "sequence_len"),
    ("training", "warmup_ratio"), ("training", "lr_scheduler"), ("allocation", "lora_alpha"),
    ("allocation", "alpha_policy"), ("allocation", "lora_dropout"), ("allocation", "target_modules"),
    ("model", "precision"),
)


def setup_blocks(ctx: ReportContext) -> list:
    runs, df = ctx.runs, ctx.df
    data = df.drop_duplicates(["data_hash", "n_train", "n_eval"]) if len(df) else df
    hashes = [f"{fmt_text(r.data_hash)} (n_train {fmt_int(r.n_train)}, n_eval {fmt_int(r.n_eval)})"
              for r in data.itertuples()]
    hyper = [f"{key} {_joined(_plain(_config_value(r, s, key), key) for r in runs)}" for s, key in HYPERPARAMETERS]
    env = [f"{key} {_joined(_env_value(r, key) for r in runs)}"
           for key in ("python", "torch", "transformers", "peft", "device", "git_sha", "git_dirty")]
    blocks = [Heading(2, "Setup"), Bullets([
        f"Model: {_joined(df.get('model', []))}",
        f"Data source: {_joined(df.get('data_source', []))}",
        f"Data hash (sizes): {', '.join(hashes) if hashes else DASH}",
        f"Hyperparameters: {'; '.join(hyper)}",
        f"Environment: {'; '.join(env)}",
    ])]
    n_hashes = len(_unique(df.get("data_hash", [])))
    if n_hashes > 1:
        blocks.append(Para(f"Runs used {n_hashes} different data hashes: their losses were measured on different "
                           "data, so comparisons between them are not valid. Re-run on one data set.", "warning"))
    n_models = len(_unique(df.get("model", [])))
    if n_models > 1:
        blocks.append(Para(f"Runs used {n_models} different models: losses of different models are not "
                           "comparable, and neither are the paired statistics across them.", "warning"))
    return blocks


def _plain(value: Any, key: str) -> Any:
    if value is None and key == "target_modules":
        return "all"  # None means every linear module of the blocks
    return ",".join(map(str, value)) if isinstance(value, list) else value


def results_blocks(ctx: ReportContext) -> list:
    columns = ["Strategy", "Budget", "Done", "Failed", "Eval loss", "Perplexity", "Improvement",
               "Trainable params", "Train time (s)"]
    rows = [[row["label"], row["budget_label"], fmt_int(row["n"]), fmt_int(row["n_failed"]),
             fmt_mean_ci(row, "eval_loss", fmt_num), fmt_mean_ci(row, "perplexity", lambda v: fmt_num(v, 2)),
             fmt_mean_ci(row, "improvement", fmt_num), fmt_mean_ci(row, "trainable_params", fmt_params),
             fmt_mean_ci(row, "train_time_s", lambda v: fmt_num(v, 1))]
            for _, row in ctx.summary.iterrows()]
    return [
        Heading(2, "Results"),
        Table(columns, rows, numeric=set(range(2, 9))) if rows else Para("No valid runs.", "note"),
        Para("Means over finished (done) runs; ± is the half-width of the 95% t confidence interval over seeds, "
             "absent when fewer than 2 seeds finished. Improvement = untrained base eval loss − eval loss. "
             "Full per-run values: results.csv; per-group numbers: summary.csv.", "note"),
    ]


def stats_blocks(ctx: ReportContext) -> list:
    blocks = [Heading(2, "Paired statistics against uniform"), Para(
        "Each strategy is paired with the uniform run at the same budget and seed; the difference is strategy − "
        f"uniform eval loss (negative = better). At budget {OWN_BUDGET} (each strategy keeps its own ranks) the "
        "uniform run with the closest trainable-parameter count is the baseline. p-values are two-sided; the Holm "
        f"correction is across strategies within a budget. Verdicts use the Holm-corrected t-test at {ALPHA}.")]
    if ctx.stats.empty:
        return blocks + [Para("No strategy besides uniform: nothing to compare.", "note")]
    columns = ["Strategy", "Budget", "Baseline", "Pairs", "Mean diff [95% CI]", "t-test p", "Wilcoxon p",
               "Holm t p", "Holm Wilcoxon p", "Verdict", "Note"]
    rows = [[row["label"], row["budget_label"], fmt_text(row["baseline_label"]), fmt_int(row["n_pairs"]),
             _diff_ci(row), fmt_p(row["t_p"]), _wilcoxon(row), fmt_p(row["t_p_holm"]),
             fmt_p(row["wilcoxon_p_holm"]), fmt_text(row["verdict"]), _stats_note(row)]
            for _, row in ctx.stats.iterrows()]
    return blocks + [Table(columns, rows, numeric={3, 5, 6, 7, 8})]


def _diff_ci(row: pd.Series) -> str:
    if _missing(row["mean_diff"]):
        return DASH
    if _missing(row["ci_low"]):
        return f"{row['mean_diff']:+.4f}"
    return f"{row['mean_diff']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"


def _wilcoxon(row: pd.Series) -> str:
    p = fmt_p(row["wilcoxon_p"])
    method = row["wilcoxon_method"]
    return p if p == DASH or method == "exact" or _missing(method) else f"{p} ({method})"


def _stats_note(row: pd.Series) -> str:
    parts = [fmt_text(row["note"])] if not _missing(row["note"]) and row["note"] else []
    if not _missing(row["baseline_choice"]) and "closest" in str(row["baseline_choice"]):
        parts.append(f"baseline: {row['baseline_choice']}")
    return "; ".join(parts) or DASH


def figure_blocks(ctx: ReportContext) -> list:
    errors = [Para(f"Figure not drawn ({error}); the tables above are complete.", "warning")
              for error in ctx.figure_errors]
    return [Heading(2, "Figures")] + errors + [Figure(f) for f in ctx.figures]


def failed_blocks(ctx: ReportContext) -> list:
    blocks = [Heading(2, "Failed runs")]
    failed = ctx.df[ctx.df["status"] != "done"] if len(ctx.df) else ctx.df
    if failed.empty:
        return blocks + [Para("None: every valid run finished.", "note")]
    rows = [[r.run_id, r.label, r.budget_label, fmt_int(r.seed), r.status, fmt_text(r.error),
             fmt_int(r.diverged_step), fmt_num(r.last_finite_loss)] for r in failed.itertuples()]
    columns = ["Run", "Strategy", "Budget", "Seed", "Status", "Reason", "Diverged at step", "Last finite loss"]
    return blocks + [Table(columns, rows, numeric={3, 6, 7}),
                     Para("Failed runs are left out of the means and the paired statistics.", "note")]


def skipped_blocks(ctx: ReportContext) -> list:
    blocks = [Heading(2, "Skipped run directories")]
    if not ctx.skipped:
        return blocks + [Para("None.", "note")]
    return blocks + [Table(["Directory", "Reason"], [[s["path"], s["reason"]] for s in ctx.skipped])]


def _our_match(ctx: ReportContext, strategy: str, rank: int | None) -> pd.Series | None:
    """Our summary row at budget `own` for one study row (uniform: the one whose mean rank is `rank`)."""
    summary, df = ctx.summary, ctx.df
    if summary.empty:
        return None
    rows = summary[(summary["strategy"] == strategy) & (summary["budget_label"] == OWN_BUDGET)]
    if rank is not None:
        ranks = df[df["budget_label"] == OWN_BUDGET].groupby("label")["mean_rank"].median()
        rows = rows[rows["label"].map(lambda lab: ranks.get(lab) == rank)]
    return None if rows.empty else rows.iloc[0]


def _our_loss(ctx: ReportContext, row: pd.Series | None, metric: str, fmt) -> str:
    if row is None:
        return DASH
    if row["n"] == 0:  # every run of this group failed: say how
        group = ctx.df[(ctx.df["label"] == row["label"]) & (ctx.df["budget_label"] == row["budget_label"])]
        return ", ".join(f"{status} ({count})" for status, count in group["status"].value_counts().items())
    return fmt_mean_ci(row, metric, fmt)


def study_blocks(ctx: ReportContext) -> list:
    columns = ["Strategy", "Study eval loss", "Study perplexity", "Study params", "Study efficiency",
               "Study time", "Our label", "Our eval loss", "Our perplexity", "Our params", "Our train time (s)"]
    rows = []
    for study in STUDY_TABLE:
        ours = _our_match(ctx, *study["match"])
        params = f"{study['params']} ({study['exact']:,})" if study["exact"] else study["params"]
        rows.append([
            study["strategy"],
            STUDY_DIVERGED if study["eval_loss"] is None else f"{study['eval_loss']:.2f}",
            STUDY_DIVERGED if study["perplexity"] is None else f"{study['perplexity']:.1f}",
            params, study["efficiency"], study["time"],
            DASH if ours is None else ours["label"],
            _our_loss(ctx, ours, "eval_loss", fmt_num),
            _our_loss(ctx, ours, "perplexity", lambda v: fmt_num(v, 2)),
            DASH if ours is None else fmt_mean_ci(ours, "trainable_params", fmt_params),
            DASH if ours is None else fmt_mean_ci(ours, "train_time_s", lambda v: fmt_num(v, 1)),
        ])
    return [
        Heading(2, "The original study beside ours"),
        Table(columns, rows, numeric={1, 2, 3, 4, 5, 7, 8, 9, 10}),
        Para(STUDY_NOTE, "note"),
        Para("Our rows are at budget own (each strategy's own ranks), mean ± 95% CI over seeds. Training times "
             "depend on hardware and are not comparable across the two studies.", "note"),
    ]


def build_blocks(ctx: ReportContext) -> list:
    df = ctx.df
    n_done = len(done_runs(df)) if len(df) else 0
    budgets = ", ".join(budget_order(df)) if len(df) else DASH
    blocks = [Heading(1, ctx.title), Para(
        f"{len(df)} runs ({n_done} finished, {len(df) - n_done} failed) and {len(ctx.skipped)} skipped "
        f"directories in {ctx.sweep}; budgets: {budgets}.")]
    blocks += setup_blocks(ctx) + results_blocks(ctx)
    if ctx.seed_study:
        blocks += study_blocks(ctx)
    blocks += figure_blocks(ctx) + stats_blocks(ctx) + failed_blocks(ctx) + skipped_blocks(ctx)
    return blocks


# --- markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_block(block, sweep: Path) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Para):
        prefix = {"p": "", "note": "_Note:_ ", "warning": "> **Warning:** "}[block.kind]
        return prefix + block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        align = ["---:" if i in block.numeric else "---" for i in range(len(block.columns))]
        lines = ["| " + " | ".join(map(_md_cell, block.columns)) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        f = block.file
        png, svg = (Path(p).relative_to(sweep).as_posix() for p in (f.png, f.svg))
        return f"### {f.title}\n\n![{f.title}]({png})\n\n{f.caption} ([SVG]({svg}))"
    raise TypeError(f"unknown block {block!r}")


def render_markdown(ctx: ReportContext) -> str:
    return "\n\n".join(_md_block(b, ctx.sweep) for b in build_blocks(ctx)) + "\n"


# --- html -------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .88rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.note { color: #555; font-size: .9rem; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: .6rem .8rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9rem; }
"""


def _html_block(block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        return f'<p class="{block.kind}">{e(block.text)}</p>'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(c)}</th>" for c in block.columns)
        body = "".join(
            "<tr>" + "".join(f'<td{" class=num" if i in block.numeric else ""}>{e(str(c))}</td>'
                             for i, c in enumerate(row)) + "</tr>"
            for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        f = block.file
        data = base64.b64encode(f.png_bytes).decode("ascii")
        return (f'<figure><h3>{e(f.title)}</h3><img alt="{e(f.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(f.caption)}</figcaption></figure>")
    raise TypeError(f"unknown block {block!r}")


def render_html(ctx: ReportContext) -> str:
    body = "\n".join(_html_block(b) for b in build_blocks(ctx))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(ctx.title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")
