"""Anatomy: decoder blocks, roles and shapes of every LoRA-targetable module, across architectures."""

from __future__ import annotations

import ast
import inspect
import json
from collections import Counter

import pytest
from torch import nn

from adaptive_lora import anatomy as anatomy_module
from adaptive_lora.anatomy import ATTENTION_ROLES, MLP_ROLES, Anatomy, classify, inspect_model, role_counts
from adaptive_lora.errors import UnsupportedModelError, UserError
from adaptive_lora.models import load_skeleton
from adaptive_lora.planning import anatomy_of, plan
from tiny_models import TINY_ARCHS, meta_model, tiny_config, tiny_model

NUM_LAYERS = 3


def _hd(c):
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def _kv(c):
    return getattr(c, "num_key_value_heads", None) or c.num_attention_heads


def _inner(c, attr="intermediate_size"):
    return getattr(c, attr, None) or 4 * c.hidden_size


# arch -> role -> (leaf-name suffix inside the block, in_features(config), out_features(config)).
# Every shape comes from the config's own fields, never from the anatomy under test.
_GATED = {
    "q": ("self_attn.q_proj", lambda c: c.hidden_size, lambda c: c.num_attention_heads * _hd(c)),
    "k": ("self_attn.k_proj", lambda c: c.hidden_size, lambda c: _kv(c) * _hd(c)),
    "v": ("self_attn.v_proj", lambda c: c.hidden_size, lambda c: _kv(c) * _hd(c)),
    "o": ("self_attn.o_proj", lambda c: c.num_attention_heads * _hd(c), lambda c: c.hidden_size),
    "gate": ("mlp.gate_proj", lambda c: c.hidden_size, lambda c: c.intermediate_size),
    "up": ("mlp.up_proj", lambda c: c.hidden_size, lambda c: c.intermediate_size),
    "down": ("mlp.down_proj", lambda c: c.intermediate_size, lambda c: c.hidden_size),
}
EXPECTED = {
    "gpt2": {
        "qkv": ("attn.c_attn", lambda c: c.n_embd, lambda c: 3 * c.n_embd),
        "o": ("attn.c_proj", lambda c: c.n_embd, lambda c: c.n_embd),
        "up": ("mlp.c_fc", lambda c: c.n_embd, lambda c: _inner(c, "n_inner")),
        "down": ("mlp.c_proj", lambda c: _inner(c, "n_inner"), lambda c: c.n_embd),
    },
    "llama": _GATED,
    "qwen2": _GATED,
    "mistral": _GATED,
    "gemma": _GATED,
    "gpt_neox": {
        "qkv": ("attention.query_key_value", lambda c: c.hidden_size, lambda c: 3 * c.hidden_size),
        "o": ("attention.dense", lambda c: c.hidden_size, lambda c: c.hidden_size),
        "up": ("mlp.dense_h_to_4h", lambda c: c.hidden_size, lambda c: c.intermediate_size),
        "down": ("mlp.dense_4h_to_h", lambda c: c.intermediate_size, lambda c: c.hidden_size),
    },
    "opt": {  # fc1/fc2 sit directly in the decoder layer, not under an `mlp` module
        "q": ("self_attn.q_proj", lambda c: c.hidden_size, lambda c: c.hidden_size),
        "k": ("self_attn.k_proj", lambda c: c.hidden_size, lambda c: c.hidden_size),
        "v": ("self_attn.v_proj", lambda c: c.hidden_size, lambda c: c.hidden_size),
        "o": ("self_attn.out_proj", lambda c: c.hidden_size, lambda c: c.hidden_size),
        "up": ("fc1", lambda c: c.hidden_size, lambda c: c.ffn_dim),
        "down": ("fc2", lambda c: c.ffn_dim, lambda c: c.hidden_size),
    },
    "phi": {
        "q": ("self_attn.q_proj", lambda c: c.hidden_size, lambda c: c.num_attention_heads * _hd(c)),
        "k": ("self_attn.k_proj", lambda c: c.hidden_size, lambda c: _kv(c) * _hd(c)),
        "v": ("self_attn.v_proj", lambda c: c.hidden_size, lambda c: _kv(c) * _hd(c)),
        "o": ("self_attn.dense", lambda c: c.num_attention_heads * _hd(c), lambda c: c.hidden_size),
        "up": ("mlp.fc1", lambda c: c.hidden_size, lambda c: c.intermediate_size),
        "down": ("mlp.fc2", lambda c: c.intermediate_size, lambda c: c.hidden_size),
    },
    "falcon": {  # multi-query: one shared key and value head
        "qkv": ("self_attention.query_key_value", lambda c: c.hidden_size, lambda c: c.hidden_size + 2 * _hd(c)),
        "o": ("self_attention.dense", lambda c: c.hidden_size, lambda c: c.hidden_size),
        "up": ("mlp.dense_h_to_4h", lambda c: c.hidden_size, lambda c: 4 * c.hidden_size),
        "down": ("mlp.dense_4h_to_h", lambda c: 4 * c.hidden_size, lambda c: c.hidden_size),
    },
    "bloom": {
        "qkv": ("self_attention.query_key_value", lambda c: c.hidden_size, lambda c: 3 * c.hidden_size),
        "o": ("self_attention.dense", lambda c: c.hidden_size, lambda c: c.hidden_size),
        "up": ("mlp.dense_h_to_4h", lambda c: c.hidden_size, lambda c: 4 * c.hidden_size),
        "down": ("mlp.dense_4h_to_h", lambda c: 4 * c.hidden_size, lambda c: c.hidden_size),
    },
}


