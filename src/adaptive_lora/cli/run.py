"""`adaptive-lora run` (a suite) and `adaptive-lora report` (a sweep directory)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..sweep.executors import CLAIMED, SweepOptions


def add_parsers(commands) -> None:
    defaults = SweepOptions()
    parser = commands.add_parser("run", help="run a suite (strategies x budgets x seeds) and write its report")
    parser.add_argument("suite", nargs="?", help="built-in suite name (default seed-study) or a suite YAML file")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.max_steps=2 seeds=[0,1,2]"
    )
    parser.add_argument("--out", help="sweep directory (default: the suite's output.dir, else sweeps/<suite name>)")
    parser.add_argument("--executor", default=defaults.executor, help="local (default, one process), processes, or ray")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="worker processes for --executor processes")
    parser.add_argument("--ray-address", help="Ray cluster address (e.g. auto); default starts a local Ray")
    parser.add_argument("--cpus-per-run", type=float, default=defaults.cpus_per_run, help="Ray resources per run")
    parser.add_argument("--gpus-per-run", type=float, default=defaults.gpus_per_run, help="Ray resources per run")
    parser.add_argument("--retry-failed", action="store_true", help="rerun diverged, oom and error runs")
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")
    parser.add_argument("--list", action="store_true", help="list the runs the suite expands to, and exit")
    parser.set_defaults(func=cmd_run)

    parser = commands.add_parser("report", help="(re)write CSV, Markdown and HTML reports for a sweep directory")
    parser.add_argument("sweep_dir", help="a directory written by `adaptive-lora run`")
    parser.set_defaults(func=cmd_report)


def cmd_run(args) -> int:
    from ..sweep.runner import pin_precision
    from ..sweep.suite import load_suite
    from .train import split_config_and_overrides

    suite_name, overrides = split_config_and_overrides(args.suite, list(args.overrides))
    suite = pin_precision(load_suite(suite_name, overrides))
    out = Path(args.out or suite.output_dir)
    if args.list:
        return list_runs(suite, out, args.retry_failed)
    from ..report import write_report
    from ..sweep.runner import run_sweep
    from ..workdirs import check_sweep_dir

    check_sweep_dir(out)
    print(f"suite {suite.name}: {suite.expected_runs()} runs -> {out}")
    options = SweepOptions(
        args.executor, args.workers, args.ray_address, args.cpus_per_run, args.gpus_per_run, args.retry_failed, args.quiet
    )
    summary = run_sweep(suite, out, options)
    if summary["interrupted"]:
        return 130
    counts: dict[str, int] = {}
    for status in summary["statuses"].values():
        counts[status] = counts.get(status, 0) + 1
    print("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    report = write_report(out)
    print(f"report: {report['report_html']} and {report['report_md']}")
    if not any(status in ("done", CLAIMED) for status in summary["statuses"].values()):  # claimed: another process may finish it
        print(
            f"error: no run of {out} finished ({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'no runs'}); "
            f"each run's error is in {report['report_md']}: fix the cause and rerun them with --retry-failed",
            file=sys.stderr,
        )
        return 1
    return 0


def list_runs(suite, out: Path, retry_failed: bool) -> int:
    """Print every run the suite expands to, with what a `run` would do with it."""
    from ..sweep.runner import plan_work, results_of
    from ..sweep.selection import choose_rates

    todo, _ = plan_work(suite.runs, out, retry_failed)
    todo_ids = {spec.run_id for spec in todo}
    choices = choose_rates(suite, results_of(suite.selection_runs(), out)) if suite.staged else {}
    for spec in suite.runs:
        state = "to run" if spec.run_id in todo_ids else "skip"
        if suite.staged and not spec.selection:
            chosen = choices.get(spec.group)
            if chosen is None or chosen.chosen is None:
                state = "runs if this rate is chosen"
            elif chosen.chosen != spec.learning_rate:
                state = "not run (another rate was chosen)"
        rate = f" lr {spec.learning_rate:g}" if spec.learning_rate is not None else ""
        print(f"{spec.run_id}  {spec.label} [{spec.budget.label}]{rate} seed {spec.seed}  ({state})")
    if suite.staged:
        print(
            f"{len(suite.runs)} runs listed; the sweep trains {suite.expected_runs()}: every rate on seeds "
            f"{suite.selection_seeds}, then the other seeds at each strategy's chosen rate"
        )
    else:
        print(f"{len(suite.runs)} runs")
    return 0


def cmd_report(args) -> int:
    from ..report import write_report

    report = write_report(args.sweep_dir)
    print(f"{report['n_runs']} runs; wrote {report['report_md']} and {report['report_html']}")
    for skipped in report.get("skipped", []):
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    for other in report.get("others", []):
        print(f"not included (another configuration) {other['path']}: {other['reason']}")
    return 0
