"""LoRA dropout that keeps a 1-byte mask for the backward pass instead of two float copies of the input.

PEFT computes `lora_B(lora_A(dropout(x)))`. On CPU, `F.dropout` keeps its float noise and `lora_A`
keeps the dropped copy of x until the backward pass: 8 bytes per input element of every adapted
module, where q, k and v (and gate and up) each drop the same x again. For SmolLM2-135M with LoRA on
every linear module that is about 0.7 MB per token, a third of all training activations.

`fuse_lora_dropout` replaces, in each LoRA layer, `dropout -> lora_A` by one autograd function that
keeps x (shared by the modules that read it) and a bool mask, and recomputes the dropped input in
the backward pass. It draws the same masks as `F.dropout` on CPU (the same `bernoulli_` call on a
tensor like x), so values and gradients are those of PEFT's layer. Adapter state dicts are unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear as LoraLinear
from torch import nn


class _DropoutLinear(torch.autograd.Function):
    """y = dropout(x, p) @ W.T, saving x and the keep mask (1 byte) instead of the dropped x and the noise."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, p: float) -> torch.Tensor:
        noise = torch.empty_like(x).bernoulli_(1 - p)  # F.dropout's draws on CPU (aten _dropout_impl)
        ctx.p = p
        ctx.save_for_backward(x, noise.bool(), weight)
        return F.linear(x * noise.div_(1 - p), weight)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, keep, weight = ctx.saved_tensors
        # the noise again, exactly: 0 or 1 / (1 - p); bool -> float is slow in torch, uint8 -> float is not
        noise = keep.view(torch.uint8).to(x.dtype).div_(1 - ctx.p)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out @ weight).mul_(noise)
        if ctx.needs_input_grad[1]:
            dropped = (x * noise).reshape(-1, x.shape[-1])  # (N, in)
            grad_weight = grad_out.reshape(-1, grad_out.shape[-1]).t() @ dropped  # (r, in)
        return grad_x, grad_weight, None


class DropoutLinear(nn.Linear):
    """LoRA's A matrix with its input dropout fused in (same parameter, same state-dict key)."""

    p: float = 0.0

    @classmethod
    def wrap(cls, linear: nn.Linear, p: float) -> DropoutLinear:
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.in_features, fused.out_features, fused.p = linear.in_features, linear.out_features, p
        fused.weight, fused.bias = linear.weight, linear.bias  # the same Parameter objects
        fused.train(linear.training)
        return fused

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return F.linear(x, self.weight, self.bias)
        if torch.is_autocast_enabled(x.device.type):  # mixed precision: the plain path casts for us
            return F.linear(F.dropout(x, self.p, True), self.weight, self.bias)
        out = _DropoutLinear.apply(x, self.weight, self.p)
        return out + self.bias if self.bias is not None else out


def fuse_lora_dropout(model: nn.Module) -> int:
    """Fuse dropout into lora_A in every plain LoRA linear layer of `model`; returns how many were fused.

    Layers with a LoRA variant (DoRA, ...) or other adapter types (AdaLoRA's SVD layers) keep PEFT's path.
    """
    fused = 0
    for module in model.modules():
        if not isinstance(module, LoraLinear):
            continue
        for name, dropout in module.lora_dropout.items():
            lora_a = module.lora_A[name] if name in module.lora_A else None
            if not isinstance(dropout, nn.Dropout) or type(lora_a) is not nn.Linear or name in module.lora_variant:
                continue
            module.lora_A[name] = DropoutLinear.wrap(lora_a, dropout.p)
            module.lora_dropout[name] = nn.Identity()
            fused += 1
    return fused
