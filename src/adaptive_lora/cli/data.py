"""`adaptive-lora data inspect SOURCE`: rows kept and dropped, token lengths and the first example."""

from __future__ import annotations

import json
import sys

MASK_OPEN, MASK_CLOSE = "[masked]", "[/masked]"


def add_parsers(commands) -> None:
    data = commands.add_parser("data", help="inspect instruction data before training")
    data_cmds = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_cmds.required = True
    inspect = data_cmds.add_parser(
        "inspect",
        help="rows kept/dropped, token lengths and the first formatted example of a data source",
        description="Read a data source (builtin, skills, a .json/.jsonl/.csv/.tsv/.parquet file, a dataset directory or a hub id) "
        "the way training does, and print what was kept, dropped and why, token-length percentiles and the first example.",
    )
    inspect.add_argument("source", metavar="SOURCE", help="builtin, skills, a data file, a dataset directory or a hub id")
    inspect.add_argument("--model", default="embedded", help="model whose tokenizer is used (default: embedded)")
    inspect.add_argument(
        "--format", default="auto", choices=["auto", "alpaca", "chat", "seed"], help="prompt format (default: auto)"
    )
    inspect.add_argument("--sequence-len", type=int, default=256, help="count rows longer than this many tokens (default: 256)")
    inspect.add_argument(
        "--field-map",
        nargs="+",
        action="extend",
        metavar="FIELD=COLUMN",
        default=[],
        help="read FIELD (instruction, input, output, messages, conversations) from COLUMN",
    )
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    inspect.set_defaults(func=cmd_data_inspect)


def cmd_data_inspect(args) -> int:
    from ..data.inspection import inspect_source, parse_field_map
    from ..io import finite_or_none
    from ..models import load_tokenizer

    field_map = parse_field_map(args.field_map)
    tokenizer = load_tokenizer(args.model)
    summary = inspect_source(args.source, tokenizer, args.format, args.sequence_len, field_map)
    summary["model"] = args.model
    if args.json:
        print(json.dumps(finite_or_none(summary), ensure_ascii=False))
    else:
        print_summary(summary)
    return 0


def print_summary(summary: dict, file=None) -> None:
    from rich.console import Console
    from rich.text import Text

    from ..data.inspection import row_unit, summary_lines

    # rich styles the masked span on a terminal and prints plain text when piped; soft_wrap
    # keeps long lines intact instead of re-wrapping them at the terminal width.
    console = Console(file=file or sys.stdout, soft_wrap=True, highlight=False, emoji=False, markup=False)
    for line in summary_lines(summary):
        console.print(line)
    example = summary["example"]
    console.print(
        f"\nfirst example ({row_unit(summary)} {example['row']}, {example['prompt_tokens']} prompt + "
        f"{example['response_tokens']} response tokens; {MASK_OPEN}...{MASK_CLOSE} = prompt, label -100, no loss):"
    )
    text = Text()
    text.append(MASK_OPEN + example["prompt"] + MASK_CLOSE, style="dim")
    text.append(example["response"], style="bold")
    console.print(text)
