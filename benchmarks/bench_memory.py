"""Peak memory of the main job (the seed-study suite), each measurement in a fresh process.

    one run   the suite's first run (uniform r8: embedded SmolLM2-135M, micro batch 8, sequence_len 256,
              160 built-in rows) for --steps optimizer steps, through `adaptive_lora.train`
    --full    the whole suite, `--executor local`: one process trains all its runs on one shared base

The figure is the peak RSS of the fresh process that did the work (VmHWM on Linux, read by that
process when it finishes), compared with the limit (2.5 GB). Training tokens/s of each run are printed
beside it (result.json's tokens_per_s: real tokens per second of training, evaluation excluded).

Usage: .venv/bin/python benchmarks/bench_memory.py [--steps 4] [--full] [--limit-gb 2.5] [--json out.json] [KEY=VALUE ...]
KEY=VALUE are suite overrides, e.g. training.token_budget=0 (one pass per batch, the previous behaviour).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

GB = 1e9


def measure(steps: int, full: bool, overrides: list[str], work_dir: Path) -> dict:
    """Runs in the fresh child process: the work, then its own peak RSS."""
    from adaptive_lora.environment import peak_rss_bytes
    from adaptive_lora.sweep.executors import SweepOptions
    from adaptive_lora.sweep.runner import run_sweep
    from adaptive_lora.sweep.suite import load_suite
    from adaptive_lora.training import train

    suite = load_suite("seed-study", overrides)
    if full:
        run_sweep(suite, work_dir / "sweep", SweepOptions(executor="local", quiet=True))
        results = [json.loads(p.read_text()) for p in sorted((work_dir / "sweep" / "runs").glob("*/result.json"))]
    else:
        spec = suite.runs[0]
        config = spec.config.with_overrides({"training.max_steps": steps, "output.dir": str(work_dir / "run")})
        results = [train(config, labels={"label": spec.label})]
    runs = [
        {k: r.get(k) for k in ("label", "status", "steps", "tokens_per_s", "train_time_s", "eval_loss", "error")} for r in results
    ]
    return {"peak_rss_bytes": peak_rss_bytes(), "runs": runs}


def run_fresh(steps: int, full: bool, overrides: list[str]) -> dict:
    """`measure` in a new interpreter, so nothing this process loaded counts."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as work:
        command = [sys.executable, __file__, "--child", work, "--steps", str(steps), *(["--full"] if full else []), *overrides]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the measured process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def report(figures: dict, limit_gb: float) -> bool:
    what = "whole seed-study suite, local executor" if figures["full"] else f"seed-study first run, {figures['steps']} steps"
    peak = figures["peak_rss_bytes"] / GB
    ok = peak <= limit_gb
    print(f"{what}{' with ' + ' '.join(figures['overrides']) if figures['overrides'] else ''}")
    print(f"peak RSS of a fresh process: {peak:.2f} GB (limit {limit_gb:g} GB)  {'PASS' if ok else 'FAIL'}")
    for run in figures["runs"]:
        speed = f"{run['tokens_per_s']:.0f} training tokens/s" if run.get("tokens_per_s") else "no tokens/s"
        print(f"  {run.get('label') or '?':24s} {run['status']:8s} {run.get('steps') or 0:3d} steps  {speed}")
        if run.get("error"):
            print(f"    error: {run['error']}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps of the single run (ignored with --full)")
    parser.add_argument("--full", action="store_true", help="the whole suite in one process (local executor)")
    parser.add_argument("--limit-gb", type=float, default=2.5)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run `measure` here, in this work directory
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.steps, args.full, args.overrides, Path(args.child))))
        return
    figures = {
        "full": args.full,
        "steps": args.steps,
        "overrides": args.overrides,
        **run_fresh(args.steps, args.full, args.overrides),
    }
    figures["limit_gb"] = args.limit_gb
    figures["pass"] = report(figures, args.limit_gb) and all(r["status"] == "done" for r in figures["runs"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    sys.exit(0 if figures["pass"] else 1)


if __name__ == "__main__":
    main()
