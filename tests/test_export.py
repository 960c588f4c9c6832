"""`adaptive-lora export`: a merged model with the adapter's logits, the adapter alone, the TRL
snippet and the axolotl fragment building exactly the run's adapter, and refusals in one line."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from adaptive_lora import Allocation, inspect_model, train, verify
from adaptive_lora.allocation import alphas_for
from adaptive_lora.cli import main as cli_main
from adaptive_lora.config import RunConfig
from adaptive_lora.errors import UserError
from adaptive_lora.export import (
    axolotl_fragment,
    compact_lora_kwargs,
    export_peft,
    load_run_allocation,
    lora_config_source,
    open_run,
)
from tiny_models import tiny_inputs, tiny_model


@pytest.fixture(scope="module")
def finished_run(tiny_llama_dir, data_file, tmp_path_factory) -> Path:
    """Two steps at a high learning rate: LoRA B leaves zero, so the adapter changes the logits."""
    run = tmp_path_factory.mktemp("export") / "run"
    config = RunConfig.from_dict(
        {
            "model": {"name": str(tiny_llama_dir)},
            "data": {"source": str(data_file), "val_set_size": 8},
            "allocation": {"strategy": "linear_decay", "params": {"start": 8, "end": 2}},
            "training": {"max_steps": 2, "micro_batch_size": 4, "learning_rate": 1e-2, "warmup_ratio": 0.0, "sequence_len": 128},
            "output": {"dir": str(run)},
        }
    )
    result = train(config)
    assert result["status"] == "done", result["error"]
    return run


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tiny_inputs(length=12)).logits  # (B, T, V)


def adapter_logits(model_dir: Path, adapter_dir: Path) -> torch.Tensor:
    return logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir))


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_merged_model_gives_the_adapters_logits(finished_run, tiny_llama_dir, tmp_path, capsys):
    lora_b = [w for k, w in load_file(finished_run / "adapter" / "adapter_model.safetensors").items() if "lora_B" in k]
    assert lora_b and max(float(w.abs().max()) for w in lora_b) > 0  # trained: the merge cannot pass trivially
    out = tmp_path / "merged"
    assert cli_main(["export", str(finished_run), "--merged", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "peft_config=peft_config" in printed and f"wrote the merged model (float32) to {out}" in printed
    assert (out / "model.safetensors").is_file() and (out / "tokenizer_config.json").is_file()

    expected = adapter_logits(tiny_llama_dir, finished_run / "adapter")
    merged = logits(AutoModelForCausalLM.from_pretrained(out))
    base = logits(AutoModelForCausalLM.from_pretrained(tiny_llama_dir))
    assert (expected - base).abs().max() > 1e-3
    assert (merged - expected).abs().max() < 1e-4


def test_peft_export_loads_with_plain_peft(finished_run, tiny_llama_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()  # an empty directory is fine
    export_peft(open_run(finished_run), out)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert torch.equal(adapter_logits(tiny_llama_dir, out), adapter_logits(tiny_llama_dir, finished_run / "adapter"))


def test_outputs_are_never_overwritten(finished_run, tmp_path, capsys):
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    assert cli_main(["export", str(finished_run), "--peft", str(users)]) == 2
    assert str(users) in one_error_line(capsys)
    assert [p.name for p in users.iterdir()] == ["notes.txt"] and (users / "notes.txt").read_text() == "keep me"

    fragment = tmp_path / "lora.yaml"
    fragment.write_text("lora_r: 4\n")
    assert cli_main(["export", str(finished_run), "--axolotl", str(fragment), "--peft", str(tmp_path / "new")]) == 2
    assert str(fragment) in one_error_line(capsys)
    assert fragment.read_text() == "lora_r: 4\n" and not (tmp_path / "new").exists()  # checked before anything is written


def test_only_a_finished_run_is_exported(finished_run, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(finished_run, broken)
    result = json.loads((broken / "result.json").read_text())
    (broken / "result.json").write_text(json.dumps({**result, "status": "diverged", "error": "non-finite loss at step 2"}))
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("{}\n")
    for path, reason in ((tmp_path / "missing", "does not exist"), (unfinished, "no result.json"), (broken, "status diverged")):
        assert cli_main(["export", str(path)]) == 2
        err = one_error_line(capsys)
        assert f"{path} is not a finished run directory" in err and reason in err


def random_allocation(arch: str, num_layers: int, seed: int = 0) -> Allocation:
    """Ranks that follow the layer on attention, random on the MLP, and one module left out."""
    anatomy = inspect_model(tiny_model(arch, num_layers=num_layers))
    rng = random.Random(seed)
    ranks = {m.name: (1 + m.layer % 3 if m.is_attention else rng.randint(1, 4)) for m in anatomy.modules}
    del ranks[anatomy.modules[-1].name]
    return Allocation(anatomy, ranks, alphas_for(ranks, "proportional", 16.0, 8), strategy="custom", lora_r=8, lora_alpha=16.0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_compact_patterns_build_exactly_the_allocation(arch):
    allocation = random_allocation(arch, num_layers=12)  # layers 1 and 10, 11: a key for layer 1 must not match 11
    kwargs = compact_lora_kwargs(allocation)
    assert len(kwargs["rank_pattern"]) < len(allocation.ranks)  # compact, yet...
    verify(get_peft_model(tiny_model(arch, num_layers=12), LoraConfig(**kwargs)), allocation)  # ...exact

    namespace = {"LoraConfig": LoraConfig}
    exec(lora_config_source(allocation), namespace)  # the printed snippet itself
    verify(get_peft_model(tiny_model(arch, num_layers=12), namespace["peft_config"]), allocation)


def test_axolotl_fragment_builds_the_runs_adapter(finished_run, tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "lora.yaml"
    assert cli_main(["export", str(finished_run), "--axolotl", str(out)]) == 0
    assert f"wrote the axolotl LoRA keys to {out}" in capsys.readouterr().out
    cfg = yaml.safe_load(out.read_text())
    assert cfg["adapter"] == "lora" and cfg["lora_target_linear"] is False
    assert all(isinstance(v, int) and v > 0 for v in [*cfg["lora_rank_pattern"].values(), *cfg["lora_alpha_pattern"].values()])
    # what axolotl 0.19 (loaders/adapter.py, _build_peft_lora_config) hands to PEFT
    config = LoraConfig(
        r=cfg["lora_r"],
        lora_alpha=cfg["lora_alpha"],
        target_modules=cfg["lora_target_modules"],
        lora_dropout=cfg["lora_dropout"],
        fan_in_fan_out=cfg.get("lora_fan_in_fan_out"),
        use_rslora=cfg.get("peft_use_rslora", False),
        rank_pattern=cfg["lora_rank_pattern"],
        alpha_pattern=cfg["lora_alpha_pattern"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    verify(
        get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), config), load_run_allocation(open_run(finished_run))
    )


def test_axolotl_needs_whole_number_alphas():
    anatomy = inspect_model(tiny_model("llama"))
    ranks = {m.name: 3 for m in anatomy.modules}
    allocation = Allocation(anatomy, ranks, alphas_for(ranks, "proportional", 16.0, 6), lora_r=6, lora_alpha=16.0)  # 8.0 each
    assert axolotl_fragment(allocation)["lora_alpha_pattern"]
    ranks = {m.name: 4 for m in anatomy.modules}
    allocation = Allocation(anatomy, ranks, alphas_for(ranks, "proportional", 16.0, 6), lora_r=6, lora_alpha=16.0)  # 10.67
    with pytest.raises(UserError, match="whole-number LoRA alphas"):
        axolotl_fragment(allocation)


def test_the_trl_snippet_trains_the_runs_allocation_here(finished_run, tiny_llama_dir, tmp_path, monkeypatch, capsys):
    """The printed script itself, executed with TRL's SFTTrainer (offline, on this machine) for the run's steps."""
    pytest.importorskip("trl")
    from datasets import Dataset

    from adaptive_lora.environment import cpu_has_bf16

    assert cli_main(["export", str(finished_run)]) == 0
    snippet = capsys.readouterr().out
    on_gpu = torch.cuda.is_available()
    assert ("use_cpu=False" if on_gpu else "use_cpu=True") in snippet
    if not on_gpu:  # TRL's default (bf16=True) stops a script on a CPU; bf16 only where the CPU has bf16 units
        assert f"bf16={cpu_has_bf16()}," in snippet

    rows = [{"prompt": f"Add {a} and {b}.", "completion": f" {a + b}"} for a in range(4) for b in range(4)]
    monkeypatch.chdir(tmp_path)  # output_dir="sft-<strategy>" is relative
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read at call time: no hub call can leave the machine
    namespace = {"dataset": Dataset.from_list(rows)}
    exec(snippet, namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == open_run(finished_run).config.training.max_steps
    verify(trainer.model, load_run_allocation(open_run(finished_run)))  # every module at the run's rank and alpha


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # SFTConfig's own default
def test_the_trl_snippet_sets_precision_for_the_machine(finished_run, monkeypatch):
    """bf16 on a CPU only with bf16 units, and then TRL accepts it; the comment says how to change it."""
    pytest.importorskip("trl")
    from trl import SFTConfig

    from adaptive_lora import export

    run = open_run(finished_run)
    allocation = load_run_allocation(run)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for units in (False, True):
        monkeypatch.setattr(export, "cpu_has_bf16", lambda units=units: units)
        settings = [line for line in export.trl_snippet(run, allocation).splitlines() if "bf16=" in line or "use_cpu=" in line]
        assert settings[0].strip().startswith(f"bf16={units},") and settings[1].strip().startswith("use_cpu=True,")
        assert "on a GPU: use_cpu=False" in settings[1]
        kwargs = dict(line.strip().split("  #")[0].rstrip(",").split("=") for line in settings)
        SFTConfig(output_dir="unused", bf16=kwargs["bf16"] == "True", use_cpu=kwargs["use_cpu"] == "True")  # accepted here


@pytest.mark.parametrize(
    "strategy, params, dropped",
    [
        ("eva", {"rank": 8, "rho": 2.0, "init": True}, "initialisation"),
        ("eva", {"rank": 8, "rho": 2.0, "init": False}, None),  # "eva ranks, standard init": nothing to drop
        ("adalora", {"rank": 8, "prune": False}, "training dynamics"),
        ("linear_decay", {"start": 8, "end": 2}, None),
    ],
)
def test_export_warns_in_one_line_when_it_drops_what_is_not_ranks(finished_run, tmp_path, capsys, strategy, params, dropped):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    record = json.loads((run / "allocation.json").read_text())
    (run / "allocation.json").write_text(json.dumps({**record, "strategy": strategy, "params": params}))
    assert cli_main(["export", str(run)]) == 0
    captured = capsys.readouterr()
    assert "peft_config=peft_config" in captured.out and "warning" not in captured.out  # stdout stays a script
    if dropped is None:
        assert captured.err == ""
    else:
        assert captured.err.count("\n") == 1 and captured.err.startswith(f"warning: {run} used {strategy}'s")
        assert dropped in captured.err and "--peft" in captured.err
