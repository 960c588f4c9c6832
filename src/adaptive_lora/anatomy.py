"""Model anatomy: every LoRA-targetable linear module in the decoder blocks, with its layer,
role and shape.

Nothing here is hard-coded per architecture: the decoder blocks are the longest `ModuleList` of
identical blocks, and roles come from the module's name and whether it sits under an attention or
an MLP sub-module. GPT-2's `Conv1D` (weights stored transposed) counts as a linear layer.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from torch import nn

from .errors import UnsupportedModelError, UserError
from .schema import ATTENTION_ROLES, MLP_ROLES, ROLES  # noqa: F401 - re-exported

# Leaf names by role. Order matters only for readability: every name maps to one role.
_ATTENTION_LEAVES = {
    "q": {"q_proj", "query", "q", "wq", "q_lin", "query_proj"},
    "k": {"k_proj", "key", "k", "wk", "k_lin", "key_proj"},
    "v": {"v_proj", "value", "v", "wv", "v_lin", "value_proj"},
    "o": {"o_proj", "out_proj", "dense", "c_proj", "wo", "out_lin", "proj", "output_proj"},
    "qkv": {"c_attn", "query_key_value", "qkv_proj", "wqkv", "w_pack", "qkv", "in_proj"},
}
_MLP_LEAVES = {
    "up": {"up_proj", "fc1", "c_fc", "dense_h_to_4h", "fc_in", "w3", "gate_up_proj", "linear_fc1", "lin1"},
    "gate": {"gate_proj", "w1"},
    "down": {"down_proj", "fc2", "c_proj", "dense_4h_to_h", "fc_out", "w2", "linear_fc2", "lin2"},
}
_ATTENTION_PARTS = re.compile(r"attn|attention")
_MLP_PARTS = re.compile(r"mlp|ffn|feed_forward|feedforward")
_MOE_PARTS = re.compile(r"experts?$|moe|router|shared_expert")
# Class names such as MixtralSparseMoeBlock, DeepseekV3MoE, Qwen2MoeExperts, GptOssTopKRouter; not
# every class of a MoE model (Qwen2MoeAttention is plain attention).
_MOE_CLASSES = re.compile(r"(experts?|router|moe|moeblock|moelayer)$")


@dataclass(frozen=True)
class LinearModule:
    name: str  # full module name, e.g. "model.layers.3.self_attn.q_proj"
    layer: int  # decoder-layer index
    role: str  # one of ROLES
    in_features: int
    out_features: int
    conv1d: bool = False  # GPT-2 style Conv1D (weight stored as in x out)

    @property
    def params_per_rank(self) -> int:
        """LoRA parameters per unit of rank: A is r x in, B is out x r."""
        return self.in_features + self.out_features

    @property
    def leaf(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def is_attention(self) -> bool:
        return self.role in ATTENTION_ROLES


@dataclass(frozen=True)
class Anatomy:
    model_type: str
    num_layers: int
    modules: tuple[LinearModule, ...]
    total_params: int  # parameters of the base model (tied weights counted once)

    def __post_init__(self):
        if not self.modules:
            raise UserError(f"model type {self.model_type!r}: no LoRA-targetable linear modules were found in its decoder blocks")

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modules]

    def by_name(self) -> dict[str, LinearModule]:
        return {m.name: m for m in self.modules}

    def roles(self) -> list[str]:
        present = {m.role for m in self.modules}
        return [r for r in ROLES if r in present]

    def params_per_rank(self) -> int:
        """What one unit of uniform rank costs, over all targeted modules."""
        return sum(m.params_per_rank for m in self.modules)

    def select(self, target_modules: list[str] | None) -> Anatomy:
        """Keep the modules named by leaf name (PEFT style), role name, or full name."""
        if not target_modules:
            return self
        wanted = set(target_modules)
        kept = tuple(m for m in self.modules if m.leaf in wanted or m.role in wanted or m.name in wanted)
        unmatched = [t for t in target_modules if not any(t in (m.leaf, m.role, m.name) for m in self.modules)]
        if unmatched:
            leaves = sorted({m.leaf for m in self.modules})
            raise UserError(
                f"target_modules entry {unmatched[0]!r} matches no module of this {self.model_type} model; "
                f"use leaf names ({', '.join(leaves)}) or roles ({', '.join(self.roles())})"
            )
        return Anatomy(self.model_type, self.num_layers, kept, self.total_params)


def inspect_model(model: nn.Module, target_modules: list[str] | None = None) -> Anatomy:
    """List the LoRA-targetable linear modules of a causal LM (works on the meta device)."""
    prefix, blocks = find_decoder_blocks(model)
    model_type = getattr(getattr(model, "config", None), "model_type", "?")
    if _MOE_PARTS.search(prefix.rsplit(".", 1)[-1].lower()):  # the longest list is a list of experts
        _raise_moe(model_type, prefix)
    modules = []
    for layer, block in enumerate(blocks):
        _reject_mixture_of_experts(block, model_type)
        for sub_name, module in block.named_modules():
            shape = linear_shape(module)
            if shape is None:
                continue
            role = classify(sub_name)
            conv1d = not isinstance(module, nn.Linear)
            modules.append(LinearModule(f"{prefix}.{layer}.{sub_name}", layer, role, *shape, conv1d=conv1d))
    total = sum(p.numel() for p in model.parameters())
    anatomy = Anatomy(getattr(model.config, "model_type", type(model).__name__), len(blocks), tuple(modules), total)
    return anatomy.select(target_modules)


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of a linear or GPT-2 Conv1D layer, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        in_features, out_features = module.weight.shape  # Conv1D stores the weight as (in, out)
        return int(in_features), int(out_features)
    return None


def find_decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder blocks: the longest ModuleList of same-class blocks that contain linear layers."""
    best = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if not any(linear_shape(m) for m in module[0].modules()):
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        raise UnsupportedModelError(
            f"{type(model).__name__}: found no list of decoder blocks with linear layers; adaptive-lora plans decoder-only causal LMs"
        )
    return best


