"""Does searching pay? `adaptive-lora search` against the grid of built-in shapes, at equal compute in training tokens.

On `skills` at budget r8 (the study-skills settings unless overridden):
  (a) grid    the budget-matched suite's shapes (uniform, linear_decay, linear_increase, attention_heavy,
              mlp_heavy, empirical) at r8, each at every rate of --rates, on the search's seed; its best shape
              and uniform (each at its own rate, chosen on validation loss) are then retrained on fresh seeds
              beside the capacity control, exactly like the search's final stage;
  (b) search  `adaptive-lora search` at r8 with search.max_tokens = the tokens the grid spent (so no more
              compute than the grid), then its built-in final stage on the same fresh seeds.
Prints, and writes as JSON with --json: the best validation loss each found, the training tokens each spent, and
each final stage's test verdicts against uniform (the report's paired statistics, MDE and capacity control),
whatever they are. Both final stages are ordinary sweeps with reports under --out.

Usage: .venv/bin/python benchmarks/bench_search.py [--out benchmarks/search] [--rates 5e-4,1e-3,2e-3]
           [--top 3] [--seeds 1,2,3] [--shapes uniform,linear_decay] [--trials 200] [--workers 1] [--smoke] [--json out.json] [KEY=VALUE ...]
KEY=VALUE are run settings (e.g. data.max_samples=200). Size: --rates x --shapes for the grid (18 runs by default),
whose tokens cap the search; --seeds x (--top + 2) runs in each final stage. --smoke: a tiny random model, 40
skills rows, two shapes, one rate, two seeds, 2 steps a run, for the test suite; never a measurement. The full
size takes hours on 2 CPU cores: run it on purpose.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from adaptive_lora.config import RunConfig
from adaptive_lora.report import write_report
from adaptive_lora.search.runner import prepare, run_search
from adaptive_lora.search.settings import search_config
from adaptive_lora.sweep.executors import SweepOptions
from adaptive_lora.sweep.runner import run_sweep
from adaptive_lora.sweep.selection import validation_loss
from adaptive_lora.sweep.suite import load_suite, suite_from_dict

BUDGET = "r8"
SEARCH_SEED = 0


def study_settings(overrides: list[str]) -> RunConfig:
    """study-skills' model, data, training, allocation and eval settings, with KEY=VALUE overrides."""
    suite = load_suite("study-skills").data
    run = {k: suite[k] for k in ("model", "data", "training", "allocation", "eval")}
    return RunConfig.from_dict(run).with_overrides(overrides)


def smoke_settings(out: Path) -> list[str]:
    """A tiny random Llama with the embedded tokenizer, 40 skills rows, 2 steps: seconds, not a measurement."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from adaptive_lora.models import load_tokenizer

    model_dir = out / "tiny-model"
    if not (model_dir / "config.json").is_file():
        tokenizer = load_tokenizer("embedded")
        torch.manual_seed(0)
        config = AutoConfig.for_model(
            "llama", num_hidden_layers=2, hidden_size=32, intermediate_size=48, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=len(tokenizer), max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    return [
        f"model.name={model_dir}",
        "data.max_samples=40",
        "data.val_set_size=8",
        "data.test_set_size=8",
        "training.max_steps=2",
        "training.micro_batch_size=4",
        "training.sequence_len=128",
        "eval.generate=false",
        "eval.forgetting=null",
    ]


def grid(
    run: RunConfig, rates: list[float], labels: list[str] | None, out: Path, options: SweepOptions
) -> tuple[dict, list[dict]]:
    """The built-in shapes (or those named in `labels`) at r8 x every rate on the search's seed: (suite mapping, results)."""
    shapes = [e for e in load_suite("budget-matched").data["strategies"] if e.get("role", "strategy") == "strategy"]
    shapes = [e for e in shapes if labels is None or e["label"] in labels]
    data = run.to_dict()
    suite = {
        "name": "bench-search-grid",
        **{k: data[k] for k in ("model", "data", "allocation", "eval")},
        "training": {k: v for k, v in data["training"].items() if k != "seed"},
        "strategies": shapes,
        "budgets": [BUDGET],
        "seeds": [SEARCH_SEED],
        "learning_rates": rates,
    }
    run_sweep(suite_from_dict(suite, source="grid"), out, options)
    results = [json.loads(p.read_text()) for p in sorted(out.glob("runs/*/result.json"))]
    return suite, results


