"""Fake run and sweep directories that follow docs/run-format.md, for report tests (and any other).

The fake model is a 4-layer decoder (hidden 64, MLP 256) with q/k/v/o/up/gate/down projections, so
trainable-parameter counts are exact: one unit of rank costs in + out parameters.

    write_run(run_dir, strategy="uniform", label="uniform", budget_label="r8", seed=0, eval_loss=3.1)
    sweep, expected = standard_sweep(tmp_path)    # 3 strategies x 2 budgets x 3 seeds + broken runs
    sweep, expected = grid_sweep(tmp_path)        # a 2-rate grid, a test split with predictions, a failed seed
    sweep, expected = family_sweep(tmp_path)      # 5 comparisons at one budget, 3 seeds, test loss
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml

from adaptive_lora.config import RunConfig
from adaptive_lora.errors import UserError
from adaptive_lora.schema import RUN_MARKER, SWEEP_MARKER
from adaptive_lora.sweep.suite import suite_from_dict

NUM_LAYERS = 4
HIDDEN, MLP = 64, 256
# role -> (module path inside a layer, in_features, out_features)
ROLES = {
    "q": ("self_attn.q_proj", HIDDEN, HIDDEN),
    "k": ("self_attn.k_proj", HIDDEN, HIDDEN),
    "v": ("self_attn.v_proj", HIDDEN, HIDDEN),
    "o": ("self_attn.o_proj", HIDDEN, HIDDEN),
    "up": ("mlp.up_proj", HIDDEN, MLP),
    "gate": ("mlp.gate_proj", HIDDEN, MLP),
    "down": ("mlp.down_proj", MLP, HIDDEN),
}
ATTENTION = {"q", "k", "v", "o"}
TOTAL_PARAMS = 1_234_567
PARAMS_PER_RANK = NUM_LAYERS * sum(i + o for _, i, o in ROLES.values())  # uniform rank r costs r x this
DATA_HASH = "3f2a9c1d7e5b"


def uniform_params(rank: int) -> int:
    return rank * PARAMS_PER_RANK


def rank_plan(strategy: str, rank: int) -> dict[tuple[int, str], int]:
    """(layer, role) -> rank, shaped like the real strategies around base rank `rank`."""
    plan = {}
    for layer in range(NUM_LAYERS):
        for role in ROLES:
            if strategy == "linear_decay":  # 2r at layer 0 down to r/2 at the last
                r = int(2 * rank - (2 * rank - rank / 2) * layer / (NUM_LAYERS - 1))
            elif strategy == "attention_heavy":
                r = rank if role in ATTENTION else max(1, rank // 2)
            elif strategy == "mlp_heavy":
                r = max(1, rank // 2) if role in ATTENTION else rank
            else:
                r = rank
            plan[(layer, role)] = max(1, r)
    return plan


def plan_params(plan: dict[tuple[int, str], int]) -> int:
    return sum(r * (ROLES[role][1] + ROLES[role][2]) for (_, role), r in plan.items())


def _run_id(label: str, budget_label: str, seed: int) -> str:
    return hashlib.sha256(f"{label}|{budget_label}|{seed}".encode()).hexdigest()[:12]


def _allocation(strategy: str, plan: dict, target: int | None, alpha: float = 16.0) -> dict:
    modules = [
        {
            "name": f"model.layers.{layer}.{ROLES[role][0]}",
            "layer": layer,
            "role": role,
            "in_features": ROLES[role][1],
            "out_features": ROLES[role][2],
            "rank": r,
            "alpha": 2.0 * r,
        }
        for (layer, role), r in sorted(plan.items())
    ]
    trainable = plan_params(plan)
    return {
        "strategy": strategy,
        "params": {},
        "alpha_policy": "proportional",
        "lora_alpha": alpha,
        "lora_r": 8,
        "model_type": "llama",
        "num_layers": NUM_LAYERS,
        "trainable_params": trainable,
        "total_params": TOTAL_PARAMS,
        "budget": {"target": target, "budget_rank": None, "achieved": trainable},
        "modules": modules,
        "scores": None,
    }


def _metrics(eval_loss: float | None, base: float, steps: int, diverged_step: int | None, done: bool) -> list[dict]:
    """A decaying train loss logged every step, eval at half-way and at the end; failed runs stop early."""
    final = eval_loss if eval_loss is not None else base - 0.3
    lines = []
    last = diverged_step or (steps if done else steps // 2 - 1)
    for step in range(1, last + 1):
        line = {
            "step": step,
            "epoch": step / steps,
            "tokens_seen": 512 * step,
            "train_loss": round(final + (base + 0.5 - final) * math.exp(-step / 3), 6),
            "learning_rate": 5e-4,
            "grad_norm": 1.0,
        }
        if step == diverged_step:
            line["train_loss"] = None  # JSON never holds NaN: the diverged step logs null
        if step in (steps // 2, steps):
            line["eval_loss"] = round(final + (0.1 if step < steps else 0.0), 6)
        lines.append(line)
    return lines


def write_run(
    run_dir: Path,
    *,
    strategy: str,
    label: str,
    budget_label: str,
    seed: int,
    eval_loss: float | None,
    status: str = "done",
    error: str | None = None,
    diverged_step: int | None = None,
    rank: int = 8,
    budget_target: int | None = None,
    base_eval_loss: float = 3.5,
    train_time_s: float = 10.0,
    model: str = "tiny-llama-test",
    data_hash: str = DATA_HASH,
    steps: int = 10,
    precision: str = "fp32",
    learning_rate: float | None = None,
    test_loss: float | None = None,
    predictions: list[dict[str, Any]] | None = None,
    target_modules: list[str] | None = None,
) -> dict[str, Any]:
    """Write a complete run directory; returns the result.json content.

    test_loss / predictions (test rows: {"row", "exact_match", "rouge_l"}) give a finished run a test
    split: result.json's `test` (means of the rows) and predictions.jsonl, as docs/run-format.md says."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_MARKER).touch()
    plan = rank_plan(strategy, rank)
    allocation = _allocation(strategy, plan, budget_target)
    config = RunConfig().to_dict()
    config["model"].update(name=model, precision=precision)
    config["allocation"].update(strategy=strategy, lora_r=rank, budget=budget_target)
    config["training"].update(seed=seed, max_steps=steps)
    if learning_rate is not None:
        config["training"]["learning_rate"] = learning_rate
    if target_modules is not None:
        config["allocation"]["target_modules"] = target_modules
    config["output"]["dir"] = str(run_dir)
    ranks = list(plan.values())
    by_role = {role: sum(r for (_, ro), r in plan.items() if ro == role) / NUM_LAYERS for role in ROLES}
    done = status == "done"
    result = {
        "run_id": run_dir.name,
        "status": status,
        "error": error,
        "diverged_step": diverged_step,
        "last_finite_loss": 3.9 if diverged_step else None,
        "strategy": strategy,
        "label": label,
        "strategy_params": {"rank": rank},
        "budget": {"target": budget_target, "budget_rank": None, "achieved": allocation["trainable_params"]},
        "budget_label": budget_label,
        "seed": seed,
        "model": model,
        "base_eval_loss": base_eval_loss,
        "base_perplexity": math.exp(base_eval_loss),
        "eval_loss": eval_loss,
        "perplexity": math.exp(eval_loss) if eval_loss is not None else None,
        "improvement": base_eval_loss - eval_loss if eval_loss is not None else None,
        "improvement_pct": 100 * (base_eval_loss - eval_loss) / base_eval_loss if eval_loss is not None else None,
        "final_train_loss": eval_loss + 0.05 if eval_loss is not None else None,
        "trainable_params": allocation["trainable_params"],
        "total_params": TOTAL_PARAMS,
        "efficiency_pct": 100 * allocation["trainable_params"] / TOTAL_PARAMS,
        "allocation_summary": {
            "mean_rank": sum(ranks) / len(ranks),
            "min_rank": min(ranks),
            "max_rank": max(ranks),
            "ranks_by_role": by_role,
        },
        "steps": steps if done else (diverged_step or 0),
        "train_time_s": train_time_s,
        "probe_time_s": 0.0,
        "tokens_per_s": 1234.5,
        "supervised_tokens_per_s": 456.7,
        "peak_memory_mb": 812.5,
        "data": {"source": "builtin", "hash": data_hash, "n_train": 180, "n_eval": 20},
        "environment": {
            "python": "3.12.3",
            "torch": "2.13.0",
            "transformers": "4.56.1",
            "peft": "0.17.1",
            "device": "cpu",
            "git_sha": "abc1234",
            "git_dirty": False,
        },
        "config": config,
    }
    if done and (test_loss is not None or predictions):
        _add_test_split(run_dir, result, test_loss, predictions or [], base_eval_loss)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (run_dir / "allocation.json").write_text(json.dumps(allocation, indent=2))
    (run_dir / "data_report.json").write_text(json.dumps({"hash": data_hash, "n_train": 180, "n_eval": 20}))
    metrics = _metrics(eval_loss, base_eval_loss, steps, diverged_step, done)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    (run_dir / "result.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    return result


def _add_test_split(run_dir: Path, result: dict, test_loss: float | None, rows: list[dict], base_loss: float) -> None:
    def mean(key: str) -> float | None:
        values = [float(r[key]) for r in rows if r.get(key) is not None]
        return sum(values) / len(values) if values else None

    result["test"] = {"loss": test_loss, "exact_match": mean("exact_match"), "rouge_l": mean("rouge_l"), "n_rows": len(rows)}
    result["base"] = {"test": {"loss": base_loss, "n_rows": len(rows)}}
    result["data"]["n_test"] = len(rows)
    lines = [
        {"source": "adapter", "split": "test", "task": None, "prompt": f"q{r['row']}", "reference": "a", "prediction": "a"}
        | {"row": r["row"], "exact_match": r.get("exact_match"), "rouge_l": r.get("rouge_l"), "new_tokens": 1}
        for r in rows
    ]
    (run_dir / "predictions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def write_suite(sweep: Path, name: str, **extra: Any) -> None:
    """A sweep directory with its marker and suite.yaml; add_run names runs after the suite's expansion."""
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / SWEEP_MARKER).touch()
    (sweep / "suite.yaml").write_text(yaml.safe_dump({"name": name, **extra}, sort_keys=False))


def suite_entries(labels: dict[str, str]) -> list[dict[str, Any]]:
    """Suite `strategies` entries for {strategy: label}."""
    return [{"strategy": strategy, "label": label} for strategy, label in labels.items()]


def add_run(sweep: Path, **fields: Any) -> dict[str, Any]:
    """A run of the sweep's suite (its id from the suite's expansion), or, when the suite does not
    list it, a run of another configuration with an id of its own."""
    run_id = _suite_run_id(sweep, fields["label"], fields["budget_label"], fields["seed"], fields.get("learning_rate"))
    Path(sweep).mkdir(parents=True, exist_ok=True)
    (Path(sweep) / SWEEP_MARKER).touch()
    return write_run(sweep / "runs" / (run_id or _run_id(fields["label"], fields["budget_label"], fields["seed"])), **fields)


def _suite_run_id(sweep: Path, label: str, budget_label: str, seed: int, rate: float | None = None) -> str | None:
    try:
        suite = suite_from_dict(yaml.safe_load((sweep / "suite.yaml").read_text()))
    except (OSError, UserError):
        return None
    key = (label, budget_label, seed)
    return next(
        (r.run_id for r in suite.runs if (r.label, r.budget.label, r.seed) == key and rate in (None, r.learning_rate)), None
    )


# --- the standard sweep ------------------------------------------------------------------------

SEEDS = (0, 1, 2)
BUDGETS = {"r4": 4, "r8": 8}
LABELS = {"uniform": "uniform", "linear_decay": "linear_decay 16->4", "attention_heavy": "attention_heavy 16/8"}
# Per-seed (strategy - uniform) eval-loss differences: the stats must recover exactly these.
DIFFS = {
    ("linear_decay", "r4"): (-0.10, -0.05, -0.12),
    ("attention_heavy", "r4"): (0.02, 0.04, 0.03),
    ("linear_decay", "r8"): (-0.02, 0.01, -0.05),
    ("attention_heavy", "r8"): (0.05, 0.09, 0.07),
}


UNPAIRED_SEED = 5


def uniform_loss(budget: str, seed: int) -> float:
    return 3.0 + 0.1 * seed - (0.2 if budget == "r8" else 0.0)


def standard_sweep(root: Path) -> tuple[Path, dict[str, Any]]:
    """3 strategies x 2 budgets x 3 seeds (done), plus one done linear_decay run at a seed uniform lacks,
    a diverged run, an error run and three broken directories (invalid JSON, no result.json,
    result.json missing keys)."""
    sweep = Path(root) / "sweep"
    write_suite(
        sweep,
        "test-suite",
        strategies=suite_entries({**LABELS, "empirical": "empirical"}),
        budgets=list(BUDGETS),
        seeds=[*SEEDS, 3, UNPAIRED_SEED],
    )
    for budget, rank in BUDGETS.items():
        for strategy, label in LABELS.items():
            for i, seed in enumerate(SEEDS):
                diff = 0.0 if strategy == "uniform" else DIFFS[(strategy, budget)][i]
                add_run(
                    sweep,
                    strategy=strategy,
                    label=label,
                    budget_label=budget,
                    seed=seed,
                    rank=rank,
                    budget_target=uniform_params(rank),
                    eval_loss=round(uniform_loss(budget, seed) + diff, 10),
                    train_time_s=10.0 + rank + seed,
                )
    # A finished run whose seed has no uniform partner: it must not enter the paired statistics.
    add_run(
        sweep,
        strategy="linear_decay",
        label=LABELS["linear_decay"],
        budget_label="r8",
        seed=UNPAIRED_SEED,
        rank=8,
        budget_target=uniform_params(8),
        eval_loss=2.0,
    )
    diverged = add_run(
        sweep,
        strategy="empirical",
        label="empirical",
        budget_label="r8",
        seed=0,
        rank=8,
        budget_target=uniform_params(8),
        eval_loss=None,
        status="diverged",
        error="loss became non-finite at step 7",
        diverged_step=7,
    )
    errored = add_run(
        sweep,
        strategy="linear_decay",
        label=LABELS["linear_decay"],
        budget_label="r4",
        seed=3,
        rank=4,
        budget_target=uniform_params(4),
        eval_loss=None,
        status="error",
        error="RuntimeError: boom",
    )
    runs = sweep / "runs"
    (runs / "badjson").mkdir()
    (runs / "badjson" / "result.json").write_text('{"run_id": "badjson", "status": ')
    (runs / "partial").mkdir()
    (runs / "partial" / "config.yaml").write_text("model: {name: x}\n")
    (runs / "missingkeys").mkdir()
    (runs / "missingkeys" / "result.json").write_text(json.dumps({"run_id": "missingkeys", "status": "done"}))
    expected = {
        "n_valid": len(BUDGETS) * len(LABELS) * len(SEEDS) + 3,
        "diverged_id": diverged["run_id"],
        "error_id": errored["run_id"],
        "skipped": {"badjson", "partial", "missingkeys"},
    }
    return sweep, expected


def seed_study_sweep(root: Path) -> Path:
    """The study mode: budget `own`, uniform r8 and r16 both present, two seeds."""
    sweep = Path(root) / "seed"
    specs = [
        ("uniform", "uniform r8", 8, 0.0),
        ("uniform", "uniform r16", 16, -0.1),
        ("linear_decay", "linear_decay 16->4", 8, -0.03),  # 10 ranks on average: closest to r8
        ("mlp_heavy", "mlp_heavy 8/16", 16, -0.12),  # attention 8, MLP 16: closest to r16
    ]
    write_suite(
        sweep,
        "seed-study",
        strategies=[{"strategy": s, "label": lab} for s, lab, _, _ in specs]
        + [{"strategy": "attention_heavy", "label": "attention_heavy 16/8"}],
        seeds=[0, 1],
    )
    for strategy, label, rank, offset in specs:
        for seed in (0, 1):
            add_run(
                sweep,
                strategy=strategy,
                label=label,
                budget_label="own",
                seed=seed,
                rank=rank,
                eval_loss=round(3.0 + 0.1 * seed + offset + 0.01 * seed * (strategy != "uniform"), 10),
                model="microsoft/DialoGPT-medium",
            )
    add_run(
        sweep,
        strategy="attention_heavy",
        label="attention_heavy 16/8",
        budget_label="own",
        seed=0,
        rank=16,
        eval_loss=None,
        status="diverged",
        error="loss became non-finite at step 3",
        diverged_step=3,
        model="microsoft/DialoGPT-medium",
    )
    return sweep


# --- a learning-rate grid with a test split ----------------------------------------------------

GRID_RATES = (1e-4, 1e-3)
GRID_LABELS = {
    "uniform": "uniform",
    "linear_decay": "linear_decay 16->4",
    "attention_heavy": "attention_heavy 16/8",
    "mlp_heavy": "mlp_heavy 8/16",
}
CONTROL = "control: r1 on v"
CONTROL_ENTRY = {
    "strategy": "uniform",
    "label": CONTROL,
    "params": {"rank": 1},
    "allocation": {"target_modules": ["v"]},
    "budget": "own",
    "role": "capacity-control",
}
# The rate each group's validation loss picks (the other rate is 0.3 worse on validation, 0.4 worse on test).
GRID_CHOSEN = {(label, budget): 1e-3 for label in GRID_LABELS.values() for budget in BUDGETS} | {
    ("attention_heavy 16/8", "r4"): 1e-4,
    ("uniform", "r8"): 1e-4,
    (CONTROL, "own"): 1e-3,
}
GRID_NO_RATE = ("mlp_heavy 8/16", "r8")  # only one rate's selection runs exist: no chosen rate
GRID_FAILED = ("linear_decay 16->4", "r8", 2)  # diverged at the chosen rate
# Per-seed test-loss differences from uniform at the same budget, at the chosen rate.
GRID_TEST_DIFFS = {
    ("linear_decay", "r4"): (-0.03, -0.01, -0.04),
    ("attention_heavy", "r4"): (0.02, 0.05, 0.01),
    ("mlp_heavy", "r4"): (0.004, -0.003, 0.001),
    ("linear_decay", "r8"): (-0.02, 0.01, 0.0),  # seed 2 diverged
    ("attention_heavy", "r8"): (0.015, 0.03, 0.02),
    ("mlp_heavy", "r8"): (0.01, 0.0, 0.02),  # no chosen rate: never compared
}
UNIFORM_JITTER = {"r4": (0.0, 0.0, 0.0), "r8": (0.01, -0.015, 0.005)}  # capacity gap r4 - r8: 0.2 - this
CONTROL_TEST = (2.52, 2.55, 2.59)
N_TEST_ROWS = 12


def grid_test_loss(label: str, strategy: str, budget: str, seed: int) -> float:
    """Test loss at the chosen rate (the control is at budget own)."""
    if label == CONTROL:
        return CONTROL_TEST[seed]
    uniform = 2.0 + 0.05 * seed - (0.2 if budget == "r8" else 0.0) + UNIFORM_JITTER[budget][seed]
    return uniform if strategy == "uniform" else uniform + GRID_TEST_DIFFS[(strategy, budget)][seed]


def grid_predictions(label: str, budget: str, seed: int, chosen: bool) -> list[dict[str, Any]]:
    """12 test rows: exact match on rows 0-9 (10 and 11 are not verifiable), ROUGE-L on all. A row's
    answers repeat across seeds (rows are shared), with seed-to-seed flips."""
    digest = int(hashlib.sha256(f"{label}|{budget}|{seed}|{chosen}".encode()).hexdigest()[:8], 16)
    rng = __import__("numpy").random.default_rng(digest)
    skill = {"uniform": 0.0, "control: r1 on v": -0.3}.get(label, 0.1 if label.startswith("linear") else -0.05)
    rows = []
    for row in range(N_TEST_ROWS):
        easy = 0.2 + 0.6 * (row % 4) / 3  # shared by every seed and group: the row's difficulty
        right = bool(rng.random() < min(1.0, max(0.0, easy + skill))) if row < 10 else None
        rows.append(
            {
                "row": row,
                "exact_match": right,
                "rouge_l": round(min(1.0, max(0.0, easy / 2 + skill / 4 + rng.normal(0, 0.05))), 6),
            }
        )
    return rows


def grid_sweep(root: Path) -> tuple[Path, dict[str, Any]]:
    """Strategies x r4, r8 x 2 learning rates, chosen on seeds 0 and 1 (seed 2 runs at the chosen rate
    only), a capacity control at its own ranks, a test split with predictions; one group diverged on
    seed 2 at its chosen rate, one group's selection is unfinished."""
    sweep = Path(root) / "grid"
    write_suite(
        sweep,
        "grid-test",
        strategies=suite_entries(GRID_LABELS) + [CONTROL_ENTRY],
        budgets=list(BUDGETS),
        seeds=list(SEEDS),
        learning_rates=list(GRID_RATES),
        select_lr_on_seeds=2,
        data={"source": "builtin", "test_set_size": N_TEST_ROWS},
    )
    groups = [(s, lab, b) for b in BUDGETS for s, lab in GRID_LABELS.items()] + [("uniform", CONTROL, "own")]
    for strategy, label, budget in groups:
        chosen = GRID_CHOSEN[(label, budget)]
        for rate in GRID_RATES:
            for seed in SEEDS:
                at_chosen = rate == chosen
                if (seed == 2 and not at_chosen) or ((label, budget) == GRID_NO_RATE and (rate != 1e-4 or seed == 2)):
                    continue  # staged: seed 2 only at the chosen rate; the unfinished group has one rate so far
                failed = (label, budget, seed) == GRID_FAILED
                rank = 1 if label == CONTROL else BUDGETS[budget]
                validation = 3.0 + 0.1 * seed - (0.2 if budget == "r8" else 0.0) + (0.0 if at_chosen else 0.3)
                test = grid_test_loss(label, strategy, budget, seed) + (0.0 if at_chosen else 0.4)
                add_run(
                    sweep,
                    strategy=strategy,
                    label=label,
                    budget_label=budget,
                    seed=seed,
                    rank=rank,
                    budget_target=None if budget == "own" else uniform_params(rank),
                    learning_rate=rate,
                    eval_loss=None if failed else round(validation + (0.05 if label == CONTROL else 0.0), 10),
                    status="diverged" if failed else "done",
                    error="loss became non-finite at step 4" if failed else None,
                    diverged_step=4 if failed else None,
                    test_loss=None if failed else round(test, 10),
                    predictions=None if failed else grid_predictions(label, budget, seed, at_chosen),
                    target_modules=["v"] if label == CONTROL else None,
                )
    return sweep, {"chosen": GRID_CHOSEN, "no_rate": GRID_NO_RATE, "failed": GRID_FAILED}


# --- one family of 5 comparisons ---------------------------------------------------------------

FAMILY_LABELS = {
    "uniform": "uniform",
    "linear_decay": "linear_decay 16->4",
    "attention_heavy": "attention_heavy 16/8",
    "mlp_heavy": "mlp_heavy 8/16",
    "empirical": "empirical",
}
# Per-seed test-loss differences from uniform (budget r8); with the capacity control, 5 comparisons.
FAMILY_DIFFS = {
    "linear_decay 16->4": (-0.010, 0.004, -0.006),
    "attention_heavy 16/8": (0.003, 0.011, 0.007),
    "mlp_heavy 8/16": (0.020, 0.026, 0.017),
    "empirical": (-0.004, 0.002, -0.001),
    CONTROL: (0.50, 0.55, 0.47),
}


def family_sweep(root: Path, control_diffs: tuple[float, ...] = FAMILY_DIFFS[CONTROL], failed_seed: int | None = None) -> Path:
    """uniform, four strategies and the capacity control at budget r8, 3 seeds, test loss; failed_seed:
    empirical diverged on that seed."""
    sweep = Path(root) / "family"
    write_suite(
        sweep,
        "family-test",
        strategies=suite_entries(FAMILY_LABELS) + [CONTROL_ENTRY],
        budgets=["r8"],
        seeds=list(SEEDS),
        data={"source": "builtin", "test_set_size": 20},
    )
    diffs = FAMILY_DIFFS | {CONTROL: control_diffs}
    for strategy, label in [*FAMILY_LABELS.items(), ("uniform", CONTROL)]:
        for seed in SEEDS:
            failed = label == "empirical" and seed == failed_seed
            uniform = 1.7 + 0.03 * seed
            test = uniform if label == "uniform" else uniform + diffs[label][seed]
            add_run(
                sweep,
                strategy=strategy,
                label=label,
                budget_label="own" if label == CONTROL else "r8",
                seed=seed,
                rank=1 if label == CONTROL else 8,
                budget_target=None if label == CONTROL else uniform_params(8),
                eval_loss=None if failed else round(1.8 + 0.02 * seed, 10),
                status="diverged" if failed else "done",
                error="loss became non-finite at step 4" if failed else None,
                diverged_step=4 if failed else None,
                test_loss=None if failed else round(test, 10),
                target_modules=["v"] if label == CONTROL else None,
            )
    return sweep