def _reject_mixture_of_experts(block: nn.Module, model_type: str) -> None:
    # Experts are a ModuleList in older code and one fused module with 3-D weights in newer code
    # (e.g. GPT-OSS's `mlp.experts` / `mlp.router`, whose class names do not say "moe").
    # Sub-modules first, so the message names e.g. `mlp.experts` rather than the block's class.
    for sub_name, module in [*list(block.named_modules())[1:], ("", block)]:
        leaf = sub_name.rsplit(".", 1)[-1].lower()
        kind = type(module).__name__.lower()
        if (sub_name and _MOE_PARTS.search(leaf)) or _MOE_CLASSES.search(kind):
            _raise_moe(model_type, sub_name or type(module).__name__)


def _raise_moe(model_type: str, where: str) -> None:
    raise UnsupportedModelError(
        f"model type {model_type!r} is a mixture-of-experts model ({where}); "
        "per-expert rank allocation is not supported yet: use a dense model"
    )


def classify(sub_name: str) -> str:
    """Role of a linear module from its name inside the block, e.g. 'attn.c_proj' -> 'o'."""
    parts = sub_name.lower().split(".")
    leaf, parents = parts[-1], parts[:-1]
    context = None
    if any(_ATTENTION_PARTS.search(p) for p in parents):
        context = "attention"
    elif any(_MLP_PARTS.search(p) for p in parents):
        context = "mlp"
    tables = {"attention": [_ATTENTION_LEAVES], "mlp": [_MLP_LEAVES], None: [_ATTENTION_LEAVES, _MLP_LEAVES]}[context]
    for table in tables:
        for role, leaves in table.items():
            if leaf in leaves:
                # Outside any attention/MLP sub-module, ambiguous leaves like `dense` or `c_proj` stay "other".
                if context is None and leaf in {"dense", "c_proj", "proj"}:
                    return "other"
                return role
    return "other"


def role_counts(anatomy: Anatomy) -> dict[str, int]:
    return dict(Counter(m.role for m in anatomy.modules))
