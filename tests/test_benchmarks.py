"""The benchmark scripts: the GPU check's dry run (CPU, tiny model) and the GPU peak table."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adaptive_lora.environment import cpu_features

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H200", 989.0),
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA A10G", None),  # not the A10: no data-sheet figure, so MFU says "unknown"
        ("NVIDIA L40S", 362.0),
        ("NVIDIA GeForce RTX 3090", None),
    ],
)
def test_gpu_peaks_are_looked_up_by_whole_names(name, peak):
    assert load_benchmark("bench_train").gpu_peak_tflops(name) == peak


def test_gpu_check_dry_run_runs_every_step_on_cpu(tiny_llama_dir, tmp_path):
    out = tmp_path / "check"
    env = {**os.environ, "MODEL": str(tiny_llama_dir), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_check.sh"), "--dry-run", str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["all_done"]
    assert summary["settings"] | {"threads": None} == {
        "device": "cpu",
        "device_name": "cpu",
        "precisions": ["fp32"],  # the dry run measures fp32 on every CPU (test_bench_train_bf16 below covers bf16)
        "attention": "sdpa",
        "packing": False,
        "token_budget": 256,
        "threads": None,
    }
    assert summary["train"]["status"] == "done" and summary["train"]["steps"] == 2
    assert set(summary["bench"]["variants"]) == {"ours fp32", "ours-1pass fp32", "plain fp32", "ours-het fp32"}
    assert set(summary["bench"]["ratios"]) == {"ours vs plain fp32", "ours vs one pass fp32", "heterogeneous vs uniform fp32"}
    assert all(v["tokens_per_s"] > 0 for v in summary["bench"]["variants"].values())
    assert sorted((r["label"], r["seed"]) for r in summary["suite"]) == [
        (label, seed) for label in ("linear_decay 16->4", "uniform r8") for seed in (0, 1, 2)
    ]
    for log in ("train", "bench_train", "suite", "summary"):
        assert (out / f"{log}.log").is_file(), log


@pytest.mark.skipif(
    not cpu_features()["cpu_bf16"],
    reason="this CPU has no bf16 units (AMX or AVX512-BF16): emulated bf16 is too slow to benchmark",
)
def test_bench_train_measures_bf16_beside_fp32(tiny_llama_dir, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_train.py"), "--model", str(tiny_llama_dir), "--steps", "1", "--no-memory"]
        + ["--matmul-size", "256", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["precisions"] == ["fp32", "bf16"]  # the default where the CPU has bf16 units
    assert {"ours bf16 vs ours fp32", "ours vs plain bf16"} <= set(results["ratios"])
    assert all(0 < v["fraction_of_matmul_peak"] for v in results["variants"].values())


def test_bench_search_smoke_compares_search_and_grid_at_equal_tokens(tmp_path):
    figures_file = tmp_path / "figures.json"
    assert load_benchmark("bench_search").main(["--smoke", "--out", str(tmp_path / "bench"), "--json", str(figures_file)]) == 0
    figures = json.loads(figures_file.read_text())
    grid, search = figures["grid"], figures["search"]
    assert figures["smoke"] and grid["runs"] == 2  # two shapes x one rate on the search's seed
    # equal compute: the search starts no trial once it has spent the grid's tokens, so it overshoots by at most one trial
    longest_trial = max(t["tokens"] or 0 for t in json.loads((tmp_path / "bench/search/final/search.json").read_text())["trials"])
    assert 0 < search["tokens"] <= grid["tokens"] + longest_trial
    for arm in (grid, search):
        assert arm["best_validation"] > 0 and arm["uniform_validation"] > 0
        roles = {v["role"] for v in arm["test_verdicts"]}
        assert roles == {"strategy", "capacity-control"} and all(v["n_pairs"] == 2 for v in arm["test_verdicts"])
