"""CONTRIBUTING.md's example strategy, run as written: registered, planned, budget-matched, trained."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adaptive_lora import plan, train
from adaptive_lora.strategies import REGISTRY, get_strategy

GUIDE = Path(__file__).parents[1] / "CONTRIBUTING.md"


@pytest.fixture
def example_strategy():
    code = re.search(r"## Add your own strategy.*?```python\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S).group(1)
    exec(compile(code, str(GUIDE), "exec"), {})
    yield get_strategy("middle_heavy")
    REGISTRY.pop("middle_heavy", None)


def test_the_example_strategy_plans_and_trains(example_strategy, tiny_llama_dir, data_file, tmp_path):
    from tiny_models import meta_model, tiny_config

    model = meta_model(tiny_config("llama", num_layers=6))
    allocation = plan(model, "middle_heavy", {"rank": 8})
    by_layer = {m.layer: allocation.ranks[m.name] for m in allocation.modules}
    assert by_layer == {0: 4, 1: 4, 2: 8, 3: 8, 4: 4, 5: 4}
    matched = plan(model, "middle_heavy", budget_rank=4)
    assert matched.trainable_params <= matched.budget["target"] and len(set(matched.ranks.values())) == 2
    result = train(
        {
            "model": {"name": str(tiny_llama_dir)},
            "data": {"source": str(data_file), "val_set_size": 4},
            "allocation": {"strategy": "middle_heavy", "params": {"rank": 4}},
            "training": {"max_steps": 2, "micro_batch_size": 4, "sequence_len": 96},
            "eval": {"generate": False, "forgetting": None},
            "output": {"dir": str(tmp_path / "run")},
        }
    )
    assert result["status"] == "done", result["error"]
    assert (
        result["strategy"] == "middle_heavy"
        and result["trainable_params"] == plan(str(tiny_llama_dir), "middle_heavy", {"rank": 4}).trainable_params
    )
