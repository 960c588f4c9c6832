"""Training runs on a tiny random Llama (built from a config) with the embedded tokenizer,
plus one short run on the embedded model itself."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from adaptive_lora import plan, train
from adaptive_lora.cli import main as cli_main
from adaptive_lora.config import RunConfig
from adaptive_lora.schema import read_allocation
from adaptive_lora.training import prepare_base


def make_config(model_dir: Path, data: Path, out: Path, **overrides) -> RunConfig:
    config = RunConfig.from_dict(
        {
            "model": {"name": str(model_dir)},
            "data": {"source": str(data), "val_set_size": 8},
            "allocation": {"strategy": "linear_decay", "params": {"start": 8, "end": 2}},
            "training": {"max_steps": 4, "micro_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "sequence_len": 128},
            "output": {"dir": str(out)},
        }
    )
    return config.with_overrides(overrides)


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_is_complete_and_numbers_are_sane(tiny_llama_dir, data_file, tmp_path):
    result = train(make_config(tiny_llama_dir, data_file, tmp_path / "run"))
    run = tmp_path / "run"
    assert result["status"] == "done", result["error"]
    for name in ("config.yaml", "allocation.json", "data_report.json", "metrics.jsonl", "train.log", "result.json"):
        assert (run / name).is_file(), name
    assert (run / "adapter" / "adapter_config.json").is_file()
    assert json.loads((run / "result.json").read_text()) == result  # the API returns what the CLI writes
    assert result["steps"] == 4 and len([m for m in read_metrics(run) if "train_loss" in m]) == 4
    assert result["eval_loss"] < result["base_eval_loss"]
    assert math.isclose(result["perplexity"], math.exp(result["eval_loss"]), rel_tol=1e-9)
    assert result["trainable_params"] == plan(str(tiny_llama_dir), "linear_decay", {"start": 8, "end": 2}).trainable_params
    assert result["tokens_per_s"] > result["supervised_tokens_per_s"] > 0
    assert result["peak_memory_mb"] > 0 and result["environment"]["torch"]
    assert result["data"]["n_eval"] == 8 and result["data"]["hash"]


def test_base_weights_frozen_and_adapter_weights_change(tiny_llama_dir, data_file, tmp_path):
    config = make_config(tiny_llama_dir, data_file, tmp_path / "run")
    base = prepare_base(config)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    result = train(config, base=base)
    assert result["status"] == "done"
    after = base.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the shared base model was modified"
    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "LoRA B starts at zero and must have been trained"


def test_planned_ranks_are_the_saved_adapter_shapes(tiny_llama_dir, data_file, tmp_path):
    train(make_config(tiny_llama_dir, data_file, tmp_path / "run"))
    allocation = read_allocation(tmp_path / "run").to_dict()
    adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    ranks = {m["name"]: m["rank"] for m in allocation["modules"]}
    assert len({*ranks.values()}) > 1  # linear decay: heterogeneous ranks
    for name, rank in ranks.items():
        a = next(v for k, v in adapter.items() if k.endswith(f"{name}.lora_A.weight"))
        assert a.shape[0] == rank, name


def test_same_config_and_seed_give_identical_losses(tiny_llama_dir, data_file, tmp_path):
    first = train(make_config(tiny_llama_dir, data_file, tmp_path / "a"))
    second = train(make_config(tiny_llama_dir, data_file, tmp_path / "b"))
    other_seed = train(make_config(tiny_llama_dir, data_file, tmp_path / "c", **{"training.seed": 1}))
    losses = lambda d: [m["train_loss"] for m in read_metrics(d) if "train_loss" in m]  # noqa: E731
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert first["eval_loss"] == second["eval_loss"]
    assert other_seed["eval_loss"] != first["eval_loss"]


def test_shared_base_gives_the_same_result_as_a_fresh_load(tiny_llama_dir, data_file, tmp_path):
    config = make_config(tiny_llama_dir, data_file, tmp_path / "shared1")
    base = prepare_base(config)
    before = config.with_overrides(
        {"allocation.strategy": "uniform", "allocation.params": {}, "output.dir": str(tmp_path / "before")}
    )
    assert train(before, base=base)["status"] == "done"  # another run on the same base first
    shared = train(config, base=base)
    fresh = train(make_config(tiny_llama_dir, data_file, tmp_path / "fresh"))
    assert shared["eval_loss"] == fresh["eval_loss"] and shared["base_eval_loss"] == fresh["base_eval_loss"]


def test_reloaded_adapter_reproduces_the_reported_eval_loss(tiny_llama_dir, data_file, tmp_path):
    from peft import PeftModel

    from adaptive_lora.loss import evaluate_loss
    from adaptive_lora.models import load_model

    # fp32: the reloaded model below is plain fp32, and auto would give bf16 on CPUs with bf16 units
    config = make_config(tiny_llama_dir, data_file, tmp_path / "run", **{"model.precision": "fp32"})
    result = train(config)
    base = prepare_base(config)  # fresh base and the same eval split
    model = PeftModel.from_pretrained(load_model(str(tiny_llama_dir)), tmp_path / "run" / "adapter")
    reloaded = evaluate_loss(model, base.eval_loader(), "cpu")
    assert abs(reloaded["loss"] - result["eval_loss"]) < 1e-5


def test_huge_learning_rate_is_reported_as_diverged_without_nan(tiny_llama_dir, data_file, tmp_path):
    config = make_config(
        tiny_llama_dir,
        data_file,
        tmp_path / "run",
        **{"training.learning_rate": 1e12, "training.max_grad_norm": 0.0, "training.max_steps": 8, "training.warmup_ratio": 0.0},
    )
    result = train(config)
    text = (tmp_path / "run" / "result.json").read_text()
    assert result["status"] == "diverged", result
    assert 1 <= result["diverged_step"] <= 8 and "non-finite" in result["error"]
    assert "NaN" not in text and "Infinity" not in text
    assert result["eval_loss"] is None and not (tmp_path / "run" / "adapter").exists()


def test_injected_nan_stops_at_that_step(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    from adaptive_lora.training import engine

    calls = {"n": 0}
    original = engine.supervised_loss_sum

    def nan_on_third_call(model, batch):
        calls["n"] += 1
        loss, count = original(model, batch)
        return (loss * float("nan"), count) if calls["n"] == 3 else (loss, count)

    monkeypatch.setattr(engine, "supervised_loss_sum", nan_on_third_call)
    result = train(make_config(tiny_llama_dir, data_file, tmp_path / "run"))
    assert result["status"] == "diverged" and result["diverged_step"] == 3
    assert result["last_finite_loss"] is not None and math.isfinite(result["last_finite_loss"])


@pytest.mark.parametrize(
    "exception, status",
    [
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "oom"),
        (RuntimeError("something broke\nsecond line"), "error"),
    ],
)
def test_failures_become_statuses_with_one_line(tiny_llama_dir, data_file, tmp_path, monkeypatch, exception, status):
    from adaptive_lora.training import engine

    def fail(model, batch):
        raise exception

    monkeypatch.setattr(engine, "supervised_loss_sum", fail)
    result = train(make_config(tiny_llama_dir, data_file, tmp_path / "run"))
    assert result["status"] == status and "\n" not in result["error"]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == status


def test_finished_run_is_not_overwritten_unless_asked(tiny_llama_dir, data_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(tiny_llama_dir / "missing.yaml")]
    assert cli_main(args) == 2 and "does not exist" in capsys.readouterr().err
    common = [
        "train",
        f"model.name={tiny_llama_dir}",
        f"data.source={data_file}",
        "data.val_set_size=8",
        "training.max_steps=2",
        "training.micro_batch_size=4",
        "training.sequence_len=128",
        "--out",
        str(out),
    ]
    assert cli_main(common) == 0
    first = (out / "result.json").read_text()
    assert cli_main(common) == 0
    assert "already holds a finished run" in capsys.readouterr().out
    assert (out / "result.json").read_text() == first
    different = [*common, "training.max_steps=1"]
    assert cli_main(different) == 2 and "different config" in capsys.readouterr().err
    assert (out / "result.json").read_text() == first
    assert cli_main([*common, "--overwrite"]) == 0
    assert json.loads((out / "result.json").read_text())["wall_time_s"] != json.loads(first)["wall_time_s"]


def test_resume_continues_from_the_last_checkpoint(tiny_llama_dir, data_file, tmp_path):
    config = make_config(tiny_llama_dir, data_file, tmp_path / "run", **{"training.save_steps": 2, "training.max_steps": 4})

    def interrupt_at_step_3(step, total, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, progress=interrupt_at_step_3)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "interrupted"
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-2").is_dir()
    resumed = train(config.with_overrides({"output.resume": True}))
    assert resumed["status"] == "done" and resumed["steps"] == 4
    steps = [m["step"] for m in read_metrics(tmp_path / "run") if "train_loss" in m]
    assert steps == [3, 4]  # steps 1-2 came from the checkpoint


def test_yaml_config_with_cli_overrides(tiny_llama_dir, data_file, tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"model: {{name: {tiny_llama_dir}}}\ndata: {{source: {data_file}, val_set_size: 8}}\n"
        "training: {max_steps: 50, micro_batch_size: 4, sequence_len: 128}\n"
    )
    assert (
        cli_main(["train", str(path), "training.max_steps=1", "--strategy", "attention_heavy", "--out", str(tmp_path / "r")]) == 0
    )
    saved = (tmp_path / "r" / "config.yaml").read_text()
    assert "max_steps: 1" in saved and "strategy: attention_heavy" in saved


def test_evaluation_never_runs_in_fp16():
    from adaptive_lora.environment import autocast_dtype, resolve_precision

    assert resolve_precision("auto", "cpu") in ("fp32", "bf16")  # which one depends on the CPU's bf16 units
    assert autocast_dtype("fp16") is None and autocast_dtype("bf16") is torch.bfloat16


@pytest.mark.embedded
def test_short_run_on_the_embedded_model_on_skills_changes_exact_match(tmp_path):
    """`adaptive-lora train --data skills`: a short run lowers the loss and changes the test exact match."""
    out = tmp_path / "run"
    # two families the embedded model answers at 0% before and well above 0% after a short run (datasheet)
    source = "skills:n=96,families=json_field+max_min,difficulties=1"
    overrides = [
        "data.val_set_size=8",
        "data.test_set_size=24",
        "training.max_steps=6",
        "training.micro_batch_size=8",
        "training.learning_rate=2e-3",
        "training.sequence_len=128",
        "allocation.lora_dropout=0",
        "eval.max_new_tokens=8",
        "eval.forgetting_rows=8",
    ]
    assert cli_main(["train", "--data", source, "--out", str(out), *overrides]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["eval_loss"] < result["base_eval_loss"] and result["test"]["loss"] < result["base"]["test"]["loss"]
    assert result["test"]["n_verifiable"] == 24 and result["test"]["exact_match"] is not None
    assert result["test"]["exact_match"] != result["base"]["test"]["exact_match"]
    assert result["forgetting"]["source"] == "builtin" and result["forgetting"]["delta"] is not None


NO_FORGETTING = {"eval.forgetting": None}  # for tests that do not measure it: the dearest part of a tiny run


def test_non_finite_gradient_with_a_finite_loss_stops_at_that_step(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    """The gradient check on its own: the loss stays finite, one LoRA gradient becomes inf at step 3."""
    from adaptive_lora.training import engine

    calls = {"n": 0}
    original = engine.supervised_loss_sum

    def inf_gradient_on_third_step(model, batch):
        calls["n"] += 1
        loss, count = original(model, batch)
        if calls["n"] == 3:
            name, param = next((n, p) for n, p in model.named_parameters() if "lora_B" in n and p.requires_grad)
            param.register_hook(lambda grad: torch.full_like(grad, float("inf")))  # (out, r): every entry inf
        return loss, count

    monkeypatch.setattr(engine, "supervised_loss_sum", inf_gradient_on_third_step)
    result = train(make_config(tiny_llama_dir, data_file, tmp_path / "run", **NO_FORGETTING))
    assert result["status"] == "diverged" and result["diverged_step"] == 3, result
    assert "gradient" in result["error"] and "loss" not in result["error"]
    assert result["last_finite_loss"] is not None and math.isfinite(result["last_finite_loss"])
    assert [m["step"] for m in read_metrics(tmp_path / "run") if "train_loss" in m] == [1, 2]  # step 3 never applied


def test_trainer_normalises_by_the_positions_the_loss_sums_over(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    """With the prompt supervised (position 0 labelled), num_items_in_batch must still count exactly
    the positions the loss sums over, labels[:, 1:] != -100, under any counting rule (Trainer's shifted
    count, or the plain count of older transformers and of models whose loss Trainer does not know)."""
    from adaptive_lora.training.engine import AdapterTrainer

    seen = []
    original = AdapterTrainer.compute_loss

    def spy(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"]
        seen.append(
            {
                "num_items_in_batch": int(num_items_in_batch),
                "summed": int((labels[:, 1:] != -100).sum()),
                "labelled": int((labels != -100).sum()),
                "prompt_supervised": bool((labels[:, 1:3] != -100).all()),
            }
        )
        return original(self, model, inputs, return_outputs, num_items_in_batch)

    monkeypatch.setattr(AdapterTrainer, "compute_loss", spy)
    config = make_config(
        tiny_llama_dir,
        data_file,
        tmp_path / "run",
        **{"data.train_on_prompt": True, "training.max_steps": 2, "training.gradient_accumulation_steps": 2, **NO_FORGETTING},
    )
    assert train(config)["status"] == "done"
    assert len(seen) == 4 and all(s["prompt_supervised"] for s in seen)
    for step in (seen[0:2], seen[2:4]):  # two micro-batches per optimizer step
        assert step[0]["num_items_in_batch"] == step[1]["num_items_in_batch"] == sum(s["summed"] for s in step)
    assert all(s["labelled"] == s["summed"] for s in seen)  # position 0 is never labelled, so both rules agree


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_num_threads_is_applied_and_recorded(tiny_llama_dir, data_file, tmp_path, restore_torch_threads):
    torch.set_num_threads(2)
    overrides = {"training.num_threads": 1, "training.max_steps": 1, **NO_FORGETTING}
    result = train(make_config(tiny_llama_dir, data_file, tmp_path / "run", **overrides))
    assert result["status"] == "done" and result["environment"]["threads"] == 1


def test_installed_versions_meet_the_declared_floors():
    """Every declared dependency (pyproject.toml in a checkout, else the installed metadata) is met by
    what is installed, and no floor admits transformers 4.x, which lacks the 5.x TrainingArguments used."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        declared = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
        required = set(project["dependencies"])
    else:
        declared = metadata.requires("adaptive-lora") or []
        required = {r for r in declared if "extra ==" not in r}
    problems = []
    for line in declared:
        requirement = Requirement(line)
        try:
            installed = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            if line in required:
                problems.append(f"{requirement.name} is required but not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            problems.append(f"{requirement.name} {installed} does not meet {requirement.specifier}")
    assert not problems, problems
    transformers_floor = next(Requirement(r) for r in declared if Requirement(r).name == "transformers")
    assert not transformers_floor.specifier.contains(Version("4.99"), prereleases=True)
