"""Training-step benchmark on the embedded model, measured side by side in one process.

Variants, interleaved step by step on the same batch (micro batch 8 x 128 tokens of built-in data):
  ours      adaptive-lora's step: AdapterTrainer, vocabulary projection only at supervised positions
  plain     a plain PEFT + transformers Trainer step: full logits, the model's own loss, no tricks
  ours-het  ours with heterogeneous ranks (linear_decay 16->4 budget-matched to uniform r8)
The allocation of `ours` and `plain` is uniform r8 over all linear modules.

FLOPs per step (stated, not measured), with T = tokens in the batch, T_head = positions projected
to the vocabulary (supervised ones for `ours`, all for `plain`), N_body = body linear weights,
N_head = vocabulary projection weights, N_lora = LoRA weights, L layers, S sequence length, d width:
    4*T*N_body + 4*T_head*N_head + 6*T*N_lora + 12*L*T*S*d
(frozen weights: forward 2*T*N plus input-gradients 2*T*N; LoRA weights also get weight
gradients, 6*T*N; attention QK^T and AV, forward 4*T*S*d per layer, backward twice that.)
The matmul peak is measured in the same run with a large dense matmul in the training dtype.

Usage: .venv/bin/python benchmarks/bench_train.py [--steps 6] [--device auto] [--json out.json]
Targets: ours >= 1.15x plain tokens/s; ours-het within 5% of ours; ours >= 60% of the matmul peak.
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
import time

import psutil
import torch

from adaptive_lora.anatomy import inspect_model
from adaptive_lora.config import RunConfig
from adaptive_lora.data import Collator
from adaptive_lora.environment import resolve_device, resolve_precision
from adaptive_lora.planning import plan
from adaptive_lora.training import prepare_base

BATCH, SEQ = 8, 128


class PeakMemory:
    """Peak extra memory while the block runs: CUDA max allocated, or sampled process RSS on CPU."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.process, self.start, self.running = psutil.Process(), psutil.Process().memory_info().rss, True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss - self.start)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.running = False
            self.thread.join()


def fixed_batch(base) -> dict[str, torch.Tensor]:
    """8 real built-in examples, each cut or padded to exactly 128 tokens (same masking as training)."""
    rows = [dict(r) for r in base.data.train[:BATCH]]
    pad = base.tokenizer.pad_token_id
    for row in rows:
        extra = SEQ - len(row["input_ids"])
        row["input_ids"] = (row["input_ids"] + [pad] * extra)[:SEQ]
        row["labels"] = (row["labels"] + [-100] * extra)[:SEQ]
    batch = Collator(base.tokenizer)(rows)
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])  # all 128 positions are computed
    return {k: v.to(base.device) for k, v in batch.items()}


def make_trainer(kind: str, base, allocation, precision: str):
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from adaptive_lora.training.engine import AdapterTrainer, StepStats

    model = get_peft_model(copy.deepcopy(base.model), allocation.to_peft_config())
    args = TrainingArguments(
        output_dir="/tmp/adaptive-lora-bench",
        per_device_train_batch_size=BATCH,
        learning_rate=1e-4,
        report_to=[],
        disable_tqdm=True,
        bf16=precision == "bf16",
        use_cpu=base.device == "cpu",
        remove_unused_columns=False,
        logging_nan_inf_filter=False,
    )
    trainer = AdapterTrainer(model=model, args=args, stats=StepStats()) if kind != "plain" else Trainer(model=model, args=args)
    trainer.create_optimizer_and_scheduler(num_training_steps=1000)
    trainer.current_gradient_accumulation_steps = 1  # normally set inside Trainer.train()
    return trainer


