"""Training-step benchmark on the embedded model: tokens/s side by side in one process, peak memory
of each variant in a fresh process of its own.

Variants, on the same batch (micro batch 8 x 128 tokens of built-in data, every position attended):
  ours        adaptive-lora's step with the device's defaults: AdapterTrainer, vocabulary projection only
              at supervised positions, passes of <= training.token_budget tokens (CPU: 256), LoRA dropout
              fused into lora_A in fp32, packed rows on GPU
  ours-1pass  ours in one padded pass per batch (token_budget 0, no packing): the previous behaviour
  plain       a plain PEFT + transformers Trainer step: full logits, the model's own loss, no tricks
  ours-het    ours with heterogeneous ranks (linear_decay 16->4 budget-matched to uniform r8)
  ours-compile  ours with the model under torch.compile (--compile only)
Each runs in every precision of --precisions: fp32 (base weights fp32) and bf16 (base weights bf16,
matmuls under autocast, adapters and optimizer state fp32; `plain` in bf16 is the fair peer: Trainer with
bf16=True, use_cpu=True on CPU). On CPU, bf16 is measured by default only where the CPU has bf16 units
(AMX or AVX512-BF16): elsewhere torch emulates it, 10-100x slower than fp32 (--precisions fp32,bf16 measures it anyway).
The allocation of `ours` and `plain` is uniform r8 over all linear modules, lora_dropout --lora-dropout.

tokens/s: the variants' steps interleaved in one process (machine noise hits all alike), median of
--steps timed steps after 2 warm-up steps. Peak memory: each variant alone in a fresh process (2 warm-up
+ --steps steps): peak RSS (VmHWM on Linux, model and libraries included) on CPU,
torch.cuda.max_memory_allocated on CUDA.

FLOPs per step (stated, not measured), with T = tokens in the batch, T_head = positions projected
to the vocabulary (supervised ones for `ours`, all for `plain`), N_body = body linear weights,
N_head = vocabulary projection weights, N_lora = LoRA weights, L layers, S sequence length, d width:
    4*T*N_body + 4*T_head*N_head + 6*T*N_lora + 12*L*T*S*d
(frozen weights: forward 2*T*N plus input-gradients 2*T*N; LoRA weights also get weight
gradients, 6*T*N; attention QK^T and AV, forward 4*T*S*d per layer, backward twice that.)
On CPU they are compared with a large dense matmul measured in the same run, in each variant's dtype
(so a bf16 variant's share is of the bf16 peak); on CUDA, MFU is against the GPU's bf16 dense peak from
its data sheet (GPU_BF16_PEAK_TFLOPS; "unknown" for other GPUs).

Usage: .venv/bin/python benchmarks/bench_train.py [--steps 6] [--device auto] [--precisions fp32,bf16] [--compile]
                                                  [--lora-dropout 0.0] [--no-memory] [--model embedded] [--json out.json]
Targets: ours >= 1.25x plain tokens/s; ours >= 0.95x ours-1pass; ours-het within 5% of ours; on CPU ours >= 60%
of the matmul peak; with bf16: ours bf16 >= 1.8x ours fp32 and >= 1.2x plain bf16.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
import time

import torch

from adaptive_lora.anatomy import inspect_model
from adaptive_lora.config import DataConfig
from adaptive_lora.data import Collator, prepare_data
from adaptive_lora.environment import (
    attention_implementation,
    cpu_features,
    load_dtype,
    peak_rss_bytes,
    resolve_device,
    resolve_packing,
    resolve_precision,
    resolve_token_budget,
)
from adaptive_lora.models import load_model, load_tokenizer
from adaptive_lora.planning import plan

BATCH, SEQ = 8, 128
KINDS = ("ours", "ours-1pass", "plain", "ours-het")
COMPILED = "ours-compile"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# bf16 dense tensor-core peaks from NVIDIA's data sheets (without sparsity), by whole words of the
# device name (A10 is not A10G, L4 is not L40S); the first match wins, so variants come before the SXM part.
GPU_BF16_PEAK_TFLOPS = (
    ("H200 NVL", 835.0),
    ("H200", 989.0),  # SXM
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
)


def gpu_peak_tflops(name: str) -> float | None:
    """Data-sheet bf16 dense peak of the GPU called `name` (torch.cuda.get_device_name), None if unknown."""
    return next((peak for key, peak in GPU_BF16_PEAK_TFLOPS if re.search(rf"\b{re.escape(key)}\b", name)), None)


class Bench:
    """Model, tokenizer and data for the benchmark in one precision, loaded as prepare_base loads them."""

    def __init__(self, device: str, model: str = "embedded", precision: str = "auto"):
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.tokenizer = load_tokenizer(model)
        self.data = prepare_data(DataConfig(max_samples=64, val_set_size=8), self.tokenizer, SEQ)
        self.model = load_model(model, load_dtype(self.precision), self.device)
        attention = attention_implementation(self.device, self.precision)
        if attention and self.model.config._attn_implementation != attention:
            self.model.set_attn_implementation(attention)
        self.model.requires_grad_(False)
        self.anatomy = inspect_model(self.model)
        self.uniform = plan(self.anatomy, "uniform", rank=8)
        self.hetero = plan(self.anatomy, "linear_decay", {"start": 16, "end": 4}, budget=self.uniform.trainable_params)

    def batch(self) -> dict[str, torch.Tensor]:
        """8 real built-in examples, each cut or padded to exactly 128 tokens (same masking as training)."""
        rows = [dict(r) for r in self.data.train[:BATCH]]
        pad = self.tokenizer.pad_token_id
        for row in rows:
            extra = SEQ - len(row["input_ids"])
            row["input_ids"] = (row["input_ids"] + [pad] * extra)[:SEQ]
            row["labels"] = (row["labels"] + [-100] * extra)[:SEQ]
        batch = Collator(self.tokenizer)(rows)
        batch["attention_mask"] = torch.ones_like(batch["input_ids"])  # all 128 positions are computed
        return {k: v.to(self.device) for k, v in batch.items()}

    def allocation(self, kind: str):
        return self.hetero if kind == "ours-het" else self.uniform


def variant_name(kind: str, precision: str) -> str:
    return f"{kind} {precision}"


def split_variant(name: str) -> tuple[str, str]:
    kind, precision = name.split(" ")
    return kind, precision


def make_trainer(kind: str, bench: Bench, lora_dropout: float, copy_model: bool):
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    from adaptive_lora.training.dropout import fuse_lora_dropout
    from adaptive_lora.training.engine import AdapterTrainer, StepStats

    base = copy.deepcopy(bench.model) if copy_model else bench.model
    if kind == COMPILED:
        base = torch.compile(base)  # compiles the base's forward; PEFT wraps the compiled module's layers
    model = get_peft_model(base, bench.allocation(kind).to_peft_config(lora_dropout=lora_dropout))
    args = TrainingArguments(
        output_dir="/tmp/adaptive-lora-bench",
        per_device_train_batch_size=BATCH,
        learning_rate=1e-4,
        report_to=[],
        disable_tqdm=True,
        bf16=bench.precision == "bf16",
        use_cpu=bench.device == "cpu",
        remove_unused_columns=False,
        logging_nan_inf_filter=False,
    )
    if kind == "plain":
        trainer = Trainer(model=model, args=args)
    else:
        if bench.precision == "fp32":
            fuse_lora_dropout(model)  # as BaseContext.attach does
        one_pass = kind == "ours-1pass"
        trainer = AdapterTrainer(
            model=model,
            args=args,
            stats=StepStats(),
            token_budget=None if one_pass else resolve_token_budget(None, bench.device),
            packing=False if one_pass else resolve_packing(None, bench.device),
        )
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


def matmul_peak(device: str, dtype: torch.dtype, n: int | None = None) -> float:
    """Dense n x n matmul GFLOP/s in the training dtype: the ceiling the step is compared with."""
    n = n or (8192 if device.startswith("cuda") else 1536)
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


def peak_memory_child(variant: str, args) -> dict:
    """Runs in a fresh process: only `variant`, 2 warm-up + `steps` steps, then the process's peaks."""
    kind, precision = split_variant(variant)
    bench = Bench(args.device, args.model, precision)
    trainer = make_trainer(kind, bench, args.lora_dropout, copy_model=False)
    batch = bench.batch()
    for _ in range(2 + args.steps):
        step(trainer, batch)
    sync(bench.device)
    cuda = torch.cuda.max_memory_allocated() if bench.device.startswith("cuda") else None
    return {"peak_rss_bytes": peak_rss_bytes(), "cuda_max_allocated_bytes": cuda}


