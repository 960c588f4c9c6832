"""`adaptive-lora recommend`: from a finished sweep, the rank allocation to use, with its evidence.

    out = check_output_dir("sweeps/bm/recommended")      # refuse a user's directory before any work
    rec = recommend("sweeps/bm")                           # per budget: the pick and its evidence
    allocations = recommended_allocations(rec)             # budget -> Allocation (the pick's run's)
    write_recommendation(rec, allocations, out)            # allocation.json, adapter_config.json, evidence

Per budget the best strategy group (at its chosen learning rate) is picked on a *validation* metric
and compared with the baseline (uniform) at that budget using the report's paired statistics; it is
recommended only when it is detectably better, otherwise uniform is. Choosing on a test metric is
refused: the test numbers would then no longer be held out. With a model, the recommended shape is
carried to it by relative depth and role (transfer.py: the same roles, at that model's budget).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .allocation import Allocation
from .errors import UserError
from .io import atomic_write_text, write_json
from .planning import anatomy_of
from .report import compare as paired
from .report.collect import OWN_BUDGET, budget_order, done_runs, mark_chosen_rates, read_sweep, relative_path, runs_frame
from .report.compare import Metric, compare, final_runs, judge_rows, paired_stats
from .report.stats import finite
from .schema import ALLOCATION_FILE, read_allocation
from .transfer import transfer_allocation, transfer_shape  # noqa: F401 - transfer_shape re-exported

VALIDATION_LOSS, FORGETTING = paired.VALIDATION_LOSS, paired.FORGETTING
PERPLEXITY = Metric("perplexity", "validation perplexity", False, 3)
IMPROVEMENT = Metric("improvement", "validation loss improvement over the base model", True)
VALIDATION_METRICS = {m.column: m for m in (VALIDATION_LOSS, PERPLEXITY, IMPROVEMENT, FORGETTING)}
TEST_METRICS = (paired.TEST_LOSS, paired.EXACT_MATCH, paired.ROUGE_L)  # reported as evidence, never chosen on
NO_WIN = "no allocation beat uniform detectably"
DEFAULT_OUT = "recommended"  # inside the sweep directory
OUTPUT_MARKER = ".adaptive-lora-recommendation"  # written first: "recommend made this directory"
PEFT_CONFIG_FILE = "adapter_config.json"
RECOMMENDATION_FILE = "recommendation.json"
OUTPUT_FILES = (ALLOCATION_FILE, PEFT_CONFIG_FILE, RECOMMENDATION_FILE)


@dataclass
class Evidence:
    """The pick (or the best group) against the baseline on one metric, from the paired statistics."""

    metric: str
    metric_name: str
    higher_is_better: bool
    group_mean: float | None
    baseline_mean: float | None
    n_pairs: int
    mean_diff: float | None  # group - baseline
    ci_low: float | None  # 95% CI of mean_diff
    ci_high: float | None
    p_holm: float | None  # paired t-test, Holm-corrected across the groups of the budget
    mde: float | None  # minimum detectable effect (80% power, alpha 0.05)
    verdict: str


@dataclass
class BudgetChoice:
    budget: str
    baseline: str  # the baseline label the best group was compared with
    best: str | None  # the best strategy group on the chosen metric (None: no strategy finished here)
    recommended: str  # `best` when it beat the baseline detectably, else the baseline
    beat_baseline: bool
    statement: str
    evidence: list[Evidence]
    candidates: list[dict[str, Any]]  # {label, role, n, mean}, best first
    run_dir: str = ""  # the run whose allocation.json is recommended: lowest seed at the chosen rate
    seed: int = 0
    learning_rate: float | None = None
    source_model: str = ""
    target_modules: list[str] | None = None
    trust_remote_code: bool = False
    files: dict[str, str] = field(default_factory=dict)  # what was written: allocation, peft_config
    allocation: dict[str, Any] = field(default_factory=dict)  # the written allocation: model, params, ranks by role


@dataclass
class Recommendation:
    sweep: str
    metric: str
    metric_name: str
    higher_is_better: bool
    budgets: list[BudgetChoice]
    model: str | None = None  # the model the written files are for (None: each run's own model)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- choosing -----------------------------------------------------------------------------------


def validation_metric(name: str) -> Metric:
    """The metric to choose on; test metrics are refused with the reason."""
    key = name.strip()
    if key in VALIDATION_METRICS:
        return VALIDATION_METRICS[key]
    choices = ", ".join(VALIDATION_METRICS)
    if "test" in key.lower() or key in ("exact_match", "rouge_l"):
        raise UserError(
            f"--metric {name} is a test metric: choosing on the test split would make its numbers meaningless "
            f"(they are only an unbiased estimate while nothing was chosen on them); choose on one of: {choices}"
        )
    raise UserError(f"--metric {name} is not a validation metric of a sweep; choose one of: {choices}")


def recommend(sweep_dir: str | Path, budget: str | None = None, metric: str = VALIDATION_LOSS.column) -> Recommendation:
    """Per budget (or the one named), the best strategy group and its evidence against the baseline."""
    chosen = validation_metric(metric)
    sweep = Path(sweep_dir)
    read = read_sweep(sweep)
    df = mark_chosen_rates(runs_frame(read.runs), read.runs, read.suite)
    done = done_runs(final_runs(df)) if len(df) else df
    if done.empty:
        tried = final_runs(df) if len(df) else df
        if len(tried):
            raise UserError(_none_finished(sweep, tried))
        raise UserError(f"sweep {sweep} has no finished runs to recommend from; run the sweep first (adaptive-lora run)")
    if done[chosen.column].isna().all():
        raise UserError(f"no finished run of sweep {sweep} has {chosen.column}; choose another --metric")
    with_baseline = [b for b in budget_order(done) if (done.loc[done["budget_label"] == b, "role"] == "baseline").any()]
    if budget is not None and budget not in with_baseline:
        known = ", ".join(with_baseline) or "none"
        raise UserError(f"--budget {budget} has no finished baseline run in sweep {sweep}; budgets with one: {known}")
    if not with_baseline:
        raise UserError(f"sweep {sweep} has no finished baseline (uniform) run, so nothing can be compared with it")
    stats = paired_stats(df)
    results = {str(run.path): run.result for run in read.runs}
    choices = [_choose(sweep, done, stats, b, chosen, results) for b in ([budget] if budget else with_baseline)]
    return Recommendation(str(sweep), chosen.column, chosen.name, chosen.higher_is_better, choices)


def _none_finished(sweep: Path, runs: pd.DataFrame) -> str:
    """Why there is nothing to recommend from when every run failed: the statuses and an error of the commonest."""
    counts = runs["status"].value_counts()
    first = runs[runs["status"] == counts.index[0]].sort_values("run_id").iloc[0]
    error = " ".join(str(first["error"] or "no error recorded").split())[:200]
    return (
        f"none of the {len(runs)} runs of sweep {sweep} finished ({', '.join(f'{n} {s}' for s, n in counts.items())}; "
        f"e.g. {first['run_id']}: {error}): see {sweep / 'report.md'}, fix the cause and rerun them with "
        f"`adaptive-lora run <your suite> --out {sweep} --retry-failed`"
    )


def _choose(sweep: Path, done: pd.DataFrame, stats: pd.DataFrame, budget: str, metric: Metric, results: dict) -> BudgetChoice:
    rows = _metric_rows(done, stats, budget, metric)
    candidates = []
    for row in rows.itertuples(index=False):
        if row.role != "strategy":  # baselines are compared with, controls are never recommended
            continue
        mean = _mean(_group(done, row.label, budget), metric.column)
        if mean is not None:
            candidates.append({"label": row.label, "role": row.role, "n": len(_group(done, row.label, budget)), "mean": mean})
    candidates.sort(key=lambda c: -c["mean"] if metric.higher_is_better else c["mean"])
    if not candidates:
        baselines = done[(done["budget_label"] == budget) & (done["role"] == "baseline")]
        means = {label: _mean(_group(done, label, budget), metric.column) for label in baselines["label"].unique()}
        baseline = sorted(means, key=lambda lab: (means[lab] is None, means[lab] or 0.0))[0]
        statement = f"{NO_WIN} at {budget}: no strategy group finished there; {baseline} is recommended"
        return _with_run(sweep, done, results, BudgetChoice(budget, baseline, None, baseline, False, statement, [], []))
    best = candidates[0]["label"]
    row = rows[rows["label"] == best].iloc[0]
    baseline = str(row["baseline_label"])
    beat = row["verdict"] == "better"
    evidence = [_evidence(done, _metric_rows(done, stats, budget, m), best, budget, m) for m in _evidence_metrics(stats, metric)]
    if beat:
        statement = f"{best} beat {baseline} detectably on {metric.name} at {budget}; {best} is recommended"
    else:
        statement = (
            f"{NO_WIN} at {budget} (the best non-{baseline} strategy, {best}: {row['verdict']} on {metric.name}); "
            f"{baseline} is recommended"
        )
    choice = BudgetChoice(budget, baseline, best, best if beat else baseline, bool(beat), statement, evidence, candidates)
    return _with_run(sweep, done, results, choice)


def _evidence_metrics(stats: pd.DataFrame, chosen: Metric) -> list[Metric]:
    measured = set(stats["metric"])
    return [chosen] + [m for m in TEST_METRICS if m.column in measured]


def _metric_rows(done: pd.DataFrame, stats: pd.DataFrame, budget: str, metric: Metric) -> pd.DataFrame:
    """paired_stats rows of one metric at one budget; for a metric the report does not test (e.g.
    perplexity), the same comparisons computed here, Holm-corrected across the budget's groups alike."""
    at = stats[stats["budget_label"] == budget]
    if metric.column in set(stats["metric"]):
        return at[at["metric"] == metric.column].reset_index(drop=True)
    block = []
    for ref in at[at["metric"] == VALIDATION_LOSS.column].itertuples(index=False):
        label_budget = budget if not _group(done, ref.label, budget, exact=True).empty else OWN_BUDGET
        row = {"label": ref.label, "role": ref.role, "budget_label": budget, "baseline_label": ref.baseline_label}
        row.update(compare(done, ref.label, label_budget, ref.baseline_label, budget, metric))
        block.append(row)
    judge_rows(block, metric.higher_is_better)  # one family: Holm, the MDE at its level, the verdict
    return pd.DataFrame(block, columns=["label", "role", "budget_label", "baseline_label", "metric", "higher_is_better",
                                        "n_pairs", "mean_diff", "ci_low", "ci_high", "t_p_holm", "mde", "verdict"])  # fmt: skip


