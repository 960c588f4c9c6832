"""Data-driven and dynamic allocation (gradient_importance, spectrum, eva, adalora, from_run) on a tiny
random Llama (2 layers, hidden 32) with the embedded tokenizer and a hand-made instruction file."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import warnings
from pathlib import Path

import pytest
import torch

from adaptive_lora import plan, train
from adaptive_lora.cli import main as cli_main
from adaptive_lora.config import RunConfig
from adaptive_lora.errors import UserError
from adaptive_lora.export import dropped_by_retraining, load_run_allocation, open_run
from adaptive_lora.schema import read_allocation
from adaptive_lora.training import prepare_base

DATA_DRIVEN = [
    ("gradient_importance", {}),
    ("gradient_importance", {"score": "fisher"}),
    ("spectrum", {}),
    ("spectrum", {"measure": "stable_rank"}),
    ("eva", {}),
]


@pytest.fixture(scope="module")
def tiny_dir(tiny_llama_dir) -> Path:
    return tiny_llama_dir  # conftest's 2-layer Llama with the embedded tokenizer


def make_config(model_dir: Path, data: Path, out: Path, strategy: str = "uniform", **overrides) -> RunConfig:
    config = RunConfig.from_dict(
        {
            "model": {"name": str(model_dir)},
            "data": {"source": str(data), "val_set_size": 8},
            "allocation": {"strategy": strategy, "lora_r": 4, "budget_rank": 4},
            "training": {"max_steps": 6, "micro_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "sequence_len": 128},
            "output": {"dir": str(out)},
        }
    )
    return config.with_overrides(overrides)


@pytest.fixture(scope="module")
def base(tiny_dir, data_file, tmp_path_factory):
    return prepare_base(make_config(tiny_dir, data_file, tmp_path_factory.mktemp("unused")))


def within_one_step(allocation) -> bool:
    target = allocation.budget["target"]
    step = max(m.params_per_rank for m in allocation.anatomy.modules)
    return target - step < allocation.trainable_params <= target


# --- budgets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy, params", DATA_DRIVEN)
def test_every_data_driven_strategy_meets_the_budget(base, strategy, params):
    for budget_rank in (2, 4):
        allocation = plan(base.model, strategy, params, budget_rank=budget_rank, data=base.data, seed=0)
        assert within_one_step(allocation), (strategy, budget_rank, allocation.trainable_params, allocation.budget)
        assert allocation.scores and set(allocation.scores) == set(allocation.anatomy.names)
        assert allocation.meta["probe_time_s"] >= 0 and "probe_batches" in allocation.meta
    default = plan(base.model, strategy, params, lora_r=4, data=base.data, seed=0)  # no budget: uniform lora_r's
    assert default.budget["target"] == 4 * default.anatomy.params_per_rank() and within_one_step(default)


def test_adalora_plan_and_from_run_meet_a_budget(base, tmp_path):
    adalora = plan(base.model, "adalora", budget_rank=3)
    assert within_one_step(adalora) and set(adalora.ranks.values()) <= {2, 3, 4}
    source = plan(base.model, "linear_decay", {"start": 8, "end": 2})
    source.save(tmp_path / "allocation.json")
    for budget_rank in (2, 5):
        rescaled = plan(base.model, "from_run", {"run": str(tmp_path)}, budget_rank=budget_rank)
        assert within_one_step(rescaled)


def test_zero_rank_modules_from_a_shape_are_recorded(base):
    with pytest.raises(UserError, match="probes training data"):
        plan(base.model, "gradient_importance")  # a probe needs training rows
    model = copy.deepcopy(base.model)
    dead = base.anatomy.names[1]
    with torch.no_grad():
        model.get_submodule(dead).weight.zero_()  # score 0; with min_rank=0 its shape entry is 0
    allocation = plan(model, "spectrum", {"min_rank": 0.0}, budget_rank=2)
    assert allocation.meta["zero_rank_modules"] == [dead] and dead not in allocation.ranks
    assert within_one_step(allocation)


# --- the gradient probe ----------------------------------------------------------------------------


def test_probe_is_deterministic_reads_only_training_rows_and_leaves_the_base_unchanged(base):
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    first = plan(base.model, "gradient_importance", {"probe_batches": 3}, data=base.data, seed=0)
    again = plan(base.model, "gradient_importance", {"probe_batches": 3}, data=base.data, seed=0)
    assert first.scores == again.scores and first.ranks == again.ranks
    rows = first.meta["probe_rows"]
    assert len(rows) == 12 and len(set(rows)) == 12 and all(0 <= i < len(base.data.train) for i in rows)
    # Poison the eval split: the probe must not notice.
    poisoned = dataclasses.replace(base.data, eval=[{"input_ids": [5] * 40, "labels": [7] * 40} for _ in base.data.eval])
    assert plan(base.model, "gradient_importance", {"probe_batches": 3}, data=poisoned, seed=0).scores == first.scores
    # ... while other training rows do change the scores.
    assert plan(base.model, "gradient_importance", {"probe_batches": 3}, data=base.data, seed=1).scores != first.scores
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad for p in base.model.parameters()) and all(p.grad is None for p in base.model.parameters())
    assert not base.model.training


def test_sensitivity_is_weight_times_gradient(base):
    from adaptive_lora.strategies.gradient import gradient_scores
    from adaptive_lora.strategies.scoring import draw_probe_batches as probe_batches

    batches, _ = probe_batches(base.data, base.model, 0, 1, 4)
    name = base.anatomy.names[0]
    scores, tokens = gradient_scores(base.model, [name], batches, "sensitivity")
    model = copy.deepcopy(base.model)
    weight = model.get_submodule(name).weight
    weight.requires_grad_(True)
    from adaptive_lora.loss import supervised_loss_sum

    loss_sum, count = supervised_loss_sum(model, batches[0])
    (loss_sum / count).backward()
    assert tokens == int(count)
    # Summed in fp32 as the probe does: on CPUs with bf16 units the fixture's base is bf16.
    expected = (weight.detach().float() * weight.grad.float()).abs().sum()
    assert math.isclose(scores[name], float(expected), rel_tol=1e-5)


# --- spectrum --------------------------------------------------------------------------------------


def test_spectrum_scores_a_low_rank_weight_below_a_full_rank_one(base):
    from adaptive_lora.strategies.spectrum import spectral_score

    model = copy.deepcopy(base.model)
    low, full = base.anatomy.names[0], base.anatomy.names[4]  # q_proj (32x32), and a 32->48 MLP projection
    weight = model.get_submodule(low).weight
    with torch.no_grad():
        weight.copy_(torch.outer(torch.randn(weight.shape[0]), torch.randn(weight.shape[1])))  # rank one
    for measure in ("effective_rank", "stable_rank"):
        allocation = plan(model, "spectrum", {"measure": measure}, budget_rank=4)
        assert allocation.scores[low] < allocation.scores[full], measure
        assert allocation.ranks[low] <= allocation.ranks[full]
    assert spectral_score(torch.eye(16)) == pytest.approx(16.0) and spectral_score(torch.eye(16), "stable_rank") == pytest.approx(
        16.0
    )
    assert spectral_score(torch.ones(8, 8)) == pytest.approx(1.0)


# --- EVA -------------------------------------------------------------------------------------------


def test_eva_plan_and_initialisation_run_on_cpu(base, tiny_dir, data_file, tmp_path):
    from adaptive_lora.strategies import TrainingContext, get_strategy

    allocation = plan(base.model, "eva", {"rho": 2.0}, budget_rank=4, data=base.data, seed=0)
    eva_ranks = allocation.meta["eva_ranks"]
    assert sum(eva_ranks.values()) == allocation.meta["eva_rank_budget"] == 8 * len(base.anatomy.names)  # r=8 default
    assert max(eva_ranks.values()) <= 16 and within_one_step(allocation)
    eva = get_strategy("eva")
    attached = eva.attach(copy.deepcopy(base.model), allocation, TrainingContext(data=base.data, seed=0))
    for name, module in attached.model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            assert torch.allclose(a @ a.T, torch.eye(a.shape[0]), atol=1e-4), name  # EVA components are orthonormal
            assert not b.any()
    finalized = eva.finalize(attached, allocation)
    assert finalized.meta["eva_init_time_s"] > 0 and finalized.meta["probe_time_s"] >= finalized.meta["eva_init_time_s"]


def test_eva_training_end_to_end(tiny_dir, data_file, tmp_path, base):
    result = train(make_config(tiny_dir, data_file, tmp_path / "run", "eva", **{"training.max_steps": 2}), base=base)
    assert result["status"] == "done", result["error"]
    saved = read_allocation(tmp_path / "run").to_dict()
    assert saved["meta"]["eva_init"].startswith("lora_A from EVA") and result["probe_time_s"] >= saved["meta"]["eva_init_time_s"]
    assert result["trainable_params"] == saved["trainable_params"] <= saved["budget"]["target"]
    run = open_run(tmp_path / "run")  # the TRL / axolotl exports retrain plain LoRA: export says what they drop
    assert "initialisation" in dropped_by_retraining(run, load_run_allocation(run))


# --- AdaLoRA ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def adalora_run(tiny_dir, data_file, tmp_path_factory, base):
    """One AdaLoRA run (6 steps, budget of uniform r2, init_r 4), with the trained PEFT model captured."""
    from adaptive_lora.strategies.adalora import AdaLoraStrategy

    captured = {}
    original = AdaLoraStrategy.attach

    def capture(self, *args, **kwargs):
        captured["attached"] = original(self, *args, **kwargs)
        return captured["attached"]

    AdaLoraStrategy.attach = capture
    try:
        out = tmp_path_factory.mktemp("adalora") / "run"
        config = make_config(
            tiny_dir,
            data_file,
            out,
            "adalora",
            **{
                "allocation.budget_rank": 2,
                "allocation.params.tinit": 1,
                "allocation.params.tfinal": 2,
                "allocation.params.init_r": 4,
            },
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train(config, base=base)
    finally:
        AdaLoraStrategy.attach = original
    captured["warnings"] = [str(w.message) for w in caught]
    return out, result, captured


def test_adalora_final_pattern_fits_the_budget_and_is_recorded(adalora_run, base):
    out, result, captured = adalora_run
    attached = captured["attached"]
    assert result["status"] == "done", result["error"]
    run = open_run(out)  # the TRL / axolotl exports retrain plain LoRA: export says what they drop
    assert "training dynamics" in dropped_by_retraining(run, load_run_allocation(run))
    text = (out / "allocation.json").read_text()
    saved = read_allocation(out).to_dict()
    meta = saved["meta"]
    target = saved["budget"]["target"]
    lines = text.splitlines()  # compact: a role's ranks over the layers, or a snapshot of the ranks, is one line
    assert sum(line.strip().startswith('"rank": [') for line in lines) == len({m["role"] for m in saved["modules"]})
    snapshots = [line.strip().rstrip(",") for line in lines if line.strip().startswith("[") and line.strip() != "["]
    assert [json.loads(line) for line in snapshots if line != "[]"] == meta["rank_history"]["ranks"]
    step = max(m.params_per_rank for m in base.anatomy.modules)
    assert target - step < saved["trainable_params"] <= target == 2 * base.anatomy.params_per_rank()
    assert result["trainable_params"] == saved["trainable_params"]
    assert meta["init_r"] == 4 and set(meta["initial_ranks"].values()) == {4}
    assert meta["schedule"] == {"total_step": 6, "tinit": 1, "tfinal": 2, "deltaT": 1}
    history = meta["rank_history"]
    assert history["steps"][0] == 0 and history["steps"][-1] == 6 and len(history["ranks"][0]) == len(history["modules"])
    final = {m["name"]: m["rank"] for m in saved["modules"]}
    assert dict(zip(history["modules"], history["ranks"][-1])) == {n: final.get(n, 0) for n in history["modules"]}
    assert set(meta.get("zero_rank_modules", [])) == set(base.anatomy.names) - set(final)
    assert len(set(final.values())) > 1 or meta.get("zero_rank_modules")  # AdaLoRA moved rank between modules
    # The masked E entries are exactly the pruned ranks.
    for name, module in attached.model.named_modules():
        if hasattr(module, "lora_E") and "default" in module.lora_E:
            key = name.replace("base_model.model.", "", 1)
            assert int((module.lora_E["default"] != 0).sum()) <= final.get(key, 0)


def test_adalora_reported_loss_is_plain_cross_entropy(adalora_run, base):
    """The saved AdaLoRA adapter, reloaded with plain PEFT on a fresh copy of the base, gives the reported
    eval loss as plain cross-entropy: the orthogonality penalty is trained on, never reported."""
    from peft import PeftModel

    out, result, captured = adalora_run
    attached = captured["attached"]
    model = PeftModel.from_pretrained(copy.deepcopy(base.model), out / "adapter")
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in base.data.eval:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor(row["labels"][1:])
            logits = model(input_ids=ids).logits[0, :-1]
            mask = labels != -100
            total += float(torch.nn.functional.cross_entropy(logits[mask].float(), labels[mask], reduction="sum"))
            count += int(mask.sum())
    # On CPUs with bf16 units the fixture's base is bf16, and this plain forward is not under autocast.
    assert math.isclose(result["eval_loss"], total / count, rel_tol=1e-5 if base.precision == "fp32" else 1e-3)
    # The penalty exists, but only for training.
    assert attached.extra_loss is not None and float(attached.extra_loss(model).detach()) > 0


def test_an_adapter_with_pruned_modules_saves_without_the_incomplete_shard_warning(adalora_run):
    """Modules AdaLoRA pruned to rank 0 save as empty tensors on purpose (the reload test above shows the
    adapter is whole), so PEFT's "invalid shape ... ZeRO-3" warning would only mislead the user."""
    out, _, captured = adalora_run
    assert json.loads((out / "allocation.json").read_text())["meta"]["zero_rank_modules"]  # something was pruned
    assert not [w for w in captured["warnings"] if "invalid shape" in w]