def step(trainer, batch) -> None:
    trainer.model.train()
    count = batch["labels"][:, 1:].ne(-100).sum()  # both trainers normalise by supervised tokens
    trainer.training_step(trainer.model, dict(batch), count)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    """Dense matmul GFLOP/s in the training dtype: the ceiling the step is compared with."""
    n = 8192 if device.startswith("cuda") else 1536
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    sync(device)
    repeats = 20 if device.startswith("cuda") else 5
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def step_flops(anatomy, allocation, model_config, batch, sparse_head: bool) -> float:
    tokens = batch["input_ids"].numel()
    head_tokens = int(batch["labels"][:, 1:].ne(-100).sum()) if sparse_head else tokens
    n_body = sum(m.in_features * m.out_features for m in anatomy.modules)
    n_head = model_config.hidden_size * model_config.vocab_size
    attention = 12 * anatomy.num_layers * tokens * SEQ * model_config.hidden_size
    return 4 * tokens * n_body + 4 * head_tokens * n_head + 6 * tokens * allocation.trainable_params + attention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after 2 warm-up steps)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    config = RunConfig.from_dict(
        {
            "model": {"device": device},
            "data": {"max_samples": 64, "val_set_size": 8},
            "training": {"sequence_len": SEQ, "micro_batch_size": BATCH},
        }
    )
    base = prepare_base(config)
    anatomy = inspect_model(base.model)
    uniform = plan(anatomy, "uniform", rank=8)
    hetero = plan(anatomy, "linear_decay", {"start": 16, "end": 4}, budget=uniform.trainable_params)
    batch = fixed_batch(base)
    variants = {"ours": (uniform, True), "plain": (uniform, False), "ours-het": (hetero, True)}
    trainers = {
        name: make_trainer("plain" if name == "plain" else "ours", base, alloc, precision)
        for name, (alloc, _) in variants.items()
    }

    for _ in range(2):  # warm-up, interleaved
        for trainer in trainers.values():
            step(trainer, batch)
    seconds = {name: [] for name in variants}
    peaks = {name: 0 for name in variants}
    for _ in range(args.steps):  # interleaved so machine noise hits every variant alike
        for name, trainer in trainers.items():
            with PeakMemory(device) as memory:
                sync(device)
                start = time.perf_counter()
                step(trainer, batch)
                sync(device)
                seconds[name].append(time.perf_counter() - start)
            peaks[name] = max(peaks[name], memory.peak)
    peak_gflops = matmul_peak(device, torch.bfloat16 if precision == "bf16" else torch.float32)

    tokens = batch["input_ids"].numel()
    results = {
        "device": device,
        "precision": precision,
        "threads": torch.get_num_threads(),
        "batch": [BATCH, SEQ],
        "matmul_peak_gflops": peak_gflops,
        "variants": {},
    }
    for name, (alloc, sparse) in variants.items():
        median = sorted(seconds[name])[len(seconds[name]) // 2]
        flops = step_flops(anatomy, alloc, base.model.config, batch, sparse)
        results["variants"][name] = {
            "step_s": median,
            "tokens_per_s": tokens / median,
            "peak_mem_mb": peaks[name] / 2**20,
            "gflops": flops / median / 1e9,
            "trainable_params": alloc.trainable_params,
        }
    v = results["variants"]
    results["speedup_vs_plain"] = v["ours"]["tokens_per_s"] / v["plain"]["tokens_per_s"]
    results["hetero_vs_uniform"] = v["ours-het"]["tokens_per_s"] / v["ours"]["tokens_per_s"]
    results["fraction_of_peak"] = v["ours"]["gflops"] / peak_gflops
    report(results)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


def report(r: dict) -> None:
    print(
        f"device {r['device']} ({r['precision']}, {r['threads']} threads), batch {r['batch'][0]} x {r['batch'][1]} tokens, "
        f"matmul peak {r['matmul_peak_gflops']:.1f} GFLOP/s"
    )
    print(f"{'variant':10s} {'step s':>8s} {'tokens/s':>10s} {'peak MB':>9s} {'GFLOP/s':>9s} {'params':>11s}")
    for name, v in r["variants"].items():
        print(
            f"{name:10s} {v['step_s']:8.3f} {v['tokens_per_s']:10.0f} {v['peak_mem_mb']:9.0f} {v['gflops']:9.1f} {v['trainable_params']:11,}"
        )
    checks = [
        ("ours vs plain tokens/s", r["speedup_vs_plain"], ">= 1.15", r["speedup_vs_plain"] >= 1.15),
        ("heterogeneous vs uniform", r["hetero_vs_uniform"], ">= 0.95", r["hetero_vs_uniform"] >= 0.95),
        ("ours / matmul peak", r["fraction_of_peak"], ">= 0.60", r["fraction_of_peak"] >= 0.60),
    ]
    for label, value, target, ok in checks:
        print(f"{label:26s} {value:6.2f}x  target {target}  {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
