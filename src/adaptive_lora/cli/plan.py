"""`adaptive-lora strategies` and `adaptive-lora plan`."""

from __future__ import annotations

import argparse
import json

from ..config import AllocationConfig, TrainingConfig, parse_override
from ..counts import parse_count

DEFAULTS = AllocationConfig()


def add_parsers(commands) -> None:
    parser = commands.add_parser("strategies", help="list rank-allocation strategies and their parameters")
    parser.set_defaults(func=cmd_strategies)

    parser = commands.add_parser("plan", help="show or export the per-module ranks a strategy gives a model")
    parser.add_argument(
        "--model", default="embedded", help="embedded (default), a hub id, or a local model directory (config.json is enough)"
    )
    parser.add_argument("--strategy", default=DEFAULTS.strategy, help="strategy name (see `adaptive-lora strategies`)")
    parser.add_argument(
        "--set", dest="params", action="append", default=[], metavar="KEY=VALUE", help="strategy parameter (repeatable)"
    )
    parser.add_argument("--rank", type=int, help="base rank (lora_r) the strategy scales from")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=_count, help="trainable-parameter budget, e.g. 3145728, 3.1M or 1.2B")
    budget.add_argument("--budget-rank", type=int, help="budget of uniform rank R")
    parser.add_argument("--alpha-policy", default=DEFAULTS.alpha_policy, help="proportional (default), constant or rslora")
    parser.add_argument(
        "--lora-alpha",
        type=float,
        default=DEFAULTS.lora_alpha,
        help="alpha (proportional: alpha/lora_r is kept for every module)",
    )
    parser.add_argument("--min-rank", type=int, default=DEFAULTS.min_rank)
    parser.add_argument("--max-rank", type=int, default=DEFAULTS.max_rank)
    parser.add_argument("--target-modules", help="comma-separated leaf names or roles (q,k,v,o,qkv,up,gate,down); default all")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--out", help="write the allocation JSON here")
    parser.add_argument("--peft-config", metavar="DIR", help="write a PEFT adapter_config.json into DIR")
    parser.add_argument("--json", action="store_true", help="print a machine-readable plan")
    probe = parser.add_argument_group("data-driven strategies (gradient_importance, eva, spectrum: real weights are loaded)")
    probe.add_argument(
        "--data", help="training data the probe reads (builtin, skills, a data file, a dataset directory or a hub id)"
    )
    probe.add_argument(
        "--sequence-len", type=int, default=TrainingConfig.sequence_len, help="token limit per row, as training.sequence_len"
    )
    probe.add_argument("--max-samples", type=int, help="rows used before the train/eval split, as data.max_samples")
    probe.add_argument(
        "--seed", type=int, default=TrainingConfig.seed, help="seed of the probe's batch selection, as training.seed"
    )
    parser.set_defaults(func=cmd_plan)


def _count(text: str) -> int:
    from ..errors import UserError

    try:
        return parse_count(text, "--budget")
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_strategies(args) -> int:
    from ..strategies import all_strategies

    for strategy in all_strategies():
        print(f"{strategy.name:18s} {strategy.description}")
        for p in strategy.params:
            default = "" if p.default is None else f" (default {p.default})"
            print(f"{'':18s}   {p.name}: {p.help}{default}")
    return 0


def cmd_plan(args) -> int:
    from ..config import DataConfig
    from ..planning import plan
    from .plan_view import format_plan, plan_json

    data = DataConfig(source=args.data, max_samples=args.max_samples) if args.data else None
    allocation = plan(
        args.model,
        args.strategy,
        dict(parse_override(item) for item in args.params),
        rank=args.rank,
        budget=args.budget,
        budget_rank=args.budget_rank,
        alpha_policy=args.alpha_policy,
        lora_alpha=args.lora_alpha,
        min_rank=args.min_rank,
        max_rank=args.max_rank,
        trust_remote_code=args.trust_remote_code,
        target_modules=[t.strip() for t in args.target_modules.split(",")] if args.target_modules else None,
        data=data,
        seed=args.seed,
        sequence_len=args.sequence_len,
    )
    if args.out:
        allocation.save(args.out)
    if args.peft_config:
        allocation.to_peft_config().save_pretrained(args.peft_config)
    if args.json:
        print(json.dumps(plan_json(allocation), indent=2))
    else:
        print(format_plan(allocation, model=args.model))
        for path, what in ((args.out, "allocation"), (args.peft_config, "PEFT config")):
            if path:
                print(f"wrote {what} to {path}")
    return 0
