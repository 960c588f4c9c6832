"""A run's validation / test / forgetting numbers and predictions.jsonl (docs/run-format.md)."""

from __future__ import annotations

import json
import math

import pytest

from adaptive_lora.schema import PREDICTIONS_FILE, read_predictions
from adaptive_lora.training import train


@pytest.fixture(scope="module")
def scored_run(tiny_llama_dir, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored") / "run"
    config = {
        "model": {"name": str(tiny_llama_dir)},
        "data": {"source": str(data_file), "val_set_size": 6, "test_set_size": 8, "prompt_format": "alpaca"},
        "training": {"max_steps": 3, "micro_batch_size": 4, "learning_rate": 1e-2, "sequence_len": 128, "logging_steps": 1},
        "allocation": {"lora_r": 4, "lora_alpha": 8},
        "eval": {"max_new_tokens": 6, "forgetting_rows": 8},
        "output": {"dir": str(out)},
    }
    return out, train(config)


def test_result_has_validation_test_forgetting_and_base(scored_run):
    out, result = scored_run
    assert result["status"] == "done", result["error"]
    assert result["validation"]["loss"] == result["eval_loss"] and result["validation"]["n_tokens"] > 0
    test = result["test"]
    assert test["n_rows"] == 8 and math.isfinite(test["loss"]) and 0.0 <= test["rouge_l"] <= 1.0
    assert test["exact_match"] is None and test["n_verifiable"] == 0  # a plain instruction file has no verifiable rows
    base = result["base"]
    assert base["validation"]["loss"] == result["base_eval_loss"] and base["test"]["n_rows"] == 8
    assert base["test"]["loss"] != test["loss"]  # the adapter changed the model
    forgetting = result["forgetting"]
    assert forgetting["source"] == "builtin" and forgetting["n_tokens"] > 0
    assert forgetting["delta"] == pytest.approx(forgetting["loss"] - forgetting["base_loss"])
    assert result["data"]["n_test"] == 8 and set(result["data"]["split_hashes"]) == {"train", "validation", "test"}
    assert "nan" not in (out / "result.json").read_text().lower()


def test_predictions_file_matches_the_metrics(scored_run):
    out, result = scored_run
    rows = read_predictions(out)
    adapter = [r for r in rows if r["source"] == "adapter" and r["split"] == "test"]
    base = [r for r in rows if r["source"] == "base" and r["split"] == "test"]
    assert len(adapter) == len(base) == 8 and {r["row"] for r in adapter} == {r["row"] for r in base}
    assert result["test"]["rouge_l"] == pytest.approx(sum(r["rouge_l"] for r in adapter) / 8)
    assert result["base"]["test"]["rouge_l"] == pytest.approx(sum(r["rouge_l"] for r in base) / 8)
    # Every line is strict JSON (NaN or Infinity would raise here) with exactly the documented keys and types.
    documented = {"source", "split", "row", "task", "prompt", "reference", "prediction", "exact_match", "rouge_l", "new_tokens"}

    def no_constants(name: str):
        raise AssertionError(f"predictions.jsonl holds {name}, which is not JSON")

    lines = [line for line in (out / PREDICTIONS_FILE).read_text(encoding="utf-8").split("\n") if line]
    assert len(lines) == len(rows) == 16
    # a data row's own fields are on its first line only (the base model's); read_predictions restores them
    seen = set()
    for line in lines:
        row = json.loads(line, parse_constant=no_constants)
        first = (row["split"], row["row"]) not in seen
        seen.add((row["split"], row["row"]))
        assert set(row) == (documented if first else documented - {"task", "prompt", "reference"}), line
        assert row["source"] == ("base" if first else "adapter"), line
        assert row["split"] == "test" and isinstance(row["row"], int) and isinstance(row["prediction"], str)
        assert not first or isinstance(row["reference"], str)
        assert isinstance(row["new_tokens"], int)
        assert row["exact_match"] is None and 0.0 <= row["rouge_l"] <= 1.0