def peak_memory(variant: str, args) -> dict:
    command = [sys.executable, __file__, "--memory-child", variant, "--device", args.device, "--steps", str(args.steps)]
    command += ["--lora-dropout", str(args.lora_dropout), "--model", args.model]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the memory run of {variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def default_precisions(device: str) -> tuple[list[str], str | None]:
    """fp32 and bf16 where bf16 runs on hardware (a GPU that supports it, a CPU with bf16 units); else fp32 alone, and why."""
    if resolve_precision("auto", device) == "bf16":
        return ["fp32", "bf16"], None
    if device == "cpu":
        features = cpu_features()
        return ["fp32"], (
            f"bf16 not measured: this CPU has no bf16 units (no AMX or AVX512-BF16; torch capability "
            f"{features['cpu_capability']}), where torch emulates bf16; --precisions fp32,bf16 measures it anyway"
        )
    return ["fp32"], f"bf16 not measured: {device} does not support it"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after 2 warm-up steps)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precisions", help="comma-separated, of fp32 and bf16 (default: both where bf16 runs on hardware)")
    parser.add_argument("--compile", action="store_true", help="add ours-compile: ours with the model under torch.compile")
    parser.add_argument("--model", default="embedded", help="embedded (the benchmark's model) or a local model directory")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="of every variant (the study suites train with 0)")
    parser.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak memory runs")
    parser.add_argument("--matmul-size", type=int, help="side of the peak-measuring matmul (default 1536 on CPU, 8192 on GPUs)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(peak_memory_child(args.memory_child, args)))
        return

    device = resolve_device(args.device)
    if args.precisions:
        precisions, skipped = [p.strip() for p in args.precisions.split(",") if p.strip()], None
        if not precisions or set(precisions) - set(DTYPES):
            sys.exit(f"--precisions takes fp32 and/or bf16, comma-separated; got {args.precisions!r}")
    else:
        precisions, skipped = default_precisions(device)
    benches = {p: Bench(device, args.model, p) for p in precisions}
    kinds = [*KINDS, *([COMPILED] if args.compile else [])]
    batch = next(iter(benches.values())).batch()
    trainers = {
        variant_name(kind, p): make_trainer(kind, bench, args.lora_dropout, copy_model=True)
        for p, bench in benches.items()
        for kind in kinds
    }
    for _ in range(2):  # warm-up, interleaved
        for trainer in trainers.values():
            step(trainer, batch)
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(args.steps):  # interleaved so machine noise hits every variant alike
        for name, trainer in trainers.items():
            sync(device)
            start = time.perf_counter()
            step(trainer, batch)
            sync(device)
            seconds[name].append(time.perf_counter() - start)
    del trainers
    on_gpu = device.startswith("cuda")
    device_name = torch.cuda.get_device_name(0) if on_gpu else "cpu"
    peak_tflops = gpu_peak_tflops(device_name) if on_gpu else None
    matmul = {p: matmul_peak(device, DTYPES[p], args.matmul_size) for p in precisions}

    tokens = batch["input_ids"].numel()
    first = next(iter(benches.values()))
    results = {
        "device": device,
        "device_name": device_name,
        "cpu": cpu_features() if device == "cpu" else None,
        "model": args.model,
        "precisions": precisions,
        "not_measured": skipped,
        "attention": first.model.config._attn_implementation,
        "threads": torch.get_num_threads(),
        "batch": [BATCH, SEQ],
        "lora_dropout": args.lora_dropout,
        "token_budget": resolve_token_budget(None, device),
        "packing": resolve_packing(None, device),
        "matmul_peak_gflops": matmul,
        "gpu_bf16_peak_tflops": peak_tflops,
        "variants": {},
    }
    for name in seconds:
        kind, precision = split_variant(name)
        bench = benches[precision]
        median = sorted(seconds[name])[len(seconds[name]) // 2]
        flops = step_flops(bench.anatomy, bench.allocation(kind), bench.model.config, batch, kind != "plain")
        memory = {} if args.no_memory else peak_memory(name, args)
        results["variants"][name] = {
            "step_s": median,
            "tokens_per_s": tokens / median,
            "gflops": flops / median / 1e9,
            "fraction_of_matmul_peak": flops / median / 1e9 / matmul[precision],
            "mfu": flops / median / (peak_tflops * 1e12) if peak_tflops else None,
            "trainable_params": bench.allocation(kind).trainable_params,
            **memory,
        }
    results["ratios"] = ratios(results["variants"], precisions, args.compile)
    memory_key = "cuda_max_allocated_bytes" if on_gpu else "peak_rss_bytes"
    if not args.no_memory:
        for p in precisions:
            v = results["variants"]
            results["ratios"][f"peak memory ours / plain {p}"] = (
                v[variant_name("ours", p)][memory_key] / v[variant_name("plain", p)][memory_key]
            )
    report(results, memory_key)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


def ratios(v: dict, precisions: list[str], compiled: bool) -> dict[str, float]:
    """The ratios the targets are about, each from variants timed side by side in this run."""

    def tps(kind: str, p: str) -> float:
        return v[variant_name(kind, p)]["tokens_per_s"]

    out = {}
    for p in precisions:
        out[f"ours vs plain {p}"] = tps("ours", p) / tps("plain", p)
        out[f"ours vs one pass {p}"] = tps("ours", p) / tps("ours-1pass", p)
        out[f"heterogeneous vs uniform {p}"] = tps("ours-het", p) / tps("ours", p)
        if compiled:
            out[f"compiled vs ours {p}"] = tps(COMPILED, p) / tps("ours", p)
    if {"fp32", "bf16"} <= set(precisions):
        out["ours bf16 vs ours fp32"] = tps("ours", "bf16") / tps("ours", "fp32")
    return out


TARGETS = {  # ratio label prefix -> minimum
    "ours vs plain fp32": 1.25,
    "ours vs plain bf16": 1.2,
    "ours vs one pass": 0.95,
    "heterogeneous vs uniform": 0.95,
    "ours bf16 vs ours fp32": 1.8,
}


def report(r: dict, memory_key: str) -> None:
    peak = f"{r['gpu_bf16_peak_tflops']:.0f} TFLOPS bf16 dense" if r["gpu_bf16_peak_tflops"] else "unknown"
    cpu = r["cpu"]
    units = (
        f", CPU {cpu['cpu_capability']}, bf16 units: {'yes' if cpu['cpu_bf16'] else 'no'} (AMX {cpu['amx_bf16']}, AVX512-BF16 {cpu['avx512_bf16']})"
        if cpu
        else ""
    )
    print(
        f"device {r['device_name']} ({', '.join(r['precisions'])}, {r['attention'] or 'default'} attention, {r['threads']} threads{units}), "
        f"batch {r['batch'][0]} x {r['batch'][1]} tokens, lora_dropout {r['lora_dropout']}, token budget "
        f"{r['token_budget'] or 'none'}, packing {'on' if r['packing'] else 'off'}"
    )
    if r["not_measured"]:
        print(r["not_measured"])
    print(
        "measured matmul peak "
        + ", ".join(f"{p} {gflops:.1f} GFLOP/s" for p, gflops in r["matmul_peak_gflops"].items())
        + (f"; data-sheet peak {peak}" if r["device"] != "cpu" else "")
    )
    memory_label = "peak CUDA MB" if memory_key.startswith("cuda") else "peak RSS MB"
    print(
        f"{'variant':17s} {'step s':>8s} {'tokens/s':>10s} {'GFLOP/s':>9s} {'of peak':>8s} {'MFU':>7s} {memory_label:>13s} {'params':>11s}"
    )
    for name, v in r["variants"].items():
        mfu = f"{100 * v['mfu']:6.1f}%" if v.get("mfu") else ("unknown" if r["device"] != "cpu" else "      -")
        memory = f"{v[memory_key] / 2**20:13.0f}" if v.get(memory_key) else f"{'-':>13s}"
        print(
            f"{name:17s} {v['step_s']:8.3f} {v['tokens_per_s']:10.0f} {v['gflops']:9.1f} {100 * v['fraction_of_matmul_peak']:7.1f}% "
            f"{mfu:>7s} {memory} {v['trainable_params']:11,}"
        )
    print("of peak: share of the dense matmul peak measured in this run in the variant's own dtype (fp32 or bf16)")
    for label, value in r["ratios"].items():
        target = next((t for prefix, t in TARGETS.items() if label.startswith(prefix)), None)
        verdict = f"target >= {target:.2f}  {'PASS' if value >= target else 'MISS'}" if target else ""
        print(f"{label:34s} {value:6.2f}x  {verdict}")
    if r["device"] == "cpu":
        for p in r["precisions"]:
            share = r["variants"][variant_name("ours", p)]["fraction_of_matmul_peak"]
            print(f"{'ours ' + p + ' / matmul peak':34s} {share:6.2f}   target >= 0.60  {'PASS' if share >= 0.6 else 'MISS'}")


if __name__ == "__main__":
    main()
