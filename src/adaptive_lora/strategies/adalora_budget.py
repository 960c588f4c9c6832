"""AdaLoRA machinery with its budget counted in parameters (see adalora.py): PEFT's RankAllocator with a
parameter budget, and AdaLoRA's orthogonality penalty as a training-only loss term."""

from __future__ import annotations

import torch
from torch import nn

ADAPTER = "default"


def param_budget_allocator():
    from peft.tuners.adalora.layer import RankAllocator

    class ParamBudgetAllocator(RankAllocator):
        """PEFT's RankAllocator with its budget in parameters: same scores, schedule and masking."""

        def __init__(self, model, peft_config, adapter_name, budget_params: int):
            self.budget_params = int(budget_params)
            self.last_scores: dict[str, float] = {}
            super().__init__(model, peft_config, adapter_name)

        def _set_budget_scheduler(self, model):
            super()._set_budget_scheduler(model)
            self.costs, init = {}, 0
            shapes = {n: p.shape for n, p in model.named_parameters()}
            for n, shape in shapes.items():
                if f"lora_A.{self.adapter_name}" in n:
                    b = shapes[n.replace("lora_A", "lora_B")]
                    self.costs[n.replace("lora_A", "%s")] = int(shape[1] + b[0])  # in + out per rank
                    init += int(shape[0]) * int(shape[1] + b[0])
            self.init_bgt, self.target_bgt = init, self.budget_params

        def mask_to_budget(self, model, budget):
            vector_ipt: dict[str, list] = {}
            value_ipt = {}
            for n, _ in model.named_parameters():
                if f"lora_A.{self.adapter_name}" in n:
                    vector_ipt.setdefault(n.replace("lora_A", "%s"), []).append(self._element_score(n).mean(dim=1, keepdim=True))
                if f"lora_B.{self.adapter_name}" in n:
                    vector_ipt.setdefault(n.replace("lora_B", "%s"), []).append(self._element_score(n).mean(dim=0).view(-1, 1))
                if f"lora_E.{self.adapter_name}" in n:
                    value_ipt[n.replace("lora_E", "%s")] = self._element_score(n)
            names = list(vector_ipt)
            triplets = [self._combine_ipt(value_ipt[m], torch.cat(vector_ipt[m], dim=1)).view(-1) for m in names]
            scores = torch.cat(triplets)
            costs = torch.cat([torch.full((len(t),), self.costs[m], dtype=torch.float64) for m, t in zip(names, triplets)])
            order = torch.argsort(scores.detach().cpu().double(), descending=True, stable=True)
            keep = torch.zeros(len(scores), dtype=torch.bool)
            keep[order] = torch.cumsum(costs[order], 0) <= budget
            rank_pattern, offset = {}, 0
            masks = {}
            for m, t in zip(names, triplets):
                masks[m % "lora_E"] = keep[offset : offset + len(t)]
                self.last_scores[module_of(m % "lora_E")] = float(t.sum())
                offset += len(t)
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in masks:
                        p.masked_fill_(~masks[n].to(p.device).view(-1, 1), 0.0)
                        rank_pattern[n] = masks[n].tolist()
            return rank_pattern

    return ParamBudgetAllocator


def module_of(key: str) -> str:
    """'model.layers.0.self_attn.q_proj.lora_E.default' (or without '.default') -> the module name."""
    return key.rsplit(".lora_E", 1)[0]


def orthogonality_penalty(weight: float):
    """AdaLoRA's regulariser, as PEFT computes it: weight x mean over P and Q of ||PᵀP - I||_F / ||QQᵀ - I||_F."""
    params: list[tuple[bool, torch.Tensor]] = []

    def penalty(model: nn.Module) -> torch.Tensor | float:
        if weight == 0:
            return 0.0
        if not params:
            params.extend(
                ("lora_A" in n, p)
                for n, p in model.named_parameters()
                if ("lora_A" in n or "lora_B" in n) and ADAPTER in n and p.requires_grad
            )
        total = 0.0
        for is_a, p in params:
            cov = p @ p.T if is_a else p.T @ p
            eye = torch.eye(cov.shape[0], device=cov.device, dtype=cov.dtype)
            total = total + torch.linalg.matrix_norm(cov - eye, ord="fro")
        return weight * total / max(len(params), 1)

    return penalty
