"""Generation benchmark on the embedded model: batched greedy decoding vs one prompt at a time.

The same built-in prompts (chat format, as in training) are decoded both ways in one process,
alternating round by round so machine noise hits both alike; each way is timed over all prompts and
the faster round is kept. Tokens are counted as generated (up to and including the stop token).
Batched and one-at-a-time outputs should agree; the run reports how many do (fp32 on CPU: all).

Usage: .venv/bin/python benchmarks/bench_generate.py [--prompts 32] [--max-new-tokens 32] [--batch-size 16]
       [--rounds 1] [--device auto] [--threads N] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from adaptive_lora.data import load_records, resolve_prompt_format
from adaptive_lora.environment import autocast_dtype, load_dtype, resolve_device, resolve_precision
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
    parser.add_argument("--quick", action="store_true", help="8 prompts, 16 new tokens, batch 8: a smoke test")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_new_tokens, args.batch_size = 8, 16, 8

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    tokenizer = load_tokenizer("embedded")
    model = load_model("embedded", dtype=load_dtype(precision), device=device).eval()
    records, _ = load_records("builtin")
    prompt_format = resolve_prompt_format("auto", tokenizer)
    prompts = prompt_ids_for(records[: args.prompts], tokenizer, prompt_format)
    amp = autocast_dtype(precision)

    greedy_generate(model, tokenizer, prompts[:2], 2, 2, device, amp)  # warm-up
    ways = {"batched": args.batch_size, "one-at-a-time": 1}
    best = {}
    for _ in range(args.rounds):
        for name, batch_size in ways.items():
            out = greedy_generate(model, tokenizer, prompts, args.max_new_tokens, batch_size, device, amp)
            if name not in best or out.seconds < best[name].seconds:
                best[name] = out

    same = sum(a == b for a, b in zip(best["batched"].texts, best["one-at-a-time"].texts))
    results = {
        "device": device,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "prompts": len(prompts),
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "prompt_format": prompt_format,
        "ways": {
            name: {
                "batch_size": ways[name],
                "seconds": out.seconds,
                "new_tokens": sum(out.new_tokens),
                "tokens_per_s": out.tokens_per_s,
            }
            for name, out in best.items()
        },
        "speedup": best["batched"].tokens_per_s / best["one-at-a-time"].tokens_per_s,
        "same_outputs": same,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    report(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


def report(r: dict) -> None:
    print(
        f"device {r['device']} ({r['precision']}, {r['threads']} threads), {r['prompts']} built-in prompts "
        f"({r['prompt_format']}, mean {r['prompt_tokens_mean']:.0f} tokens), max {r['max_new_tokens']} new tokens"
    )
    print(f"{'way':14s} {'batch':>5s} {'seconds':>8s} {'tokens':>7s} {'tokens/s':>9s}")
    for name, w in r["ways"].items():
        print(f"{name:14s} {w['batch_size']:5d} {w['seconds']:8.2f} {w['new_tokens']:7d} {w['tokens_per_s']:9.1f}")
    print(f"batched / one-at-a-time tokens/s: {r['speedup']:.2f}x; identical outputs: {r['same_outputs']}/{r['prompts']}")


if __name__ == "__main__":
    main()