def test_every_tiny_arch_has_an_expectation():
    assert set(EXPECTED) == set(TINY_ARCHS)
    assert {"gpt2", "llama", "qwen2", "gpt_neox", "opt", "phi", "falcon", "bloom"} <= set(TINY_ARCHS)


@pytest.fixture(scope="module")
def real_models():
    return {arch: tiny_model(arch, num_layers=NUM_LAYERS) for arch in TINY_ARCHS}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_layers_modules_roles_and_shapes(arch, real_models):
    model = real_models[arch]
    config = model.config
    anatomy = inspect_model(model)
    expected = EXPECTED[arch]

    assert anatomy.model_type == config.model_type
    assert anatomy.num_layers == NUM_LAYERS
    assert len(anatomy.modules) == NUM_LAYERS * len(expected)
    assert set(anatomy.roles()) == set(expected)
    assert role_counts(anatomy) == {role: NUM_LAYERS for role in expected}
    assert len(set(anatomy.names)) == len(anatomy.names)
    # the modules are the model's own, by full name
    named = dict(model.named_modules())
    assert all(name in named for name in anatomy.names)

    for m in anatomy.modules:
        suffix, in_fn, out_fn = expected[m.role]
        assert m.name.endswith(f".{m.layer}.{suffix}"), m.name
        assert (m.in_features, m.out_features) == (in_fn(config), out_fn(config)), m.name
        assert m.params_per_rank == m.in_features + m.out_features
        assert m.conv1d == (arch == "gpt2")
        assert m.is_attention == (m.role in ATTENTION_ROLES)
    per_layer = Counter(m.layer for m in anatomy.modules)
    assert per_layer == {layer: len(expected) for layer in range(NUM_LAYERS)}
    assert anatomy.params_per_rank() == sum(m.in_features + m.out_features for m in anatomy.modules)
    # tied embeddings are counted once, like model.parameters() does
    assert anatomy.total_params == sum(p.numel() for p in model.parameters())


def test_llama_gqa_shapes_come_from_the_config():
    config = tiny_config(
        "llama", num_layers=1, hidden_size=64, num_attention_heads=8, num_key_value_heads=2, intermediate_size=80
    )
    by_role = {m.role: m for m in inspect_model(meta_model(config)).modules}
    assert (by_role["q"].in_features, by_role["q"].out_features) == (64, 64)
    assert (by_role["k"].in_features, by_role["k"].out_features) == (64, 2 * 8)  # num_kv_heads * head_dim
    assert by_role["v"].out_features == 16
    assert (by_role["down"].in_features, by_role["down"].out_features) == (80, 64)
    assert by_role["k"].params_per_rank == 64 + 16