def _evidence(done: pd.DataFrame, rows: pd.DataFrame, label: str, budget: str, metric: Metric) -> Evidence:
    row = rows[rows["label"] == label].iloc[0]
    means = [_mean(_group(done, name, budget), metric.column) for name in (label, str(row["baseline_label"]))]
    numbers = {key: finite(row[key]) for key in ("mean_diff", "ci_low", "ci_high", "mde")}
    n_pairs, p_holm = int(finite(row["n_pairs"]) or 0), finite(row["t_p_holm"])
    return Evidence(
        metric.column,
        metric.name,
        metric.higher_is_better,
        *means,
        n_pairs,
        p_holm=p_holm,
        verdict=str(row["verdict"]),
        **numbers,
    )


def _group(done: pd.DataFrame, label: str, budget: str, exact: bool = False) -> pd.DataFrame:
    """A group's finished runs at `budget`; a group trained once at budget `own` is compared at every budget."""
    group = done[(done["label"] == label) & (done["budget_label"] == budget)]
    if group.empty and not exact:
        group = done[(done["label"] == label) & (done["budget_label"] == OWN_BUDGET)]
    return group


def _with_run(sweep: Path, done: pd.DataFrame, results: dict, choice: BudgetChoice) -> BudgetChoice:
    """Fill in the recommended group's run: its lowest seed at the chosen rate."""
    run = _group(done, choice.recommended, choice.budget).sort_values("seed").iloc[0]
    result = results[run["run_dir"]]
    config = result.get("config") if isinstance(result.get("config"), dict) else {}
    targets = (config.get("allocation") or {}).get("target_modules")
    choice.run_dir = relative_path(run["run_dir"], sweep)
    choice.seed = int(run["seed"])
    choice.learning_rate = finite(run["learning_rate"])
    choice.source_model = str(result.get("model") or (config.get("model") or {}).get("name") or "")
    choice.target_modules = list(targets) if targets else None
    choice.trust_remote_code = bool((config.get("model") or {}).get("trust_remote_code", False))
    return choice


