"""Command-line interface: `adaptive-lora {strategies,plan,data,train,run,report}`.

Every command turns a `UserError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from .errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-lora", description="Layerwise LoRA rank allocation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    _add_strategies_parser(commands)
    _add_plan_parser(commands)
    _add_train_parser(commands)
    _add_run_parser(commands)
    _add_report_parser(commands)
    # --- data commands (owned by the data module) ---
    def cmd_data_inspect(args):  # imported on use: the data module pulls in pandas/transformers
        from .data import cmd_data_inspect as run

        return run(args)

    data = commands.add_parser("data", help="inspect instruction data before training")
    data_cmds = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_cmds.required = True
    inspect = data_cmds.add_parser(
        "inspect", help="rows kept/dropped, token lengths and the first formatted example of a data source",
        description="Read a data source (builtin, a .json/.jsonl/.csv/.tsv/.parquet file, a dataset directory or a hub id) "
        "the way training does, and print what was kept, dropped and why, token-length percentiles and the first example.",
    )
    inspect.add_argument("source", metavar="SOURCE", help="builtin, a data file, a dataset directory or a hub id")
    inspect.add_argument("--model", default="embedded", help="model whose tokenizer is used (default: embedded)")
    inspect.add_argument("--format", default="auto", choices=["auto", "alpaca", "chat", "seed"], help="prompt format (default: auto)")
    inspect.add_argument("--sequence-len", type=int, default=256, help="count rows longer than this many tokens (default: 256)")
    inspect.add_argument("--field-map", nargs="+", action="extend", metavar="FIELD=COLUMN", default=[],
                         help="read FIELD (instruction, input, output, messages, conversations) from COLUMN")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    inspect.set_defaults(func=cmd_data_inspect)
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
    probe = parser.add_argument_group("data-driven strategies (gradient_importance, eva, spectrum: real weights are loaded)")
    probe.add_argument("--data", help="training data the probe reads (builtin, a data file, a dataset directory or a hub id)")
    probe.add_argument("--sequence-len", type=int, default=256, help="token limit per row, as training.sequence_len (default 256)")
    probe.add_argument("--max-samples", type=int, help="rows used before the train/eval split, as data.max_samples")
    probe.add_argument("--seed", type=int, default=0, help="seed of the probe's batch selection, as training.seed (default 0)")
    parser.set_defaults(func=cmd_plan)


def _parse_count(text: str) -> int:
    scale = {"k": 1e3, "m": 1e6, "b": 1e9}.get(text[-1:].lower(), 1)
    try:
        return int(round(float(text[:-1] if scale != 1 else text) * scale))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a parameter count (e.g. 3145728 or 3.1M)") from None


def _parse_key_values(items: list[str]) -> dict:
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

    model, context = _plan_context(args)
    allocation = plan(
        model, args.strategy, _parse_key_values(args.params), rank=args.rank, budget=args.budget,
        budget_rank=args.budget_rank, alpha_policy=args.alpha_policy, lora_alpha=args.lora_alpha,
        min_rank=args.min_rank, max_rank=args.max_rank, trust_remote_code=args.trust_remote_code,
        target_modules=[t.strip() for t in args.target_modules.split(",")] if args.target_modules else None, **context,
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


def _plan_context(args):
    """The model (real weights only when the strategy measures them) and the probe's data and seed."""
    from .strategies import get_strategy

    needs = get_strategy(args.strategy).needs
    if not needs:
        return args.model, {}
    if "data" in needs and not args.data:
        raise UserError(f"strategy {args.strategy!r} probes training data: add --data SRC (e.g. --data builtin)")
    from .environment import load_dtype, resolve_device, resolve_precision
    from .models import load_model

    device = resolve_device("auto")
    model = load_model(args.model, load_dtype(resolve_precision("auto", device)), device, args.trust_remote_code)
    model.requires_grad_(False)
    model.eval()
    context = {"seed": args.seed}
    if "data" in needs or "tokenizer" in needs:
        from .config import DataConfig
        from .data import prepare_data
        from .models import load_tokenizer

        context["tokenizer"] = load_tokenizer(args.model, args.trust_remote_code)
        if args.data:
            context["data"] = prepare_data(DataConfig(source=args.data, max_samples=args.max_samples), context["tokenizer"], args.sequence_len)
    return model, context


def _add_train_parser(commands) -> None:
    parser = commands.add_parser("train", help="fine-tune one adapter with any allocation")
    parser.add_argument("config", nargs="?", help="run config YAML (sections model, data, allocation, training, output)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.max_steps=3 data.max_samples=40")
    parser.add_argument("--model", help="embedded (default), a hub id or a local model directory")
    parser.add_argument("--data", help="builtin (default), a JSON/JSONL/CSV/Parquet file, a dataset directory or a hub id")
    parser.add_argument("--strategy", help="allocation strategy (see `adaptive-lora strategies`)")
    parser.add_argument("--out", help="run directory (default runs/<strategy>-<id>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint (needs training.save_steps)")
    parser.set_defaults(func=cmd_train)