def test_gpt2_attention_and_mlp_c_proj_are_told_apart():
    anatomy = inspect_model(tiny_model("gpt2", num_layers=2))
    roles = {m.name: m.role for m in anatomy.modules}
    assert roles["transformer.h.1.attn.c_attn"] == "qkv"
    assert roles["transformer.h.1.attn.c_proj"] == "o"
    assert roles["transformer.h.1.mlp.c_proj"] == "down"
    assert roles["transformer.h.1.mlp.c_fc"] == "up"
    c_attn = anatomy.by_name()["transformer.h.0.attn.c_attn"]
    assert (c_attn.in_features, c_attn.out_features, c_attn.conv1d) == (32, 96, True)  # Conv1D stores W as (in, out)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_meta_device_anatomy_equals_the_real_one(arch, real_models):
    real = inspect_model(real_models[arch])
    meta = inspect_model(meta_model(real_models[arch].config))
    assert meta == real


@pytest.mark.parametrize(
    "sub_name, role",
    [
        ("attn.c_attn", "qkv"),
        ("attn.c_proj", "o"),
        ("mlp.c_proj", "down"),
        ("mlp.c_fc", "up"),
        ("c_proj", "other"),
        ("self_attention.dense", "o"),
        ("attention.dense", "o"),
        ("dense", "other"),
        ("mlp.dense", "other"),
        ("fc1", "up"),
        ("fc2", "down"),
        ("self_attn.out_proj", "o"),
        ("self_attn.qkv_proj", "qkv"),
        ("mlp.gate_up_proj", "up"),
        ("mlp.gate_proj", "gate"),
        ("feed_forward.w1", "gate"),
        ("feed_forward.w2", "down"),
        ("feed_forward.w3", "up"),
        ("attention.wqkv", "qkv"),
        ("attention.wo", "o"),
        ("attn.Wqkv", "qkv"),
        ("ffn.up_proj", "up"),
        ("self_attn.q_proj", "q"),
        ("self_attn.k_proj", "k"),
        ("self_attn.v_proj", "v"),
        ("mamba.x_proj", "other"),
        ("lm_thing", "other"),
    ],
)
def test_classify(sub_name, role):
    assert classify(sub_name) == role


def _code_strings_and_names(module) -> list[str]:
    """String literals (docstrings and comments excluded) and identifiers in a module's code."""
    tree = ast.parse(inspect.getsource(module))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found.append(node.value.lower())
        elif isinstance(node, ast.Name):
            found.append(node.id.lower())
        elif isinstance(node, ast.Attribute):
            found.append(node.attr.lower())
    return found


def test_no_architecture_names_are_hard_coded_in_the_core():
    from adaptive_lora import allocation, budget, planning
    from adaptive_lora.strategies import base, custom, static

    for module in (anatomy_module, base, static, custom, budget, allocation, planning):
        code = _code_strings_and_names(module)
        assert any("attn" in text for text in code) or module is not anatomy_module  # the scan sees literals
        for model_type in ("gpt2", "gpt-2", "gpt_neox", "llama", "qwen", "neox", "falcon", "bloom", "mistral", "gemma", "phi3"):
            hits = [text for text in code if model_type in text]
            assert not hits, f"{module.__name__} hard-codes {model_type!r}: {hits[:3]}"
        # and nothing branches on the model type
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                named = {getattr(o, "attr", None) or getattr(o, "id", None) for o in operands}
                assert "model_type" not in named, f"{module.__name__} compares model_type (line {node.lineno})"


