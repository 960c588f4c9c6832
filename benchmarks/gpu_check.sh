#!/usr/bin/env bash
# GPU check, about 4 minutes on one H200, every figure in one folder:
#   nvidia-smi.txt      the GPU and its driver
#   train/              (a) bf16 training of the embedded default (`adaptive-lora train`, precision auto)
#   bench_train.json    (b) benchmarks/bench_train.py --device cuda: tokens/s, MFU, peak CUDA memory, and
#                           what precision auto, attention, packing and the token budget resolve to here
#   suite/              (c) a 3-seed mini-suite: seed-study settings, uniform r8 and linear_decay 16->4
#   summary.json        the headline figures of (a)-(c); *.log: each step's output
#
#   benchmarks/gpu_check.sh [OUT]              on the GPU (OUT defaults to gpu-check-<time>)
#   benchmarks/gpu_check.sh --dry-run [OUT]    the same commands and code paths on CPU, tiny settings,
#                                              in seconds (MODEL=<dir>: a small local model instead of embedded)
# Exit status 0 only when every step finished and every run is done.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY=1
    shift
fi
OUT="${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}"
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    PY=.venv/bin/python
else
    PY=python3
fi
mkdir -p "$OUT"

STRATEGIES='strategies=[{strategy: uniform, label: uniform r8, params: {rank: 8}}, {strategy: linear_decay, label: linear_decay 16->4, params: {start: 16, end: 4}}]'
if ((DRY)); then
    MODEL="${MODEL:-embedded}"
    DEVICE=cpu
    TINY=(data.max_samples=24 training.sequence_len=64 training.micro_batch_size=4 eval.forgetting=null eval.max_new_tokens=4)
    TRAIN_ARGS=("${TINY[@]}" training.max_steps=2)
    BENCH_ARGS=(--steps 1 --no-memory --precisions fp32 --matmul-size 256)
    SUITE_ARGS=("${TINY[@]}" data.val_set_size=4 data.test_set_size=4 training.max_steps=1)
    LIMITS=(120 120 180)
else
    MODEL=embedded
    DEVICE=cuda
    TRAIN_ARGS=()
    BENCH_ARGS=(--steps 10)
    SUITE_ARGS=()
    LIMITS=(75 90 120) # seconds for (a), (b), (c): under 5 minutes in all, model conversion included
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
fi

FAILED=()
step() { # step NAME LIMIT_S COMMAND...: run with a time limit, output to OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" | tee "$OUT/$name.log"
    local start=$SECONDS
    timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
    local status=$?
    echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
    ((status == 0)) || FAILED+=("$name (exit $status)")
}

step train "${LIMITS[0]}" "$PY" -m adaptive_lora train --model "$MODEL" --out "$OUT/train" --overwrite \
    "model.device=$DEVICE" model.precision=auto "${TRAIN_ARGS[@]}"
step bench_train "${LIMITS[1]}" "$PY" benchmarks/bench_train.py --device "$DEVICE" --model "$MODEL" \
    --json "$OUT/bench_train.json" "${BENCH_ARGS[@]}"
step suite "${LIMITS[2]}" "$PY" -m adaptive_lora run seed-study --out "$OUT/suite" --quiet \
    "model.name=$MODEL" "model.device=$DEVICE" "seeds=[0,1,2]" "$STRATEGIES" "${SUITE_ARGS[@]}"

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.log"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None

train = load(out / "train" / "result.json") or {}
bench = load(out / "bench_train.json") or {}
runs = [load(p) or {} for p in sorted((out / "suite" / "runs").glob("*/result.json"))]
summary = {
    "settings": {k: bench.get(k) for k in ("device", "device_name", "precisions", "attention", "packing", "token_budget", "threads")},
    "train": {k: train.get(k) for k in ("status", "steps", "eval_loss", "base_eval_loss", "tokens_per_s", "peak_memory_mb", "train_time_s")},
    "bench": {k: bench.get(k) for k in ("ratios", "gpu_bf16_peak_tflops", "matmul_peak_gflops")}
    | {"variants": {n: {k: v.get(k) for k in ("tokens_per_s", "mfu", "cuda_max_allocated_bytes", "peak_rss_bytes")} for n, v in bench.get("variants", {}).items()}},
    "suite": [{k: r.get(k) for k in ("label", "seed", "status", "eval_loss", "tokens_per_s")} for r in runs],
}
summary["all_done"] = train.get("status") == "done" and bool(bench) and len(runs) == 6 and all(r.get("status") == "done" for r in runs)
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
sys.exit(0 if summary["all_done"] else 1)
EOF
SUMMARY_STATUS=$?

if ((${#FAILED[@]})) || ((SUMMARY_STATUS != 0)); then
    echo "gpu check: FAILED ${FAILED[*]:-} (summary exit $SUMMARY_STATUS); figures in $OUT"
    exit 1
fi
echo "gpu check: all steps done; figures in $OUT"
