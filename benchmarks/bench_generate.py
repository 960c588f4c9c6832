"""Generation benchmark on the embedded model: batched greedy decoding vs one prompt at a time, and bf16 vs fp32.

The same built-in prompts (chat format, as in training) are decoded every way in one process,
alternating round by round so machine noise hits all alike; each way is timed over all prompts and
the faster round is kept. Tokens are counted as generated (up to and including the stop token).
Batched and one-at-a-time outputs should agree (fp32 on CPU: all); bf16 rounds differently, so the run
counts the prompts whose bf16 output is identical to fp32's.

bf16 (base weights bf16, matmuls under autocast, as evaluation runs) is measured by default only where it runs on
hardware (a GPU, or a CPU with AMX or AVX512-BF16); --precisions fp32,bf16 measures it anyway.

Usage: .venv/bin/python benchmarks/bench_generate.py [--prompts 32] [--max-new-tokens 32] [--batch-size 16]
       [--rounds 1] [--device auto] [--threads N] [--precisions fp32,bf16] [--quick] [--json out.json]
Target: bf16 batched decoding >= 1.6x fp32, with the same outputs on most prompts.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from adaptive_lora.data import load_records, resolve_prompt_format
from adaptive_lora.environment import autocast_dtype, cpu_features, load_dtype, resolve_device, resolve_precision
from adaptive_lora.evaluation import greedy_generate, prompt_ids_for
from adaptive_lora.models import load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32, help="built-in rows to answer")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1, help="timed rounds per way (the fastest is kept)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is faster on a busy shared machine)")
    parser.add_argument("--precisions", help="comma-separated, of fp32 and bf16 (default: both where bf16 runs on hardware)")
    parser.add_argument("--quick", action="store_true", help="8 prompts, 16 new tokens, batch 8: a smoke test")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens, args.batch_size = 8, 16, 8

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.precisions:
        precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    else:
        precisions = ["fp32", "bf16"] if resolve_precision("auto", device) == "bf16" else ["fp32"]
    tokenizer = load_tokenizer("embedded")
    models = {p: load_model("embedded", dtype=load_dtype(resolve_precision(p, device)), device=device).eval() for p in precisions}
    records, _ = load_records("builtin")
    prompt_format = resolve_prompt_format("auto", tokenizer)
    prompts = prompt_ids_for(records[: args.prompts], tokenizer, prompt_format)

    ways = {f"batched {p}": (p, args.batch_size) for p in precisions}
    ways[f"one-at-a-time {precisions[0]}"] = (precisions[0], 1)
    for p in precisions:
        greedy_generate(models[p], tokenizer, prompts[:2], 2, 2, device, autocast_dtype(p))  # warm-up
    best = {}
    for _ in range(args.rounds):
        for name, (p, batch_size) in ways.items():
            out = greedy_generate(models[p], tokenizer, prompts, args.max_new_tokens, batch_size, device, autocast_dtype(p))
            if name not in best or out.seconds < best[name].seconds:
                best[name] = out

    first = precisions[0]
    results = {
        "device": device,
        "cpu": cpu_features() if device == "cpu" else None,
        "precisions": precisions,
        "threads": torch.get_num_threads(),
        "prompts": len(prompts),
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "prompt_format": prompt_format,
        "ways": {
            name: {
                "precision": ways[name][0],
                "batch_size": ways[name][1],
                "seconds": out.seconds,
                "new_tokens": sum(out.new_tokens),
                "tokens_per_s": out.tokens_per_s,
            }
            for name, out in best.items()
        },
        "speedup": best[f"batched {first}"].tokens_per_s / best[f"one-at-a-time {first}"].tokens_per_s,
        "same_outputs": _same(best[f"batched {first}"], best[f"one-at-a-time {first}"]),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    if {"fp32", "bf16"} <= set(precisions):
        results["bf16_vs_fp32"] = best["batched bf16"].tokens_per_s / best["batched fp32"].tokens_per_s
        results["bf16_same_as_fp32"] = _same(best["batched bf16"], best["batched fp32"])
    report(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


def _same(a, b) -> int:
    return sum(x == y for x, y in zip(a.texts, b.texts))


def report(r: dict) -> None:
    cpu = f", CPU {r['cpu']['cpu_capability']}, bf16 units: {'yes' if r['cpu']['cpu_bf16'] else 'no'}" if r["cpu"] else ""
    print(
        f"device {r['device']} ({', '.join(r['precisions'])}, {r['threads']} threads{cpu}), {r['prompts']} built-in prompts "
        f"({r['prompt_format']}, mean {r['prompt_tokens_mean']:.0f} tokens), max {r['max_new_tokens']} new tokens"
    )
    print(f"{'way':20s} {'batch':>5s} {'seconds':>8s} {'tokens':>7s} {'tokens/s':>9s}")
    for name, w in r["ways"].items():
        print(f"{name:20s} {w['batch_size']:5d} {w['seconds']:8.2f} {w['new_tokens']:7d} {w['tokens_per_s']:9.1f}")
    print(f"batched / one-at-a-time tokens/s: {r['speedup']:.2f}x; identical outputs: {r['same_outputs']}/{r['prompts']}")
    if "bf16_vs_fp32" in r:
        verdict = "PASS" if r["bf16_vs_fp32"] >= 1.6 else "MISS"
        print(
            f"bf16 / fp32 batched tokens/s: {r['bf16_vs_fp32']:.2f}x (target >= 1.6, {verdict}); "
            f"bf16 outputs identical to fp32's: {r['bf16_same_as_fp32']}/{r['prompts']}"
        )


if __name__ == "__main__":
    main()