class _Block(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.attention = nn.ModuleDict(
            {
                "query": nn.Linear(width, width),
                "key": nn.Linear(width, 8),
                "value": nn.Linear(width, 8),
                "wo": nn.Linear(width, width),
            }
        )
        self.feed_forward = nn.ModuleDict({"w1": nn.Linear(width, 40), "w3": nn.Linear(width, 40), "w2": nn.Linear(40, width)})
        self.norm = nn.LayerNorm(width)


class _Custom(nn.Module):
    """An unknown architecture with its own names: found by structure, not by a table of models."""

    def __init__(self, layers: int = 5, width: int = 16):
        super().__init__()
        self.config = type("Cfg", (), {"model_type": "homegrown"})()
        self.embed = nn.Embedding(10, width)
        self.heads = nn.ModuleList([nn.Linear(width, 10), nn.Linear(width, 10)])  # shorter list: not the blocks
        self.stack = nn.ModuleList([_Block(width) for _ in range(layers)])


def test_unknown_architecture_is_found_by_structure():
    anatomy = inspect_model(_Custom())
    assert anatomy.model_type == "homegrown"
    assert anatomy.num_layers == 5
    assert anatomy.names[:7] == [
        f"stack.0.{n}"
        for n in (
            "attention.query",
            "attention.key",
            "attention.value",
            "attention.wo",
            "feed_forward.w1",
            "feed_forward.w3",
            "feed_forward.w2",
        )
    ]
    assert [m.role for m in anatomy.modules[:7]] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert anatomy.by_name()["stack.4.attention.key"].params_per_rank == 16 + 8


def test_a_model_without_decoder_blocks_is_rejected():
    with pytest.raises(UnsupportedModelError, match="no list of decoder blocks"):
        inspect_model(nn.Sequential(nn.Linear(4, 4)))


# --- mixture of experts ---------------------------------------------------------------------------

_MOE = {
    "mixtral": ("MixtralConfig", dict(num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, shared_expert_intermediate_size=16),
    ),
    # fused experts under `mlp.experts` / `mlp.router`, with no "moe" in any class name
    "gpt_oss": ("GptOssConfig", dict(num_local_experts=4, num_experts_per_tok=2, head_dim=8)),
}


def _moe_config(kind: str):
    import transformers

    class_name, extra = _MOE[kind]
    return getattr(transformers, class_name)(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        **extra,
    )


@pytest.mark.parametrize("kind", list(_MOE))
def test_mixture_of_experts_is_rejected_with_a_clear_message(kind):
    model = meta_model(_moe_config(kind))
    with pytest.raises(UnsupportedModelError) as info:
        inspect_model(model)
    assert isinstance(info.value, UserError)
    message = str(info.value)
    assert "mixture-of-experts" in message and repr(kind) in message and "dense model" in message
    assert "\n" not in message
    assert "(self_attn)" not in message and "()" not in message  # names the MoE part, not the attention


def test_a_list_of_experts_longer_than_the_layer_list_is_rejected():
    class Expert(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1, self.w2 = nn.Linear(8, 16), nn.Linear(16, 8)

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn = nn.ModuleDict({"q_proj": nn.Linear(8, 8)})
            self.block = nn.Module()
            self.block.experts = nn.ModuleList([Expert() for _ in range(6)])

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Layer() for _ in range(2)])

    with pytest.raises(UnsupportedModelError, match="mixture-of-experts"):
        inspect_model(Model())


def test_mixture_of_experts_config_dir_is_rejected_by_plan(tmp_path):
    _moe_config("mixtral").save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="mixture-of-experts"):
        plan(str(tmp_path))


# --- target_modules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, targets, leaves",
    [
        ("llama", ["q_proj", "v_proj"], {"q_proj", "v_proj"}),
        ("llama", ["q", "v"], {"q_proj", "v_proj"}),  # roles
        ("llama", ["gate", "up", "down"], {"gate_proj", "up_proj", "down_proj"}),
        ("llama", ["o_proj", "down"], {"o_proj", "down_proj"}),  # leaf and role mixed
        ("gpt2", ["c_attn"], {"c_attn"}),
        ("gpt2", ["qkv", "o"], {"c_attn", "c_proj"}),  # role o = attn.c_proj only
        ("gpt2", ["down"], {"c_proj"}),
        ("gpt2", ["c_proj"], {"c_proj"}),  # the leaf name selects both c_proj modules
        ("gpt_neox", ["query_key_value", "dense"], {"query_key_value", "dense"}),
        ("opt", ["fc1", "fc2"], {"fc1", "fc2"}),
    ],
)
def test_target_modules_select_by_leaf_or_role(arch, targets, leaves):
    full = inspect_model(meta_model(tiny_config(arch, num_layers=2)))
    chosen = full.select(targets)
    assert {m.leaf for m in chosen.modules} == leaves
    assert all(m.leaf in targets or m.role in targets for m in chosen.modules)
    expected = [m.name for m in full.modules if m.leaf in targets or m.role in targets]
    assert chosen.names == expected  # the anatomy's order is kept
    assert chosen.num_layers == full.num_layers and chosen.total_params == full.total_params


