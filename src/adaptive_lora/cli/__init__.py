"""Command-line interface: `adaptive-lora COMMAND`, one module per command group.

Every command turns a `UserError` into one line on stderr and exit code 2. Commands import their
heavy dependencies (torch, transformers) when they run, so `--help` and `strategies` stay quick.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from ..errors import UserError
from . import data, doctor, export, plan, recommend, run, search, train

COMMAND_GROUPS = (plan, data, train, run, search, export, doctor, recommend)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adaptive-lora", description="Layerwise LoRA rank allocation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for group in COMMAND_GROUPS:
        group.add_parsers(commands)
    return parser


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
