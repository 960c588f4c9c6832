"""`adaptive-lora train`: one adapter."""

from __future__ import annotations


def add_parsers(commands) -> None:
    parser = commands.add_parser("train", help="fine-tune one adapter with any allocation")
    parser.add_argument("config", nargs="?", help="run config YAML (sections model, data, allocation, training, eval, output)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. training.max_steps=3 data.max_samples=40"
    )
    parser.add_argument("--model", help="embedded (default), a hub id or a local model directory")
    parser.add_argument(
        "--data", help="builtin (default), skills, a JSON/JSONL/CSV/Parquet file, a dataset directory or a hub id"
    )
    parser.add_argument("--strategy", help="allocation strategy (see `adaptive-lora strategies`)")
    parser.add_argument("--out", help="run directory (default runs/<strategy>-<id>); must be new, empty or a run directory")
    parser.add_argument(
        "--overwrite", action="store_true", help="redo a finished run directory (only its run files are replaced)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last complete checkpoint (needs training.save_steps)"
    )
    parser.set_defaults(func=cmd_train)


def split_config_and_overrides(config: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """argparse puts a first key=value into the positional file argument; move it back."""
    if config and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, overrides


def cmd_train(args) -> int:
    from ..config import load_run_config
    from ..sweep.progress import RunProgress
    from ..training import finished_run_of, resolved_config, train
    from ..workdirs import check_run_dir

    config_path, overrides = split_config_and_overrides(args.config, args.overrides)
    flags = {
        "model.name": args.model,
        "data.source": args.data,
        "allocation.strategy": args.strategy,
        "output.dir": args.out,
        "output.overwrite": args.overwrite or None,
        "output.resume": args.resume or None,
    }
    cfg = load_run_config(config_path, overrides).with_overrides({k: v for k, v in flags.items() if v is not None})
    cfg = resolved_config(cfg)
    check_run_dir(cfg.output.dir)
    if not cfg.output.overwrite and finished_run_of(cfg):
        print(f"{cfg.output.dir} already holds a finished run; nothing to do (use --overwrite to train it again)")
        return 0
    result = train(cfg, progress=RunProgress.standalone())
    print_result(result, cfg.output.dir)
    return 0 if result["status"] == "done" else 1


def print_result(result: dict, run_dir: str) -> None:
    status = result["status"]
    if status == "done":
        print(
            f"done: eval loss {result['eval_loss']:.4f} (base {result['base_eval_loss']:.4f}, "
            f"improvement {result['improvement']:+.4f}), {result['trainable_params']:,} trainable parameters, "
            f"{result['train_time_s']:.1f}s, {result['tokens_per_s']:.0f} tokens/s"
        )
    elif status == "diverged":
        print(f"diverged at step {result['diverged_step']} (last finite loss {result['last_finite_loss']}): {result['error']}")
    else:
        print(f"{status}: {result['error']}")
    print(f"run directory: {run_dir}")