def _mean(group: pd.DataFrame, column: str) -> float | None:
    return finite(group[column].astype(float).mean()) if len(group) else None


# --- the recommended allocation, and its transfer to another model (transfer.py) -----------------


def recommended_allocation(rec: Recommendation, choice: BudgetChoice) -> Allocation:
    """The recommended run's allocation.json on the anatomy of its model (built from its config alone)."""
    if not choice.source_model:
        raise UserError(f"run {choice.run_dir} does not name its model in result.json; its allocation cannot be rebuilt")
    run_dir = Path(rec.sweep) / choice.run_dir if not Path(choice.run_dir).is_absolute() else Path(choice.run_dir)
    anatomy = anatomy_of(choice.source_model, choice.target_modules, choice.trust_remote_code)
    return Allocation.from_record(read_allocation(run_dir), anatomy, str(run_dir / ALLOCATION_FILE))


def recommended_allocations(rec: Recommendation, model: str | None = None) -> dict[str, Allocation]:
    """Budget -> the allocation to use: the pick's run's own, or transferred to `model`."""
    allocations = {choice.budget: recommended_allocation(rec, choice) for choice in rec.budgets}
    if model is None:
        return allocations
    target = anatomy_of(model)
    return {budget: transfer_allocation(a, target, budget) for budget, a in allocations.items()}


