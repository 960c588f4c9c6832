"""Whole-recipe regression: three steps of each kind of strategy on the tiny Llama, losses pinned.

A change to the loss, the batching, the data pipeline, initialisation or a strategy's plan shows up
here as a moved number. If a change is meant to move them, rerun with PIN=1 to print the new values,
and say why in the commit.
"""

from __future__ import annotations

import os

import pytest

from adaptive_lora import train
from adaptive_lora.config import RunConfig
from adaptive_lora.schema import read_metrics

# strategy, params -> (train loss at steps 1..3, final validation loss)
PINNED = {
    ("uniform", ()): ([10.813063, 10.729012, 10.619839], 10.615202),
    ("linear_decay", (("start", 8), ("end", 2))): ([10.813063, 10.743492, 10.65134], 10.637307),
    ("gradient_importance", ()): ([10.813063, 10.787026, 10.62629], 10.620178),
    ("eva", ()): ([10.813063, 10.675568, 10.570992], 10.555617),
    ("adalora", (("tinit", 1), ("tfinal", 1))): ([11.054712, 11.041056, 11.038426], 10.810946),
}
# Step 1 agrees across the LoRA strategies: B starts at zero, so the first loss is the base model's.
# (3 steps x warmup_ratio 0.05 rounds down to no warm-up: every step trains.)
# AdaLoRA's logged loss includes its orthogonality penalty.


@pytest.mark.parametrize("strategy, params", list(PINNED), ids=[s for s, _ in PINNED])
def test_three_steps_reproduce_the_pinned_losses(strategy, params, tiny_llama_dir, data_file, tmp_path):
    config = RunConfig.from_dict(
        {
            "model": {"name": str(tiny_llama_dir), "precision": "fp32"},  # auto would give bf16 on CPUs with bf16 units
            "data": {"source": str(data_file), "val_set_size": 8},
            "allocation": {"strategy": strategy, "params": dict(params), "lora_r": 4, "budget_rank": 4, "lora_dropout": 0.05},
            "training": {"max_steps": 3, "micro_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "sequence_len": 128},
            "eval": {"forgetting": None},
            "output": {"dir": str(tmp_path / "run")},
        }
    )
    result = train(config)
    assert result["status"] == "done"
    losses = [m["train_loss"] for m in read_metrics(tmp_path / "run") if "train_loss" in m]
    if os.environ.get("PIN"):
        print(f"PINNED {strategy!r}: ({[round(x, 6) for x in losses]}, {round(result['eval_loss'], 6)})")
    expected_losses, expected_eval = PINNED[(strategy, params)]
    assert losses == pytest.approx(expected_losses, abs=1e-4)
    assert result["eval_loss"] == pytest.approx(expected_eval, abs=1e-4)
