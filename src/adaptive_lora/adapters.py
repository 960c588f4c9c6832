"""Attach adapters to a base model according to an `Allocation`.

Static allocations become a PEFT `LoraConfig` with a full-name `rank_pattern`, checked by
`verify`. Dynamic or data-initialised methods (AdaLoRA, EVA) hook in here: they return extra
Trainer callbacks, an extra training-loss term, and a `finalize` step run after training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .allocation import Allocation, verify


@dataclass
class AttachedAdapters:
    model: nn.Module  # the PEFT model
    callbacks: list = field(default_factory=list)  # extra transformers TrainerCallbacks
    extra_loss: Callable[[nn.Module], Any] | None = None  # added to the training loss only, never to eval
    finalize: Callable[[nn.Module, Allocation], Allocation] | None = None  # e.g. record AdaLoRA's final ranks


def attach_adapters(model: nn.Module, allocation: Allocation, lora_dropout: float, context: dict[str, Any] | None = None) -> AttachedAdapters:
    """Wrap `model` (modified in place) with adapters exactly as planned.

    `allocation.strategy` picks the path: "adalora" trains PEFT's AdaLoRA (ranks change during
    training; `finalize` records where they ended), "eva" initialises LoRA A with EVA at the planned
    ranks (needs `context["base"]` for training rows), everything else is static LoRA.
    `context` is {"base": training.BaseContext, "config": RunConfig} during training.
    """
    if allocation.strategy == "adalora":
        from .adalora import attach_adalora

        return attach_adalora(model, allocation, lora_dropout, context)
    if allocation.strategy == "eva" and allocation.params.get("init", True):
        from .eva import attach_eva

        return attach_eva(model, allocation, lora_dropout, context)
    return attach_static(model, allocation, lora_dropout)


def attach_static(model: nn.Module, allocation: Allocation, lora_dropout: float) -> AttachedAdapters:
    """Plain LoRA with the allocation's per-module ranks and alphas, checked by `verify`."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, allocation.to_peft_config(lora_dropout=lora_dropout))
    verify(peft_model, allocation)
    return AttachedAdapters(peft_model)
