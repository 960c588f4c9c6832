"""Device, precision, attention and batching choices, and the environment record stored with every run."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import platform
import resource
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

from .errors import UserError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Set to 1 to allow bf16 on a CPU without bf16 units: torch then emulates it, 10-100x slower than fp32.
# For numerics checks (the bf16 equivalence test), never for speed.
EMULATED_BF16_ENV = "ADAPTIVE_LORA_EMULATED_BF16"

# Tokens per forward/backward pass on CPU when training.token_budget is unset. Measured at the seed
# study's settings (SmolLM2-135M in fp32, LoRA on every linear module, 8 rows of up to 212 tokens per
# step), peak RSS of a fresh process: one pass per step 7.5 GB; passes of <= 512 tokens 3.1 GB, 384
# 2.7 GB, 256 2.2 GB, at the tokens/s of one pass (benchmarks/README.md). Re-measured in bf16 on a CPU
# with AVX512-BF16 (no AMX), bench_memory.py, 5 steps: 256 gave 2.26 GB and 180 tokens/s, 512 2.33 GB
# and 190, no limit 2.87 GB (over the 2.5 GB target); 5% is within a short run's noise, so 256 stays for
# both precisions. On GPUs memory is not the limit.
CPU_TOKEN_BUDGET = 256

# oneDNN keeps a compiled kernel per matmul shape (1024 by default). In bf16 on CPU every new rank and
# sequence length adds one, so a worker's memory grew run after run. Measured 2026-12-06 (AVX512-BF16):
# six seed-study runs in one process peaked at 2.33 GB with the default, 2.14 GB with 32, the same losses
# and tokens/s (bench_memory.py: 204 vs 204); 0 cut the speed to a third. A user's own setting wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={device} but no CUDA device is available; use model.device=cpu or auto")
    return device


def cpu_features() -> dict:
    """What torch reports about this CPU: its SIMD capability and the bf16 matrix units it can use.

    AMX (Sapphire Rapids and later) and AVX512-BF16 (Cooper Lake, Zen 4 and later) run bf16 matmuls
    several times faster than fp32 (benchmarks/bench_train.py); without them torch emulates bf16,
    far slower than fp32.
    """
    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    features = {"cpu_capability": _call(torch.backends.cpu.get_cpu_capability)}
    for name, probe in probes.items():
        features[name] = bool(_call(getattr(torch.cpu, probe, None)))  # private torch API: absent means no
    features["cpu_bf16"] = features["amx_bf16"] or features["avx512_bf16"]
    return features


def _call(function):
    try:
        return function() if function is not None else None
    except Exception:  # noqa: BLE001 - a probe that fails reports "unknown", never breaks a run
        return None


def _emulated_bf16_allowed() -> bool:
    return os.environ.get(EMULATED_BF16_ENV, "") not in ("", "0")


_LOGGED: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.info(message)


def resolve_precision(precision: str, device: str) -> str:
    """The precision a run uses: `auto` is bf16 on GPUs that support it (else fp16), bf16 on CPUs with
    bf16 units (AMX or AVX512-BF16), fp32 on other CPUs. fp16 only on GPUs (adapters stay fp32, loss scaled)."""
    if precision not in PRECISIONS:
        raise UserError(f"model.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    if device.startswith("cuda"):
        if precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return precision
    if precision == "fp16":
        raise UserError("model.precision=fp16 needs a GPU; on CPU use bf16 (CPUs with AMX or AVX512-BF16), fp32 or auto")
    if precision == "fp32" or device != "cpu":  # mps and others: fp32, as before
        if precision == "bf16":
            raise UserError(f"model.precision=bf16 is supported on CUDA GPUs and CPUs, not on {device}; use fp32 or auto")
        return "fp32"
    features = cpu_features()
    units = "AMX" if features["amx_bf16"] else "AVX512-BF16" if features["avx512_bf16"] else None
    if precision == "auto":
        chosen = "bf16" if units else "fp32"
        why = (
            f"this CPU has {units} units (torch capability {features['cpu_capability']})"
            if units
            else f"this CPU has no bf16 units (no AMX or AVX512-BF16; torch capability {features['cpu_capability']})"
        )
        _log_once(f"precision auto -> {chosen}: {why}")
        return chosen
    if not units and not _emulated_bf16_allowed():  # precision == "bf16"
        raise UserError(
            f"model.precision=bf16 needs a CPU with AMX or AVX512-BF16 units, and this one has neither (torch capability "
            f"{features['cpu_capability']}): use model.precision=fp32 or auto ({EMULATED_BF16_ENV}=1 forces slow, emulated bf16)"
        )
    return "bf16"


def resolved_precision_override(model_precision: str | None, model_device: str | None) -> dict:
    """{"model.precision": ...} that pins `auto` to what this machine runs, so a run's configuration (and
    its id) says which precision it trained in; {} when the precision is already explicit."""
    if (model_precision or "auto") != "auto":
        return {}
    return {"model.precision": resolve_precision("auto", resolve_device(model_device or "auto"))}


def cpu_has_bf16() -> bool:
    """This CPU computes bf16 in hardware (AVX512-BF16 or AMX) and this torch can use it; without such
    units bf16 is emulated and slower than fp32."""
    return bool(cpu_features()["cpu_bf16"])


def resolve_token_budget(token_budget: int | None, device: str) -> int | None:
    """Tokens per forward/backward pass: None (unset) is CPU_TOKEN_BUDGET on CPU and no limit on GPU; 0 is no limit."""
    if token_budget is None:
        return None if device.startswith("cuda") else CPU_TOKEN_BUDGET
    if token_budget < 0:
        raise UserError(f"training.token_budget={token_budget} must be a positive number of tokens, 0 (no limit) or null (auto)")
    return token_budget or None


def resolve_packing(packing: bool | None, device: str) -> bool:
    """Padding-free packing: on GPUs by default, off on CPU.

    On GPUs packing drops the pad tokens of every step (flash-attention 2 runs packed rows as varlen,
    sdpa with a block-diagonal mask). On CPU it was measured slower than padded passes on the seed
    study: length-sorted passes pad little, and sdpa's block-diagonal mask costs attention over the
    whole packed row (benchmarks/README.md).
    """
    return device.startswith("cuda") if packing is None else bool(packing)


def attention_implementation(device: str, precision: str) -> str | None:
    """flash-attention 2 on GPUs under bf16/fp16 when the flash_attn package is installed, else sdpa;
    None (the model's own choice) on CPU."""
    if not device.startswith("cuda"):
        return None
    if precision in ("bf16", "fp16") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory. Not ru_maxrss:
    Linux carries it across exec, so a process started by a big parent reports the parent's size.
    Elsewhere: getrusage ru_maxrss (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def load_dtype(precision: str) -> str:
    """Base weights dtype: bf16 weights under bf16; fp32 otherwise (fp16 trains fp32 weights under autocast)."""
    return "bfloat16" if precision == "bf16" else "float32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """Autocast dtype for evaluation and generation: bf16 under bf16 (the same matmuls as training), else
    none. Evaluation never runs in fp16."""
    return torch.bfloat16 if precision == "bf16" else None


def environment(device: str, precision: str | None = None) -> dict:
    versions = {}
    for package in ("torch", "transformers", "peft", "accelerate", "datasets", "adaptive-lora"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or platform.machine()
    return {
        "python": platform.python_version(),
        **versions,
        "device": device,
        "device_name": name,
        "precision": precision,
        **(cpu_features() if device == "cpu" else {}),
        "threads": torch.get_num_threads(),
        **git_state(),
    }


@functools.cache
def git_state() -> dict:
    """SHA and dirty flag of the adaptive-lora checkout, when it is one: read once per process, the first time
    (prepare_base asks early), so a long sweep records the code it loaded, not a commit made while it ran."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
        )
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}
