"""Precision: `auto` follows the hardware (bf16 on CPUs with bf16 units), the choice is pinned into the run's
config and id, and bf16 training on CPU matches fp32 within bf16's rounding."""

from __future__ import annotations

import json
import re

import pytest
import torch

from adaptive_lora import environment, train
from adaptive_lora.config import RunConfig
from adaptive_lora.environment import EMULATED_BF16_ENV, cpu_features, resolve_precision
from adaptive_lora.errors import UserError
from adaptive_lora.schema import read_allocation
from adaptive_lora.sweep.runner import pin_precision
from adaptive_lora.sweep.suite import suite_from_dict

NO_UNITS = {"cpu_capability": "AVX2", "amx_bf16": False, "avx512_bf16": False, "cpu_bf16": False}
AMX = {"cpu_capability": "AVX512", "amx_bf16": True, "avx512_bf16": True, "cpu_bf16": True}
AVX512_BF16 = {"cpu_capability": "AVX512", "amx_bf16": False, "avx512_bf16": True, "cpu_bf16": True}


@pytest.mark.parametrize(
    "asked, features, emulation, expected",
    [
        ("auto", AMX, False, "bf16"),
        ("auto", AVX512_BF16, False, "bf16"),
        ("auto", NO_UNITS, False, "fp32"),
        ("auto", NO_UNITS, True, "fp32"),  # emulation is allowed, never chosen
        ("bf16", AMX, False, "bf16"),
        ("bf16", NO_UNITS, True, "bf16"),
        ("bf16", NO_UNITS, False, UserError),
        ("fp32", AMX, False, "fp32"),
        ("fp16", AMX, False, UserError),
    ],
)
def test_cpu_precision_follows_the_bf16_units(asked, features, emulation, expected, monkeypatch):
    monkeypatch.setattr(environment, "cpu_features", lambda: dict(features))
    monkeypatch.setenv(EMULATED_BF16_ENV, "1" if emulation else "0")
    if expected is UserError:
        with pytest.raises(UserError) as error:
            resolve_precision(asked, "cpu")
        assert "\n" not in str(error.value) and "model.precision" in str(error.value)
    else:
        assert resolve_precision(asked, "cpu") == expected


def test_cpu_features_are_what_torch_reports():
    features = cpu_features()
    assert features["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert features["cpu_bf16"] == (torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())


def test_a_suite_resumed_on_a_machine_with_other_units_gets_other_runs(monkeypatch):
    suite = {"name": "p", "data": {"source": "builtin"}, "strategies": [{"strategy": "uniform"}], "seeds": [0]}
    ids = {}
    for name, features in (("fp32 machine", NO_UNITS), ("bf16 machine", AMX)):
        monkeypatch.setattr(environment, "cpu_features", lambda features=features: dict(features))
        pinned = pin_precision(suite_from_dict(suite))
        ids[name] = pinned.runs[0].run_id
        assert pinned.data["model"]["precision"] == ("fp32" if features is NO_UNITS else "bf16")
    assert ids["fp32 machine"] != ids["bf16 machine"]
    explicit = {**suite, "model": {"precision": "fp32"}}
    monkeypatch.setattr(environment, "cpu_features", lambda: dict(AMX))
    assert pin_precision(suite_from_dict(explicit)).runs[0].run_id == suite_from_dict(explicit).runs[0].run_id


def _losses(run_dir) -> list[float]:
    return [
        json.loads(line)["train_loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "train_loss" in line
    ]


def test_bf16_training_on_cpu_matches_fp32(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    """Base weights in bf16 with bf16 matmuls under autocast, adapters and optimizer state in fp32, loss in fp32.

    Where the CPU has no bf16 units torch emulates bf16: slower, the same rounding, so the test runs everywhere.
    Tolerance: bf16 keeps 8 bits of mantissa (relative rounding 2^-9 ~ 0.2% per value); over a 2-layer model and
    three steps the losses stay within 1% of fp32's, far inside the gap between steps that the test also checks.
    """
    monkeypatch.setenv(EMULATED_BF16_ENV, "1")
    results = {}
    for precision in ("fp32", "bf16"):
        config = RunConfig.from_dict(
            {
                "model": {"name": str(tiny_llama_dir), "precision": precision},
                "data": {"source": str(data_file), "val_set_size": 8},
                "allocation": {"strategy": "linear_decay", "params": {"start": 8, "end": 2}, "lora_dropout": 0.0},
                "training": {
                    "max_steps": 3,
                    "micro_batch_size": 4,
                    "learning_rate": 1e-2,
                    "logging_steps": 1,
                    "sequence_len": 128,
                },
                "eval": {"forgetting": None},
                "output": {"dir": str(tmp_path / precision)},
            }
        )
        results[precision] = train(config)
        assert results[precision]["status"] == "done", results[precision]["error"]
        assert results[precision]["precision"] == precision
    fp32, bf16 = _losses(tmp_path / "fp32"), _losses(tmp_path / "bf16")
    assert len(fp32) == len(bf16) == 3
    assert bf16 == pytest.approx(fp32, rel=1e-2)
    assert fp32[0] - fp32[-1] > 5e-2  # the steps move the loss by more than the tolerance
    assert results["bf16"]["eval_loss"] == pytest.approx(results["fp32"]["eval_loss"], rel=1e-2)
    for precision in ("fp32", "bf16"):  # every planned rank, in the adapter that was trained (verify() ran at attach)
        allocation = read_allocation(tmp_path / precision).to_dict()
        adapter = json.loads((tmp_path / precision / "adapter" / "adapter_config.json").read_text())
        planned = {m["name"]: m["rank"] for m in allocation["modules"]}
        assert len(set(planned.values())) > 1
        assert {name: adapter["rank_pattern"].get(re.escape(name), adapter["r"]) for name in planned} == planned
    assert results["bf16"]["trainable_params"] == results["fp32"]["trainable_params"]