# --- writing ------------------------------------------------------------------------------------


def check_output_dir(out: str | Path) -> Path:
    """A new or empty directory, or an earlier `recommend` output; never a directory of the user's."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; nothing was written: choose a new or empty directory")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if names and OUTPUT_MARKER not in names:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        raise UserError(
            f"--out {out} is not empty and is not an earlier `adaptive-lora recommend` output (it holds {shown}); "
            "nothing was written: choose a new or empty directory"
        )
    return out


def _ours(path: Path) -> bool:
    return path.name in OUTPUT_FILES or (path.name.startswith(".") and path.name.endswith(".tmp"))


def _clear_previous(out: Path) -> None:
    """Remove what an earlier recommendation wrote there (a file the user added is kept)."""
    for entry in out.iterdir():
        if entry.is_file() and _ours(entry):
            entry.unlink()
        elif entry.is_dir() and not entry.is_symlink() and all(p.is_file() and _ours(p) for p in entry.iterdir()):
            shutil.rmtree(entry)


def write_allocation_files(allocation: Allocation, out: Path) -> dict[str, str]:
    """allocation.json and a PEFT adapter_config.json (`LoraConfig.from_pretrained(out)` loads it)."""
    allocation.save(out / ALLOCATION_FILE)
    with tempfile.TemporaryDirectory() as staging:  # PEFT writes non-atomically; copy its file in atomically
        allocation.to_peft_config().save_pretrained(staging)
        atomic_write_text(out / PEFT_CONFIG_FILE, (Path(staging) / PEFT_CONFIG_FILE).read_text(encoding="utf-8"))
    return {"allocation": str(out / ALLOCATION_FILE), "peft_config": str(out / PEFT_CONFIG_FILE)}


def write_recommendation(rec: Recommendation, allocations: dict[str, Allocation], out: str | Path) -> Path:
    """Write OUT/allocation.json + adapter_config.json (OUT/<budget>/ for each budget when there are
    several) and OUT/recommendation.json with the evidence; returns the recommendation.json path."""
    out = check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUTPUT_MARKER).touch()
    _clear_previous(out)
    for choice in rec.budgets:
        allocation = allocations[choice.budget]
        where = out if len(rec.budgets) == 1 else out / choice.budget
        where.mkdir(exist_ok=True)
        choice.files = write_allocation_files(allocation, where)
        summary = allocation.summary()
        choice.allocation = {
            "model_type": allocation.anatomy.model_type,
            "num_layers": allocation.anatomy.num_layers,
            "trainable_params": allocation.trainable_params,
            **{k: summary[k] for k in ("mean_rank", "min_rank", "max_rank", "ranks_by_role")},
            **({"not_transferred": allocation.meta["transfer"]["not_transferred"]} if "transfer" in allocation.meta else {}),
        }
    write_json(out / RECOMMENDATION_FILE, rec.to_dict())
    return out / RECOMMENDATION_FILE
