"""The untrained base model's scores, stored once per sweep so that every worker and every restart reuses them.

Scoring the base (validation and test loss, generations, forgetting text) costs about as much as
evaluating an adapter, and it is the same for every run on one model, data split and evaluation
setting. `stored_base_scores` keeps it in SWEEP/.base-eval/<key>.json, where the key hashes
everything the numbers depend on; a file lock makes a second worker wait for the first to finish
computing instead of computing it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from ..config import RunConfig
from ..io import read_json, write_json

BASE_STORE_DIR = ".base-eval"
# Bump when the scoring code changes what it computes for the same inputs: older files are then ignored.
BASE_STORE_FORMAT = 1


def base_store_key(cfg: RunConfig, precision: str, device: str, split_hashes: dict[str, str], forgetting: str | None) -> dict:
    """Everything the base's scores depend on (the run's strategy, rank and training settings do not enter)."""
    versions = {}
    for package in ("torch", "transformers", "peft", "adaptive-lora"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "format": BASE_STORE_FORMAT,
        "model": {**cfg.to_dict()["model"], "precision": precision, "device": device},
        "data": cfg.to_dict()["data"],
        "split_hashes": split_hashes,
        "sequence_len": cfg.training.sequence_len,
        "micro_batch_size": cfg.training.micro_batch_size,
        "eval": cfg.to_dict()["eval"],
        "forgetting_source": forgetting,
        "versions": versions,
    }


def stored_base_scores(store: Path, key: dict, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """compute() once per key under `store` (a sweep directory); later calls, in any process, read the file."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(store) / BASE_STORE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{digest}.json"
    with FileLock(folder / f"{digest}.lock"):
        if path.is_file():
            try:
                stored = read_json(path)
            except (OSError, ValueError):
                stored = None  # a damaged file is recomputed and replaced (it is ours: written atomically)
            if isinstance(stored, dict) and stored.get("key") == json.loads(json.dumps(key, default=str)):
                return stored["value"]
        value = compute()
        write_json(path, {"key": key, "value": value})
        return value
