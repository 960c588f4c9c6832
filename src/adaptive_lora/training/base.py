"""What runs on the same model and data share: loaded once per sweep (or worker), copied per run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..anatomy import Anatomy, inspect_model
from ..config import RunConfig
from ..data import Collator, PreparedData, prepare_data
from ..environment import autocast_dtype, load_dtype, resolve_device, resolve_precision
from ..loss import evaluate_loss
from ..models import load_model, load_tokenizer


@dataclass
class BaseContext:
    config: RunConfig
    model: torch.nn.Module  # frozen, in eval mode; each run trains a deep copy
    tokenizer: Any
    data: PreparedData
    device: str
    precision: str
    anatomy: Anatomy
    _base_eval: dict | None = field(default=None, repr=False)

    def base_eval(self) -> dict:
        """Eval loss of the untrained base on the eval split (computed once)."""
        if self._base_eval is None:
            self._base_eval = evaluate_loss(self.model, self.eval_loader(), self.device, autocast_dtype(self.precision))
        return self._base_eval

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


def prepare_base(config: RunConfig) -> BaseContext:
    if config.training.num_threads:
        torch.set_num_threads(config.training.num_threads)
    device = resolve_device(config.model.device)
    precision = resolve_precision(config.model.precision, device)
    tokenizer = load_tokenizer(config.model.name, config.model.trust_remote_code)
    data = prepare_data(config.data, tokenizer, config.training.sequence_len)
    model = load_model(config.model.name, load_dtype(precision), device, config.model.trust_remote_code)
    model.requires_grad_(False)
    model.eval()
    return BaseContext(config, model, tokenizer, data, device, precision, inspect_model(model))