def test_from_run_reproduces_the_source_ranks(adalora_run, base, tmp_path):
    out, result, _ = adalora_run
    source = {m.name: m.rank for m in read_allocation(out).modules}
    as_is = plan(base.model, "from_run", {"run": str(out)})
    assert as_is.ranks == source and as_is.budget["target"] is None
    same_budget = plan(base.model, "from_run", {"run": str(out / "allocation.json")}, budget=result["trainable_params"])
    assert same_budget.ranks == source
    assert set(as_is.meta["zero_rank_modules"]) == set(base.anatomy.names) - set(source)
    with pytest.raises(UserError, match="does not exist"):
        plan(base.model, "from_run", {"run": str(tmp_path / "missing")})


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_plan_runs_data_driven_strategies(tiny_dir, data_file, tmp_path, capsys):
    assert cli_main(["plan", "--model", str(tiny_dir), "--strategy", "spectrum", "--budget-rank", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"] == "spectrum"
    out = tmp_path / "alloc.json"
    args = ["plan", "--model", str(tiny_dir), "--strategy", "gradient_importance", "--budget-rank", "4", "--out", str(out)]
    assert cli_main(args) == 2 and "--data" in capsys.readouterr().err
    assert cli_main([*args, "--data", str(data_file), "--set", "probe_batches=2"]) == 0
    saved = json.loads(out.read_text())
    assert saved["meta"]["probe_batches"] == 2 and saved["scores"]
    assert cli_main(["strategies"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("gradient_importance", "spectrum", "eva", "adalora", "from_run"))


# --- figures ---------------------------------------------------------------------------------------


def test_importance_figures_render_scores_and_adalora_ranks(adalora_run, base, tmp_path):
    from adaptive_lora.report.figures_importance import importance_figures, runs_from_frame

    out, _, _ = adalora_run
    probe = plan(base.model, "gradient_importance", budget_rank=4, data=base.data, seed=0)
    probe.save(tmp_path / "probe" / "allocation.json")
    import pandas as pd

    df = pd.DataFrame(
        [
            {"label": "adalora", "budget_label": "r2", "status": "done", "seed": 0, "run_dir": str(out)},
            {"label": "gradient", "budget_label": "r4", "status": "done", "seed": 0, "run_dir": str(tmp_path / "probe")},
            {"label": "broken", "budget_label": "r4", "status": "error", "seed": 0, "run_dir": str(tmp_path / "missing")},
        ]
    )
    runs = runs_from_frame(df)
    assert [label for label, _ in runs] == ["adalora [r2]", "gradient [r4]"]
    figures = importance_figures(runs)
    assert set(figures) == {"importance_scores", "adalora_ranks"}
    assert all(png.startswith(b"\x89PNG") for png in figures.values())
    assert importance_figures([]) == {}