def grid_final(grid_suite: dict, results: list[dict], seeds: list[int], out: Path, options: SweepOptions) -> dict:
    """The grid's best shape and uniform, each at its best rate on validation loss, on fresh seeds with the control."""
    best: dict[str, tuple[float, float]] = {}  # label -> (validation loss, rate)
    for r in results:
        loss = validation_loss(r)
        if loss is not None and (r["label"] not in best or loss < best[r["label"]][0]):
            best[r["label"]] = (loss, r["config"]["training"]["learning_rate"])
    winner = min((label for label in best if label != "uniform"), key=lambda label: best[label][0])
    entries = {e["label"]: e for e in grid_suite["strategies"]}
    control = next(e for e in load_suite("budget-matched").data["strategies"] if e.get("role") == "capacity-control")
    suite = {k: v for k, v in grid_suite.items() if k not in ("learning_rates", "seeds", "strategies", "name")}
    suite |= {
        "name": "bench-search-grid-final",
        "seeds": seeds,
        "strategies": [
            entries["uniform"] | {"learning_rate": best["uniform"][1]},
            entries[winner] | {"learning_rate": best[winner][1]},
            control | {"learning_rate": best["uniform"][1]},
        ],
    }
    run_sweep(suite_from_dict(suite, source="grid-final"), out, options)
    write_report(out)
    return {"best": winner, "validation": best[winner][0], "uniform_validation": best["uniform"][0]}


def verdicts(sweep: Path) -> list[dict]:
    """The report's paired comparisons with uniform on the test loss (stats.csv)."""
    import pandas as pd

    stats = pd.read_csv(sweep / "stats.csv")
    rows = stats[stats["metric"] == "test_loss"]
    keep = ["label", "role", "n_pairs", "mean_diff", "ci_low", "ci_high", "t_p_holm", "mde", "verdict"]
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in rows[keep].to_dict("records")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    parser.add_argument("--out", default="benchmarks/search", help="directory for both arms (resumable)")
    parser.add_argument("--rates", default="5e-4,1e-3,2e-3", help="the grid's learning rates (study-skills' by default)")
    parser.add_argument("--top", type=int, default=3, help="the search's final stage: best k allocations")
    parser.add_argument("--seeds", default="1,2,3", help="fresh seeds of both final stages")
    parser.add_argument("--trials", type=int, default=200, help="the search's trial cap (the token budget binds first)")
    parser.add_argument("--shapes", help="only these built-in shapes in the grid, comma-separated labels (default all)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, two shapes, one rate: checks the script, measures nothing"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes for every stage (each gets cores/workers threads)"
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = (smoke_settings(out) if args.smoke else []) + list(args.overrides)
    run = study_settings(overrides)
    rates = [float(r) for r in args.rates.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = args.shapes.split(",") if args.shapes else None
    quiet = args.smoke or not sys.stderr.isatty()
    if args.smoke:
        rates, seeds, labels, args.top = rates[-1:], seeds[:2], ["uniform", "linear_decay"], 1

    options = SweepOptions(quiet=quiet, executor="processes" if args.workers > 1 else "local", workers=args.workers)
    grid_suite, results = grid(run, rates, labels, out / "grid", options)
    grid_tokens = sum(int(r.get("tokens_seen") or 0) for r in results)
    grid_summary = grid_final(grid_suite, results, seeds, out / "grid-final", options)

    settings = {
        "budget": BUDGET,
        "seed": SEARCH_SEED,
        "trials": args.trials,
        "max_tokens": grid_tokens,
        "top": args.top,
        "final_seeds": seeds,
        "lr_min": min(rates) / 2,
        "lr_max": max(rates) * 2,
        "quiet": quiet,
        "workers": args.workers,
    }
    if args.smoke:
        settings |= {"uniform_rates": 1, "evaluations": 2, "startup_trials": 1, "trials": 3}
    plan = prepare(run, search_config(settings, "bench_search"))
    summary = run_search(plan, out / "search")
    write_report(summary["final_dir"])
    record = json.loads((Path(summary["final_dir"]) / "search.json").read_text())
    search_tokens = sum(t.get("tokens") or 0 for t in record["trials"])
    figures = {
        "budget": BUDGET,
        "grid": {
            "runs": len(results),
            "tokens": grid_tokens,
            "best_validation": grid_summary["validation"],
            "best": grid_summary["best"],
            "uniform_validation": grid_summary["uniform_validation"],
            "test_verdicts": verdicts(out / "grid-final"),
        },
        "search": {
            "trials": len(record["trials"]),
            "pruned": sum(t["state"] == "pruned" for t in record["trials"]),
            "tokens": search_tokens,
            "best_validation": record["best"]["value"],
            "best": record["best"]["label"],
            "uniform_validation": record["uniform"]["value"],
            "test_verdicts": verdicts(Path(summary["final_dir"])),
        },
        "smoke": args.smoke,
    }
    print(yaml.safe_dump(figures, sort_keys=False))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
