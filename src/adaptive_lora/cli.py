"""Command-line interface: `adaptive-lora {strategies,plan,data,train,run,report}`.

Every command turns a `UserError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-lora", description="Layerwise LoRA rank allocation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_strategies_parser(commands)
    _add_plan_parser(commands)
    # --- data commands (owned by the data module) ---
    # --- end data commands ---
    return parser


def _add_strategies_parser(commands) -> None:
    parser = commands.add_parser("strategies", help="list rank-allocation strategies and their parameters")
    parser.set_defaults(func=cmd_strategies)


def _add_plan_parser(commands) -> None:
    parser = commands.add_parser("plan", help="show or export the per-module ranks a strategy gives a model")
    parser.add_argument("--model", default="embedded", help="embedded (default), a hub id, or a local model directory (config.json is enough)")
    parser.add_argument("--strategy", default="uniform", help="strategy name (see `adaptive-lora strategies`)")
    parser.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE", help="strategy parameter (repeatable)")
    parser.add_argument("--rank", type=int, help="base rank (lora_r) the strategy scales from")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget", type=_parse_count, help="trainable-parameter budget, e.g. 3145728 or 3.1M")
    budget.add_argument("--budget-rank", type=int, help="budget of uniform rank R")
    parser.add_argument("--alpha-policy", default="proportional", help="proportional (default), constant or rslora")
    parser.add_argument("--lora-alpha", type=float, default=16.0, help="alpha (proportional: alpha/lora_r is kept for every module)")
    parser.add_argument("--min-rank", type=int, default=1)
    parser.add_argument("--max-rank", type=int, default=256)
    parser.add_argument("--target-modules", help="comma-separated leaf names or roles (q,k,v,o,qkv,up,gate,down); default all")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--out", help="write the allocation JSON here")
    parser.add_argument("--peft-config", metavar="DIR", help="write a PEFT adapter_config.json into DIR")
    parser.add_argument("--json", action="store_true", help="print a machine-readable plan")
    parser.set_defaults(func=cmd_plan)


def _parse_count(text: str) -> int:
    scale = {"k": 1e3, "m": 1e6, "b": 1e9}.get(text[-1:].lower(), 1)
    try:
        return int(round(float(text[:-1] if scale != 1 else text) * scale))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a parameter count (e.g. 3145728 or 3.1M)") from None


def _parse_key_values(items: list[str], what: str) -> dict:
    from .config import parse_override

    return dict(parse_override(item) for item in items)


def cmd_strategies(args) -> int:
    from .strategies import all_strategies

    for strategy in all_strategies():
        print(f"{strategy.name:18s} {strategy.description}")
        for p in strategy.params:
            default = "" if p.default is None else f" (default {p.default})"
            print(f"{'':18s}   {p.name}: {p.help}{default}")
    return 0


def cmd_plan(args) -> int:
    import json

    from .planning import plan
    from .report_plan import format_plan, plan_json

    allocation = plan(
        args.model, args.strategy, _parse_key_values(args.params, "--set"), rank=args.rank, budget=args.budget,
        budget_rank=args.budget_rank, alpha_policy=args.alpha_policy, lora_alpha=args.lora_alpha,
        min_rank=args.min_rank, max_rank=args.max_rank, trust_remote_code=args.trust_remote_code,
        target_modules=[t.strip() for t in args.target_modules.split(",")] if args.target_modules else None,
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
