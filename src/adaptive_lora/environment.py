"""Device and precision choice, and the environment record stored with every run."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from .errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device={device} but no CUDA device is available; use model.device=cpu or auto")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """fp32 on CPU; bf16 on GPUs that support it; fp16 only when asked (adapters stay fp32, loss scaled)."""
    if precision not in PRECISIONS:
        raise UserError(f"model.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
    on_gpu = device.startswith("cuda")
    if precision == "auto":
        if on_gpu:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision in ("bf16", "fp16") and not on_gpu:
        raise UserError(f"model.precision={precision} needs a GPU; on CPU use fp32 (or auto)")
    return precision


def load_dtype(precision: str) -> str:
    """Base weights dtype: bf16 weights under bf16; fp32 otherwise (fp16 trains fp32 weights under autocast)."""
    return "bfloat16" if precision == "bf16" else "float32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """Autocast dtype for evaluation: bf16 under bf16, else none. Evaluation never runs in fp16."""
    return torch.bfloat16 if precision == "bf16" else None


def environment(device: str) -> dict:
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
        "threads": torch.get_num_threads(),
        **git_state(),
    }


def git_state() -> dict:
    """SHA and dirty flag of the adaptive-lora checkout, when it is one."""
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
