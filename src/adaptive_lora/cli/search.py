"""`adaptive-lora search`: a budget-matched allocation by multi-fidelity search, judged against uniform."""

from __future__ import annotations

from ..search.settings import PRUNERS, SearchConfig

SEARCH_PREFIX = "search."


def add_parsers(commands) -> None:
    d = SearchConfig()
    parser = commands.add_parser(
        "search",
        help="search the profile family (Optuna TPE, pruning) at a budget, then retrain the best and uniform on fresh seeds",
        description="Search rank allocations of the `profile` family and the learning rate at a fixed budget, then judge the "
        "best against uniform on the test split (docs/search.md). Settings: a run config and key=value overrides as for `train`; "
        "search.FIELD=VALUE sets any search setting.",
    )
    parser.add_argument("config", nargs="?", help="run config YAML (model, data, allocation, training, eval)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data.source=skills data.test_set_size=60 search.knots=4"
    )
    parser.add_argument("--model", help="embedded (default), a hub id or a local model directory")
    parser.add_argument("--data", help="builtin (default), skills, a data file, a dataset directory or a hub id")
    parser.add_argument("--budget", help=f"r8 (uniform rank 8's parameters, default {d.budget}) or a parameter count (1.5M)")
    parser.add_argument(
        "--out", default="searches/search", help="search directory (default searches/search); run again to resume"
    )
    parser.add_argument("--trials", type=int, help=f"trials the study holds when it stops, over all workers (default {d.trials})")
    parser.add_argument("--timeout", type=float, help="seconds: no new trial starts after this (Optuna's timeout)")
    parser.add_argument("--workers", type=int, help="worker processes on this machine sharing the study (default 1)")
    parser.add_argument("--storage", help="Optuna storage URL, e.g. postgresql://user@host/db (default: SQLite in --out)")
    parser.add_argument("--study", help="study name (default: derived from the settings, so equal searches share it)")
    parser.add_argument("--knots", type=int, help=f"depth-profile knots (default {d.knots}; 1: no depth profile)")
    parser.add_argument("--roles", help="grouped (default), individual, none, or groups such as q+k,v,o,up+gate+down")
    parser.add_argument(
        "--lr", help=f"learning-rate range LOW:HIGH, log-uniform (default {d.lr_min:g}:{d.lr_max:g}); one value fixes it"
    )
    parser.add_argument("--pruner", choices=PRUNERS, help=f"default {d.pruner}")
    parser.add_argument("--top", type=int, help=f"final stage: the best k distinct allocations (default {d.top})")
    parser.add_argument("--final-seeds", help=f"final stage seeds, comma-separated (default {','.join(map(str, d.final_seeds))})")
    parser.add_argument("--seed", type=int, help=f"the search's seed (default {d.seed}); the final stage uses others")
    parser.add_argument("--no-final", action="store_true", help="only run trials (a worker on another machine)")
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    parser.add_argument("--list", action="store_true", help="show the space and the budget, and exit")
    parser.set_defaults(func=cmd_search)


def search_values(args, overrides: list[str]) -> tuple[dict, list[str]]:
    """The search settings from flags and search.* overrides; the other overrides are the run's."""
    from ..config import parse_override
    from ..errors import UserError

    values: dict = {}
    run_overrides = []
    for text in overrides:
        key, value = parse_override(text)
        if key.startswith(SEARCH_PREFIX):
            values[key[len(SEARCH_PREFIX) :]] = value
        else:
            run_overrides.append(text)
    flags = {
        "budget": args.budget,
        "trials": args.trials,
        "timeout": args.timeout,
        "workers": args.workers,
        "storage": args.storage,
        "study": args.study,
        "knots": args.knots,
        "roles": args.roles,
        "pruner": args.pruner,
        "top": args.top,
        "seed": args.seed,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.lr:
        low, _, high = args.lr.partition(":")
        try:
            values["lr_min"], values["lr_max"] = float(low), float(high or low)
        except ValueError:
            raise UserError(f"search --lr {args.lr!r}: give LOW:HIGH (e.g. 1e-4:3e-3) or one rate") from None
    if args.final_seeds:
        try:
            values["final_seeds"] = [int(s) for s in args.final_seeds.split(",") if s.strip()]
        except ValueError:
            raise UserError(
                f"search --final-seeds {args.final_seeds!r}: give whole numbers separated by commas, e.g. 1,2,3"
            ) from None
    if args.no_final:
        values["final"] = False
    if args.quiet:
        values["quiet"] = True
    return values, run_overrides


def cmd_search(args) -> int:
    from ..config import load_run_config
    from ..search.runner import describe, prepare
    from ..search.settings import search_config
    from .train import split_config_and_overrides

    config_path, overrides = split_config_and_overrides(args.config, list(args.overrides))
    values, run_overrides = search_values(args, overrides)
    cfg = search_config(values, "search")
    flags = {"model.name": args.model, "data.source": args.data}
    run = load_run_config(config_path, run_overrides).with_overrides({k: v for k, v in flags.items() if v is not None})
    plan = prepare(run, cfg)
    if args.list:
        print("\n".join(describe(plan)))
        return 0
    from ..report import write_report
    from ..search.runner import run_search

    summary = run_search(plan, args.out)
    print(f"search: {summary['trials']} trials ended in study {summary['study']} ({summary['search_dir']})")
    if "final_dir" not in summary:
        return 0
    if summary["interrupted"]:
        return 130
    report = write_report(summary["final_dir"])
    print(f"final stage report: {report['report_html']} and {report['report_md']}")
    return 0
