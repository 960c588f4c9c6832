"""What runs on the same model and data share: loaded once per sweep (or worker).

Runs do not copy the model: `attach` puts a run's adapters on the shared base and `release` takes
them off again (PEFT's `unload`), leaving the base exactly as loaded, so one model is in memory
however many runs a process trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch.utils.data import DataLoader

from ..anatomy import Anatomy, inspect_model
from ..config import RunConfig
from ..data import Collator, PreparedData, prepare_data
from ..environment import (
    attention_implementation,
    autocast_dtype,
    git_state,
    load_dtype,
    resolve_device,
    resolve_precision,
)
from ..loss import evaluate_loss
from ..models import load_model, load_tokenizer
from .dropout import fuse_lora_dropout


@dataclass
class BaseContext:
    config: RunConfig
    model: torch.nn.Module  # frozen, in eval mode; a run's adapters sit on it between attach() and release()
    tokenizer: Any
    data: PreparedData
    device: str
    precision: str
    anatomy: Anatomy
    _base_eval: dict | None = field(default=None, repr=False)
    cache: dict = field(default_factory=dict, repr=False)  # per-base results shared by runs (base scores, held-out rows)
    store: Path | None = None  # a sweep directory where the base's scores are stored for every worker (base_store.py)
    _peft_model: torch.nn.Module | None = field(default=None, repr=False)
    _before: dict | None = field(default=None, repr=False)  # the model's config, hooks and attributes before attach

    def attach(self, strategy, allocation, context):
        """The strategy's adapters on the shared base model itself (`strategy.attach`, no copy).

        Until `release()`, `self.model` computes with the adapters; in fp32, LoRA dropout is fused into
        lora_A (dropout.py: same values, a fraction of the activation memory).
        """
        self.release()
        self._before = _restorable_state(self.model)
        attached = strategy.attach(self.model, allocation, context)
        self._peft_model = attached.model
        if self.precision == "fp32":
            fuse_lora_dropout(attached.model)
        return attached

    def release(self) -> None:
        """Take the last run's adapters off the base (PEFT's `unload`: every wrapped layer gets its own layer
        back) and undo what training changed: train mode, checkpointing, hooks, config.use_cache."""
        if self._peft_model is not None:
            self._peft_model.unload()
            self._peft_model = None
        for name, module in list(self.model.named_modules()):  # an attach that failed half-way left no PeftModel
            if isinstance(module, BaseTunerLayer):
                parent, _, child = name.rpartition(".")
                setattr(self.model.get_submodule(parent), child, module.get_base_layer())
        if any(getattr(m, "gradient_checkpointing", False) for m in self.model.modules()):
            disable = getattr(self.model, "activation_checkpointing_disable", None) or self.model.gradient_checkpointing_disable
            disable()
        if self._before is not None:
            _restore_state(self.model, self._before)
            self._before = None
        self.model.requires_grad_(False)
        self.model.eval()

    def base_eval(self) -> dict:
        """Eval loss of the untrained base on the eval split (computed once)."""
        if self._base_eval is None:
            self._base_eval = evaluate_loss(self.model, self.eval_loader(), self.device, autocast_dtype(self.precision))
        return self._base_eval

    def remember_base_eval(self, metrics: dict) -> None:
        """The base's validation loss, read from a sweep's store instead of computed."""
        self._base_eval = dict(metrics)

    def eval_loader(self) -> DataLoader:
        return DataLoader(
            self.data.eval, batch_size=self.config.training.micro_batch_size, shuffle=False, collate_fn=Collator(self.tokenizer)
        )

    def compatible_with(self, config: RunConfig) -> bool:
        a, b = self.config, config
        return (a.model, a.data, a.training.sequence_len, a.training.micro_batch_size) == (
            b.model,
            b.data,
            b.training.sequence_len,
            b.training.micro_batch_size,
        )


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_HOOK_FLAGS = ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs")


def _restorable_state(model: torch.nn.Module) -> dict:
    """What a run may change on the model besides its modules: config attributes, hooks, model attributes."""
    return {
        "config": dict(vars(model.config)),
        "hooks": {name: {k for attr in _HOOK_DICTS for k in getattr(m, attr, {})} for name, m in model.named_modules()},
        "attributes": set(vars(model)),
    }


def _restore_state(model: torch.nn.Module, state: dict) -> None:
    """Drop hooks and attributes added since `state` (PEFT and Trainer each add an input-grad hook and may
    lose one handle; a failed attach leaves `peft_config`), and put the config's attributes back."""
    for name, module in model.named_modules():
        keep = state["hooks"].get(name, set())
        for attr in (*_HOOK_DICTS, *_HOOK_FLAGS):
            hooks = getattr(module, attr, None) or {}
            for key in [k for k in hooks if k not in keep]:
                del hooks[key]
    for name in set(vars(model)) - state["attributes"]:
        delattr(model, name)
    vars(model.config).clear()
    vars(model.config).update(state["config"])


def prepare_base(config: RunConfig) -> BaseContext:
    git_state()  # the checkout's state now, as this process loaded it (environment.git_state)
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    device = resolve_device(config.model.device)
    precision = resolve_precision(config.model.precision, device)
    tokenizer = load_tokenizer(config.model.name, config.model.trust_remote_code)
    data = prepare_data(config.data, tokenizer, config.training.sequence_len)
    model = load_model(config.model.name, load_dtype(precision), device, config.model.trust_remote_code)
    attention = attention_implementation(device, precision)
    if attention and model.config._attn_implementation != attention:
        model.set_attn_implementation(attention)
    model.requires_grad_(False)
    model.eval()
    return BaseContext(config, model, tokenizer, data, device, precision, inspect_model(model))
