"""`adaptive-lora export RUN`: the merged model, the adapter alone, a TRL snippet, an axolotl fragment."""

from __future__ import annotations

DTYPES = ("float32", "bfloat16", "float16")  # export.DTYPES; repeated so --help stays torch-free


def add_parsers(commands) -> None:
    parser = commands.add_parser(
        "export", help="export a finished run: merged model, adapter, TRL snippet (printed), axolotl config fragment"
    )
    parser.add_argument("run_dir", metavar="RUN", help="a finished run directory (from `train`, or a sweep's runs/<id>)")
    parser.add_argument(
        "--merged", metavar="OUT", help="write the base model with the adapter merged in (new or empty directory)"
    )
    parser.add_argument("--dtype", default="float32", choices=DTYPES, help="weights dtype of --merged (merged in float32)")
    parser.add_argument("--peft", metavar="OUT", help="write the adapter alone, loadable by PEFT (new or empty directory)")
    parser.add_argument("--axolotl", metavar="OUT.yaml", help="write the LoRA keys of an axolotl (>= 0.19) config")
    parser.set_defaults(func=cmd_export)


def cmd_export(args) -> int:
    import sys
    from pathlib import Path

    from ..errors import UserError
    from ..export import (
        check_new_output,
        dropped_by_retraining,
        export_axolotl,
        export_merged,
        export_peft,
        load_run_allocation,
        open_run,
        trl_snippet,
    )

    run = open_run(args.run_dir)
    dirs = [Path(p).expanduser().absolute() for p in (args.merged, args.peft) if p]
    if len(set(dirs)) < len(dirs):
        raise UserError(f"--merged and --peft both name {dirs[0]}: give two different directories")
    for path in (args.merged, args.peft):
        if path:
            check_new_output(path)
    if args.axolotl:
        check_new_output(args.axolotl, kind="file")
    allocation = load_run_allocation(run)
    if dropped := dropped_by_retraining(run, allocation):
        print(f"warning: {dropped}", file=sys.stderr)  # stderr: stdout may be saved as the script
    print(trl_snippet(run, allocation))
    print()
    if args.axolotl:
        print(f"wrote the axolotl LoRA keys to {export_axolotl(run, allocation, args.axolotl)}")
    if args.peft:
        print(f"wrote the adapter to {export_peft(run, args.peft)}")
    if args.merged:
        print(f"wrote the merged model ({args.dtype}) to {export_merged(run, args.merged, args.dtype)}")
    return 0