def test_gpt2_role_selection_counts():
    full = inspect_model(meta_model(tiny_config("gpt2", num_layers=3)))
    assert [m.name for m in full.select(["o"]).modules] == [f"transformer.h.{i}.attn.c_proj" for i in range(3)]
    assert [m.name for m in full.select(["down"]).modules] == [f"transformer.h.{i}.mlp.c_proj" for i in range(3)]
    assert len(full.select(["c_proj"]).modules) == 6
    assert full.select([full.names[0]]).names == [full.names[0]]  # full names work too
    assert full.select(None) is full and full.select([]) is full


@pytest.mark.parametrize("targets, bad", [(["q_proj", "nonexistent"], "nonexistent"), (["qkv"], "qkv"), (["c_attn"], "c_attn")])
def test_unknown_target_module_is_a_user_error(targets, bad):
    full = inspect_model(meta_model(tiny_config("llama", num_layers=2)))
    with pytest.raises(UserError) as info:
        full.select(targets)
    assert repr(bad) in str(info.value)
    assert "q_proj" in str(info.value)  # lists what would work


def test_target_modules_pass_through_plan():
    allocation = plan(meta_model(tiny_config("llama", num_layers=2)), "uniform", rank=4, target_modules=["q_proj", "v"])
    assert {m.leaf for m in allocation.modules} == {"q_proj", "v_proj"}
    assert allocation.trainable_params == 4 * 2 * ((32 + 32) + (32 + 16))


# --- meta-device planning from a directory with only config.json ---------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_load_skeleton_from_config_only_dir(arch, tmp_path):
    config = tiny_config(arch, num_layers=4)
    config.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    model = load_skeleton(str(tmp_path))
    params = list(model.parameters())
    assert params and all(p.device.type == "meta" for p in params)
    allocation = plan(str(tmp_path), "linear_decay", {"start": 8, "end": 2})
    assert allocation.anatomy.num_layers == 4
    assert allocation.anatomy == inspect_model(tiny_model(arch, num_layers=4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # nothing downloaded or written
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == config.model_type


def test_anatomy_of_accepts_an_anatomy_and_selects():
    full = inspect_model(meta_model(tiny_config("qwen2", num_layers=2)))
    assert anatomy_of(full) is full
    assert {m.role for m in anatomy_of(full, ["k"]).modules} == {"k"}


def test_empty_anatomy_is_a_user_error():
    with pytest.raises(UserError, match="no LoRA-targetable"):
        Anatomy("x", 2, (), 10)


def test_mlp_and_attention_role_sets_are_disjoint():
    assert not (ATTENTION_ROLES & MLP_ROLES)


# --- the embedded model -------------------------------------------------------------------------


@pytest.mark.embedded
def test_plan_on_the_embedded_model():
    from adaptive_lora.models import embedded_model_dir

    config = json.loads((embedded_model_dir() / "config.json").read_text())
    allocation = plan("embedded", "uniform", rank=8)
    anatomy = allocation.anatomy
    assert anatomy.model_type == "llama" and anatomy.num_layers == 30 == config["num_hidden_layers"]
    assert anatomy.roles() == ["q", "k", "v", "o", "up", "gate", "down"]
    assert len(anatomy.modules) == 30 * 7
    hidden, inter, kv = config["hidden_size"], config["intermediate_size"], config["num_key_value_heads"] * config["head_dim"]
    per_layer = 2 * (hidden + hidden) + 2 * (hidden + kv) + 3 * (hidden + inter)
    assert per_layer == 10_176
    assert allocation.trainable_params == 8 * 30 * per_layer == 2_442_240
    assert 134_000_000 < allocation.total_params < 135_000_000  # SmolLM2-135M, tied embeddings once
    decay = plan("embedded", "linear_decay")
    assert [decay.ranks[f"model.layers.{i}.mlp.down_proj"] for i in (0, 29)] == [16, 4]
