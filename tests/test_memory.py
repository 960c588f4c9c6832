"""Memory without changing results: runs share one base model (attached, then released exactly), LoRA
dropout keeps a 1-byte mask, and process workers split the cores instead of oversubscribing them."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import torch
import yaml
from peft import LoraConfig, get_peft_model

from adaptive_lora import train
from adaptive_lora.config import RunConfig
from adaptive_lora.sweep.executors import SweepOptions
from adaptive_lora.sweep.runner import run_sweep
from adaptive_lora.sweep.suite import load_suite
from adaptive_lora.training import prepare_base
from adaptive_lora.training.dropout import DropoutLinear, fuse_lora_dropout


def make_config(model_dir, data, out, **overrides) -> RunConfig:
    config = RunConfig.from_dict(
        {
            "model": {"name": str(model_dir)},
            "data": {"source": str(data), "val_set_size": 8},
            "allocation": {"strategy": "linear_decay", "params": {"start": 8, "end": 2}, "lora_dropout": 0.1},
            "training": {"max_steps": 3, "micro_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1, "sequence_len": 128},
            "eval": {"generate": False, "forgetting": None},
            "output": {"dir": str(out)},
        }
    )
    return config.with_overrides(overrides)


def model_state(model: torch.nn.Module) -> dict:
    """Everything a run could leave behind on a model: weights, module tree, modes, hooks, flags, config."""
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": [
            (
                name,
                type(m).__name__,
                m.training,
                len(m._forward_hooks),
                len(m._forward_pre_hooks),
                getattr(m, "gradient_checkpointing", None),
            )
            for name, m in model.named_modules()
        ],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "config": model.config.to_dict(),
        "attributes": sorted(vars(model)),
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["weights"].keys() == after["weights"].keys()
    assert all(torch.equal(before["weights"][k], after["weights"][k]) for k in before["weights"]), "base weights changed"
    assert before["modules"] == after["modules"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["config"] == after["config"]
    assert before["attributes"] == after["attributes"]


def train_losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["train_loss"] for r in map(json.loads, lines) if r.get("train_loss") is not None]


def test_runs_share_the_base_and_leave_it_exactly_as_loaded(tiny_llama_dir, data_file, tmp_path, monkeypatch):
    config = make_config(tiny_llama_dir, data_file, tmp_path / "second")
    base = prepare_base(config)
    base.base_eval()  # caches the base's eval loss (and marks the model's head as checked) before any run
    before = model_state(base.model)
    first = config.with_overrides(
        {
            "allocation.strategy": "uniform",
            "allocation.params": {},
            "training.gradient_checkpointing": True,
            "output.dir": str(tmp_path / "first"),
        }
    )
    assert train(first, base=base)["status"] == "done"
    assert_same_state(before, model_state(base.model))

    # an attach that fails after PEFT wrapped the model leaves no PeftModel behind; the base is restored all the same
    from adaptive_lora.strategies import base as strategy_base

    def broken_verify(model, allocation):
        raise RuntimeError("verify failed")

    monkeypatch.setattr(strategy_base, "verify", broken_verify)
    failed = train(config.with_overrides({"output.dir": str(tmp_path / "failed")}), base=base)
    assert failed["status"] == "error" and "verify failed" in failed["error"]
    assert_same_state(before, model_state(base.model))
    monkeypatch.undo()

    second = train(config, base=base)
    fresh = train(make_config(tiny_llama_dir, data_file, tmp_path / "fresh"))  # a base of its own, as in a new process
    assert second["status"] == fresh["status"] == "done"
    assert train_losses(tmp_path / "second") == train_losses(tmp_path / "fresh")
    assert second["eval_loss"] == fresh["eval_loss"]


def test_fused_dropout_gives_peft_dropout_values_and_gradients(tiny_llama_dir):
    from adaptive_lora.models import load_model

    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.3, init_lora_weights=False)
    reference = get_peft_model(load_model(str(tiny_llama_dir)), lora)
    fused = copy.deepcopy(reference)
    assert fuse_lora_dropout(fused) == 14  # q k v o gate up down in 2 layers
    assert reference.state_dict().keys() == fused.state_dict().keys()  # the adapter saves as before
    ids = torch.randint(3, 300, (3, 20))

    def forward_backward(model):
        model.train()
        torch.manual_seed(1)  # the same dropout draws for both
        logits = model(input_ids=ids).logits
        logits.square().mean().backward()
        return logits, {n: p.grad for n, p in model.named_parameters() if p.requires_grad}

    (out_a, grads_a), (out_b, grads_b) = forward_backward(reference), forward_backward(fused)
    assert torch.equal(out_a, out_b)
    assert all(torch.allclose(grads_a[n], grads_b[n], rtol=1e-6, atol=1e-8) for n in grads_a)
    fused.eval()  # no dropout at evaluation
    layer = next(m for m in fused.modules() if isinstance(m, DropoutLinear))
    x = torch.randn(2, 5, layer.in_features)
    assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight))


def test_fused_dropout_saves_less_for_backward(tiny_llama_dir):
    from adaptive_lora.models import load_model

    lora = LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.1)
    reference = get_peft_model(load_model(str(tiny_llama_dir)), lora)
    fused = copy.deepcopy(reference)
    fuse_lora_dropout(fused)
    ids = torch.randint(3, 300, (2, 64))

    def saved_bytes(model) -> int:
        storages = {}

        def pack(tensor):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        model.train()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model.get_base_model().model(input_ids=ids)  # the decoder body: the vocabulary head would dominate
        return sum(storages.values())

    assert saved_bytes(fused) < 0.75 * saved_bytes(reference)  # 0.69 here; SmolLM2-135M: 0.78 of the whole step


def test_process_workers_split_the_cores(tiny_llama_dir, data_file, tmp_path):
    suite = {
        "name": "threads",
        "model": {"name": str(tiny_llama_dir)},
        "data": {"source": str(data_file), "val_set_size": 8},
        "training": {"max_steps": 1, "micro_batch_size": 4, "sequence_len": 64},
        "eval": {"generate": False, "forgetting": None},
        "strategies": [{"strategy": "uniform", "params": {"rank": 2}}, {"strategy": "uniform", "params": {"rank": 4}}],
        "seeds": [0],
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    outcome = run_sweep(load_suite(str(path)), tmp_path / "sweep", SweepOptions(executor="processes", workers=2, quiet=True))
    assert set(outcome["statuses"].values()) == {"done"}
    results = [json.loads(p.read_text()) for p in (tmp_path / "sweep" / "runs").glob("*/result.json")]
    assert len(results) == 2
    assert {r["environment"]["threads"] for r in results} == {max(1, (os.cpu_count() or 1) // 2)}


def test_onednn_kernel_cache_is_capped_unless_the_user_set_it():
    """In bf16 on CPU oneDNN keeps a kernel per matmul shape; the cap stops a worker growing run after run."""
    key = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
    script = (
        "import importlib, os\n"
        "import adaptive_lora.environment as env\n"
        f"ours = os.environ['{key}']\n"
        f"os.environ['{key}'] = '7'\n"
        "importlib.reload(env)\n"
        f"print(ours, os.environ['{key}'])\n"
    )
    clean = {k: v for k, v in os.environ.items() if k != key}
    done = subprocess.run([sys.executable, "-c", script], env=clean, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["32", "7"]  # set when absent, a user's own value kept