def _split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a first key=value into `config`; move it back."""
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, overrides


def cmd_train(args) -> int:
    from .config import load_run_config
    from .training import config_id, finished_run_of, train

    config_path, overrides = _split_config_and_overrides(args.config, args.overrides)
    flags = {"model.name": args.model, "data.source": args.data, "allocation.strategy": args.strategy,
             "output.dir": args.out, "output.overwrite": args.overwrite or None, "output.resume": args.resume or None}
    cfg = load_run_config(config_path, overrides).with_overrides({k: v for k, v in flags.items() if v is not None})
    if not args.out and not any(o.startswith("output.dir=") for o in overrides) and not (config_path and _yaml_sets_output_dir(config_path)):
        cfg = cfg.with_overrides({"output.dir": f"runs/{cfg.allocation.strategy}-{config_id(cfg)}"})
    if not cfg.output.overwrite and finished_run_of(cfg):
        print(f"{cfg.output.dir} already holds a finished run; nothing to do (use --overwrite to train it again)")
        return 0
    result = train(cfg, progress=_step_printer())
    _print_result(result, cfg.output.dir)
    return 0 if result["status"] == "done" else 1


def _yaml_sets_output_dir(path: str) -> bool:
    from .config import load_yaml

    return bool((load_yaml(path).get("output") or {}).get("dir"))


def _step_printer():
    from .progress import RunProgress

    return RunProgress.standalone()


def _print_result(result: dict, run_dir: str) -> None:
    status = result["status"]
    if status == "done":
        print(f"done: eval loss {result['eval_loss']:.4f} (base {result['base_eval_loss']:.4f}, "
              f"improvement {result['improvement']:+.4f}), {result['trainable_params']:,} trainable parameters, "
              f"{result['train_time_s']:.1f}s, {result['tokens_per_s']:.0f} tokens/s")
    elif status == "diverged":
        print(f"diverged at step {result['diverged_step']} (last finite loss {result['last_finite_loss']}): {result['error']}")
    else:
        print(f"{status}: {result['error']}")
    print(f"run directory: {run_dir}")


def _add_run_parser(commands) -> None:
    parser = commands.add_parser("run", help="run a suite (strategies x budgets x seeds) and write its report")
    parser.add_argument("suite", nargs="?", help="built-in suite name (default seed-study) or a suite YAML file")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.max_steps=2 seeds=[0,1,2]")
    parser.add_argument("--out", help="sweep directory (default sweeps/<suite name>)")
    parser.add_argument("--executor", default="local", help="local (default, one process), processes, or ray")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for --executor processes")
    parser.add_argument("--ray-address", help="Ray cluster address (e.g. auto); default starts a local Ray")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray resources per run")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray resources per run")
    parser.add_argument("--retry-failed", action="store_true", help="rerun diverged, oom and error runs")
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    parser.add_argument("--list", action="store_true", help="list the runs the suite expands to, and exit")
    parser.set_defaults(func=cmd_run)


def _add_report_parser(commands) -> None:
    parser = commands.add_parser("report", help="(re)write CSV, Markdown and HTML reports for a sweep directory")
    parser.add_argument("sweep_dir", help="a directory written by `adaptive-lora run`")
    parser.set_defaults(func=cmd_report)


def cmd_run(args) -> int:
    from pathlib import Path

    from .suite import load_suite
    from .sweep import SweepOptions, plan_work, run_sweep

    suite_name, overrides = args.suite, list(args.overrides)
    if suite_name and "=" in suite_name and not suite_name.endswith((".yaml", ".yml")):
        suite_name, overrides = None, [suite_name, *overrides]
    suite = load_suite(suite_name, overrides)
    out = args.out or f"sweeps/{suite.name}"
    if args.list:
        todo, _ = plan_work(suite, Path(out), args.retry_failed)
        for spec in suite.runs:
            state = "to run" if spec in todo else "skip"
            print(f"{spec.run_id}  {spec.label} [{spec.budget.label}] seed {spec.seed}  ({state})")
        return 0
    print(f"suite {suite.name}: {len(suite.runs)} runs -> {out}")
    options = SweepOptions(args.executor, args.workers, args.ray_address, args.cpus_per_run, args.gpus_per_run, args.retry_failed, args.quiet)
    summary = run_sweep(suite, out, options)
    if summary["interrupted"]:
        return 130
    counts = {}
    for status in summary["statuses"].values():
        counts[status] = counts.get(status, 0) + 1
    print("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    report = summary.get("report") or {}
    if report:
        print(f"report: {report.get('report_html')} and {report.get('report_md')}")
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from .report import write_report

    if not Path(args.sweep_dir).is_dir():
        raise UserError(f"sweep directory {args.sweep_dir} does not exist; give the --out directory of `adaptive-lora run`")
    report = write_report(args.sweep_dir)
    print(f"{report['n_runs']} runs; wrote {report['report_md']} and {report['report_html']}")
    for skipped in report.get("skipped", []):
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after options too (`train --out d training.max_steps=3`).
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # transformers 5 deprecation notices triggered inside PEFT say nothing actionable to our users.
    warnings.filterwarnings("ignore", message=".*deprecated and will be removed in v6.*", category=FutureWarning)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `adaptive-lora run --list | head`
        return 0
