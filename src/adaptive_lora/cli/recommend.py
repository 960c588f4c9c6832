"""`adaptive-lora recommend SWEEP`: the allocation to use per budget, with the evidence against uniform."""

from __future__ import annotations

import json

DEFAULT_METRIC = "eval_loss"  # recommend.VALIDATION_LOSS.column; repeated so --help stays torch-free


def add_parsers(commands) -> None:
    parser = commands.add_parser(
        "recommend",
        help="recommend a rank allocation from a finished sweep (the best strategy if it beat uniform detectably)",
    )
    parser.add_argument("sweep", metavar="SWEEP", help="a sweep directory (the --out of `adaptive-lora run`)")
    parser.add_argument("--budget", metavar="B", help="only this budget, by its label (e.g. r8); default every budget")
    parser.add_argument(
        "--metric",
        default=DEFAULT_METRIC,
        metavar="M",
        help="validation metric to choose on: eval_loss (default), perplexity, improvement or forgetting_delta; "
        "never a test metric",
    )
    parser.add_argument(
        "--model",
        metavar="NAME",
        help="transfer the recommended shape to this model (hub id or local directory; its config alone is read)",
    )
    parser.add_argument("--out", metavar="DIR", help="output directory (default SWEEP/recommended; new, empty or an earlier one)")
    parser.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    parser.set_defaults(func=cmd_recommend)


def cmd_recommend(args) -> int:
    from pathlib import Path

    from ..io import finite_or_none
    from ..recommend import DEFAULT_OUT, check_output_dir, recommend, recommended_allocations, write_recommendation

    out = check_output_dir(args.out or Path(args.sweep) / DEFAULT_OUT)  # refuse a user's directory before any work
    rec = recommend(args.sweep, args.budget, args.metric)
    rec.model = args.model
    path = write_recommendation(rec, recommended_allocations(rec, args.model), out)
    if args.json:
        print(json.dumps(finite_or_none(rec.to_dict()), indent=2, allow_nan=False))
    else:
        print(format_recommendation(rec))
        print(f"\nwrote {path}")
    return 0


def _value(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _signed(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.001" if value < 0.001 else f"{value:.3g}"


def format_evidence(e) -> str:
    """One line: metric, both means, the effect with its 95% CI, Holm p, MDE and the verdict."""
    direction = "higher is better" if e.higher_is_better else "lower is better"
    return (
        f"    {e.metric_name} ({direction}): {_value(e.group_mean)} vs {_value(e.baseline_mean)}; "
        f"effect {_signed(e.mean_diff)} [95% CI {_signed(e.ci_low)}, {_signed(e.ci_high)}], "
        f"Holm p {_p(e.p_holm)}, MDE {_value(e.mde)}, {e.n_pairs} seeds: {e.verdict}"
    )


def format_recommendation(rec) -> str:
    """The human summary: per budget the pick, the evidence, the plain sentence and the files."""
    direction = "higher is better" if rec.higher_is_better else "lower is better"
    lines = [f"recommendation from {rec.sweep}, chosen on {rec.metric_name} ({direction})"]
    for choice in rec.budgets:
        lines.append("")
        lines.append(f"budget {choice.budget}: {choice.recommended}")
        if choice.best is not None:
            if choice.beat_baseline:
                lines.append(f"  best strategy {choice.best}, detectably better than {choice.baseline}:")
            else:
                lines.append(
                    f"  best non-{choice.baseline} strategy {choice.best}, not detectably better than {choice.baseline}:"
                )
            lines += [format_evidence(e) for e in choice.evidence]
        lines.append(f"  {choice.statement}.")
        rate = "" if choice.learning_rate is None else f", learning rate {choice.learning_rate:g}"
        lines.append(f"  allocation of run {choice.run_dir} (seed {choice.seed}{rate}, model {choice.source_model})")
        if choice.allocation:
            a = choice.allocation
            target = f" for {rec.model}" if rec.model else ""
            lines.append(
                f"  {a['trainable_params']:,} trainable parameters{target} on {', '.join(a['ranks_by_role'])}, "
                f"ranks {a['min_rank']}-{a['max_rank']} (mean {a['mean_rank']:.1f})"
            )
            if a.get("not_transferred"):
                lines.append(
                    f"  not transferred: role(s) {', '.join(a['not_transferred'])} of the recommended run, which "
                    f"{rec.model} has no counterpart for (a fused qkv counts only for q, k and v together)"
                )
        for what, path in choice.files.items():
            lines.append(f"  wrote {what}: {path}")
    return "\n".join(lines)
