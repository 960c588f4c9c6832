"""Budget matching, the Allocation value (counts, summaries, JSON, alpha policies) and PEFT
export / verify / save-and-reload on every tiny architecture."""

from __future__ import annotations

import itertools
import json
import math
import re

import pytest
import torch

from adaptive_lora.allocation import ALPHA_POLICIES, Allocation, alphas_for, verify
from adaptive_lora.anatomy import inspect_model
from adaptive_lora.budget import budget_for_rank, count_params, match_budget
from adaptive_lora.errors import UserError
from adaptive_lora.planning import load_allocation, plan
from adaptive_lora.schema import AllocationRecord, ModuleRecord, read_allocation, write_allocation
from adaptive_lora.strategies import get_strategy
from tiny_models import TINY_ARCHS, meta_model, tiny_config, tiny_inputs, tiny_model

pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

STATIC = {
    "uniform": None,
    "linear_decay": None,
    "linear_increase": None,
    "attention_heavy": None,
    "mlp_heavy": None,
    "empirical": None,
    "custom": {"layer_ranks": [3, 9, 1, 6, 12, 2]},
}
BUDGET_ARCHS = ("gpt2", "llama", "gpt_neox", "opt", "falcon")
LAYERS = 6


@pytest.fixture(scope="module")
def anatomies():
    return {arch: inspect_model(meta_model(tiny_config(arch, num_layers=LAYERS))) for arch in TINY_ARCHS}


def _target(anatomy, mode):
    """(budget, budget_rank, target) for one budget mode."""
    if mode is None:
        return None, None, None
    if isinstance(mode, str) and mode.startswith("rank"):
        r = int(mode[4:])
        return None, r, r * anatomy.params_per_rank()
    explicit = int(anatomy.params_per_rank() * 5.37) + 13  # deliberately not a multiple of anything
    return explicit, None, explicit


def _check_shape_preserved(anatomy, shape, matched):
    """Among modules of the same size, a larger shape rank never gets a smaller matched rank, and
    modules with equal shape ranks end up at most one apart."""
    for a, b in itertools.combinations(anatomy.modules, 2):
        if a.params_per_rank != b.params_per_rank:
            continue
        if shape[a.name] > shape[b.name]:
            assert matched[a.name] >= matched[b.name], (a.name, b.name)
        elif shape[a.name] < shape[b.name]:
            assert matched[a.name] <= matched[b.name], (a.name, b.name)
        else:
            assert abs(matched[a.name] - matched[b.name]) <= 1, (a.name, b.name)


@pytest.mark.parametrize("mode", [None, "rank4", "rank8", "explicit"])
@pytest.mark.parametrize("arch", BUDGET_ARCHS)
@pytest.mark.parametrize("strategy", list(STATIC))
def test_strategy_arch_budget_table(strategy, arch, mode, anatomies):
    anatomy = anatomies[arch]
    budget, budget_rank, target = _target(anatomy, mode)
    shape = get_strategy(strategy)(anatomy, STATIC[strategy])
    allocation = plan(anatomy, strategy, STATIC[strategy], budget=budget, budget_rank=budget_rank)

    assert allocation.trainable_params == count_params(anatomy, allocation.ranks)
    assert set(allocation.ranks) == set(anatomy.names)
    if target is None:
        assert allocation.ranks == shape  # the study's mode: ranks as the strategy defines them
        assert allocation.budget == {"target": None, "budget_rank": None}
        return
    max_step = max(m.params_per_rank for m in anatomy.modules)
    gap = target - allocation.trainable_params
    assert 0 <= gap < max_step, (target, allocation.trainable_params)
    assert all(1 <= r <= 256 for r in allocation.ranks.values())
    _check_shape_preserved(anatomy, shape, allocation.ranks)
    assert allocation.budget == {"target": target, "budget_rank": budget_rank}
    if strategy == "uniform" and budget_rank is not None:
        assert allocation.ranks == {n: budget_rank for n in anatomy.names} and gap == 0


def test_meta_records_the_shape_cost_before_rescaling(anatomies):
    anatomy = anatomies["llama"]
    shape = get_strategy("linear_decay")(anatomy)
    allocation = plan(anatomy, "linear_decay", budget_rank=2)
    assert allocation.meta["shape_params"] == count_params(anatomy, shape)
    assert allocation.meta["shape_params"] > allocation.trainable_params
    assert plan(anatomy, "linear_decay").meta["shape_params"] == count_params(anatomy, shape)


@pytest.mark.parametrize("min_rank, max_rank, r", [(2, 12, 8), (4, 8, 6), (1, 5, 4), (3, 3, 3)])
@pytest.mark.parametrize("strategy", ["linear_decay", "empirical", "custom"])
def test_budget_respects_min_and_max_rank(strategy, min_rank, max_rank, r, anatomies):
    anatomy = anatomies["llama"]
    shape = get_strategy(strategy)(anatomy, STATIC[strategy])
    allocation = plan(anatomy, strategy, STATIC[strategy], budget_rank=r, min_rank=min_rank, max_rank=max_rank)
    assert min(allocation.ranks.values()) >= min_rank and max(allocation.ranks.values()) <= max_rank
    gap = r * anatomy.params_per_rank() - allocation.trainable_params
    assert 0 <= gap < max(m.params_per_rank for m in anatomy.modules)
    _check_shape_preserved(anatomy, shape, allocation.ranks)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_budget_bounds_are_inclusive_and_errors_outside(arch, anatomies):
    anatomy = anatomies[arch]
    shape = get_strategy("linear_decay")(anatomy)
    lowest, highest = 2 * anatomy.params_per_rank(), 10 * anatomy.params_per_rank()
    assert match_budget(anatomy, shape, lowest, 2, 10) == {n: 2 for n in anatomy.names}
    assert match_budget(anatomy, shape, highest, 2, 10) == {n: 10 for n in anatomy.names}
    with pytest.raises(UserError, match="below the smallest possible"):
        match_budget(anatomy, shape, lowest - 1, 2, 10)
    with pytest.raises(UserError, match="above the largest possible"):
        match_budget(anatomy, shape, highest + 1, 2, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(budget=10), "below the smallest possible"),
        (dict(budget=-5), "below the smallest possible"),
        (dict(budget=10**12), "above the largest possible"),
        (dict(budget_rank=300), "above the largest possible"),
        (dict(budget_rank=0), "budget rank must be >= 1"),
        (dict(budget=10**5, budget_rank=4), "not both"),
        (dict(budget_rank=4, min_rank=0), "min_rank"),
        (dict(budget_rank=4, min_rank=8, max_rank=4), "min_rank"),
        (dict(budget_rank=4, min_rank=5), "below the smallest possible"),
        (dict(alpha_policy="sqrt"), "unknown alpha policy 'sqrt'"),
    ],
)
def test_budget_errors(kwargs, message, anatomies):
    with pytest.raises(UserError, match=message):
        plan(anatomies["llama"], "linear_decay", **kwargs)


def test_budget_for_rank_and_count_params(anatomies):
    anatomy = anatomies["llama"]
    per_layer = (32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 48) + (48 + 32)
    assert anatomy.params_per_rank() == LAYERS * per_layer
    assert budget_for_rank(anatomy, 8) == 8 * LAYERS * per_layer
    assert count_params(anatomy, {n: 8 for n in anatomy.names}) == budget_for_rank(anatomy, 8)


# --- the Allocation value --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_model():
    return tiny_model("llama", num_layers=4)


def test_exact_trainable_count_and_percentage(llama_model):
    allocation = plan(llama_model, "linear_decay", {"start": 12, "end": 3})
    layer_ranks = [12, 9, 6, 3]  # int(12 - 9 * i / 3)
    per_layer = (32 + 32) + 2 * (32 + 16) + (32 + 32) + 2 * (32 + 48) + (48 + 32)
    assert allocation.trainable_params == sum(r * per_layer for r in layer_ranks)
    total = sum(p.numel() for p in llama_model.parameters())
    assert allocation.total_params == total
    assert allocation.efficiency_pct == pytest.approx(100 * allocation.trainable_params / total)
    assert allocation.to_dict()["trainable_params"] == allocation.trainable_params


def test_summary_by_layer_and_role(llama_model):
    allocation = plan(llama_model, "custom", {"module_ranks": {"q_proj": 8, "k_proj": 2, "down_proj": 6}, "default": 4})
    summary = allocation.summary()
    assert summary["ranks_by_role"] == {"q": 8, "k": 2, "v": 4, "o": 4, "up": 4, "gate": 4, "down": 6}
    assert list(summary["ranks_by_role"]) == ["q", "k", "v", "o", "up", "gate", "down"]  # ROLES order
    assert (summary["min_rank"], summary["max_rank"]) == (2, 8)
    assert summary["mean_rank"] == pytest.approx((8 + 2 + 4 + 4 + 4 + 4 + 6) / 7)
    layer_params = 8 * 64 + 2 * 48 + 4 * 48 + 4 * 64 + 4 * 80 + 4 * 80 + 6 * 80
    assert summary["params_by_layer"] == [layer_params] * 4
    assert sum(summary["params_by_layer"]) == allocation.trainable_params
    table = allocation.layer_role_table()
    assert list(table) == [0, 1, 2, 3] and table[2] == {"q": 8, "k": 2, "v": 4, "o": 4, "gate": 4, "up": 4, "down": 6}


def test_layer_role_table_means_over_several_modules_of_one_role():
    anatomy = inspect_model(meta_model(tiny_config("gpt2", num_layers=2)))
    ranks = {m.name: (4 if m.name.endswith("mlp.c_proj") else 2) for m in anatomy.modules}
    allocation = Allocation(anatomy, ranks, alphas_for(ranks, "constant", 16, 8))
    assert allocation.layer_role_table()[1] == {"qkv": 2, "o": 2, "up": 2, "down": 4}


@pytest.mark.parametrize(
    "strategy, kwargs",
    [
        ("linear_decay", dict(budget_rank=4, alpha_policy="proportional")),
        ("empirical", dict(alpha_policy="rslora", lora_alpha=8.0)),
        ("custom", dict(params={"layer_ranks": [1, 2, 3, 4]}, alpha_policy="constant")),
    ],
)
def test_json_round_trip(tmp_path, llama_model, strategy, kwargs):
    params = kwargs.pop("params", None)
    allocation = plan(llama_model, strategy, params, **kwargs)
    path = tmp_path / "allocation.json"
    allocation.save(path)
    loaded = Allocation.load(path, allocation.anatomy)
    assert loaded.to_dict() == allocation.to_dict()
    assert (loaded.ranks, loaded.alphas) == (allocation.ranks, allocation.alphas)
    assert (loaded.strategy, loaded.params, loaded.alpha_policy, loaded.lora_r, loaded.lora_alpha) == (
        allocation.strategy,
        allocation.params,
        allocation.alpha_policy,
        allocation.lora_r,
        allocation.lora_alpha,
    )
    assert loaded.budget == allocation.budget and loaded.meta == allocation.meta
    data = json.loads(path.read_text())
    assert data["trainable_params"] == allocation.trainable_params
    # written as a table by role: one rank and alpha per layer, the name with "{layer}" in it
    table = data["modules"]
    assert set(table) == {m.role for m in allocation.anatomy.modules}
    for m in allocation.anatomy.modules:
        entry = table[m.role]
        assert entry["name"].replace("{layer}", str(m.layer)) == m.name
        assert (entry["in_features"], entry["out_features"]) == (m.in_features, m.out_features)
        assert (entry["rank"][m.layer], entry["alpha"][m.layer]) == (allocation.ranks[m.name], allocation.alphas[m.name])


def _row(layer, role, rank, name=None):
    return {
        "name": name or f"model.layers.{layer}.{role}_proj",
        "layer": layer,
        "role": role,
        "in_features": 8,
        "out_features": 4,
        "rank": rank,
        "alpha": 2.0 * rank,
    }


@pytest.mark.parametrize(
    "rows, table",
    [
        # AdaLoRA pruned q in layer 0 and k in layer 1: read back, each layer keeps its order (checked below)
        (
            [_row(0, "k", 2), _row(0, "v", 1), _row(1, "q", 3), _row(1, "v", 2)],
            {"q": [None, 3], "k": [2, None], "v": [1, 2]},
        ),
        ([_row(0, "q", 2), _row(1, "q", 4)], {"q": [2, 4]}),
        ([_row(0, "other", 2, "lm_head"), _row(1, "other", 2, "score")], None),  # no layer number in the names
        ([_row(-1, "other", 2, "score")], None),  # outside the layers
        ([_row(0, "q", 2), _row(0, "q", 3, "model.layers.0.extra.q_proj")], None),  # one role twice in a layer
        ([_row(1, "q", 2), _row(0, "q", 3)], None),  # not layer by layer
    ],
)
def test_allocation_file_writes_modules_as_a_table_only_when_it_gives_them_back(tmp_path, rows, table):
    write_allocation(tmp_path, AllocationRecord(strategy="custom", modules=[ModuleRecord(**r) for r in rows]))
    data = json.loads((tmp_path / "allocation.json").read_text())
    if table is None:
        assert data["modules"] == rows
    else:
        assert {role: entry["rank"] for role, entry in data["modules"].items()} == table
    assert [m.__dict__ for m in read_allocation(tmp_path).modules] == rows


@pytest.mark.parametrize(
    "q, message",
    [
        ({"name": "model.layers.{layer}.q"}, r"modules\.q needs a 'rank' list"),
        ({"name": "model.layers.{layer}.q", "rank": [4, "four"]}, r"modules\.q, layer 1, needs a name and an integer rank"),
    ],
)
def test_allocation_table_errors_name_the_role_and_layer(tmp_path, q, message):
    (tmp_path / "allocation.json").write_text(json.dumps({"modules": {"q": q}}))
    with pytest.raises(UserError, match=message):
        read_allocation(tmp_path)


def test_load_study_format_and_module_map(tmp_path, llama_model):
    anatomy = inspect_model(llama_model)
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"strategy_name": "layerwise_decay", "layer_ranks": [16, 12, 8, 4]}))
    loaded = load_allocation(study, anatomy, alpha_policy="proportional", lora_alpha=32, lora_r=16)
    assert loaded.strategy == "layerwise_decay"
    assert all(loaded.ranks[m.name] == [16, 12, 8, 4][m.layer] for m in anatomy.modules)
    assert all(loaded.alphas[n] == 2.0 * r for n, r in loaded.ranks.items())  # 32/16 * r

    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"model.layers.2.mlp.down_proj": 7, ".*": 3}))
    loaded = load_allocation(mapping, anatomy, alpha_policy="constant")
    assert loaded.ranks["model.layers.2.mlp.down_proj"] == 7
    assert sum(r == 3 for r in loaded.ranks.values()) == len(anatomy.modules) - 1
    assert set(loaded.alphas.values()) == {16.0}


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("{oops", "not valid JSON"),
        (json.dumps({"modules": [{"name": "model.layers.0.self_attn.q_proj", "rank": 4}]}), "needs name, rank and alpha"),
        (
            json.dumps({"modules": [{"name": "model.layers.99.self_attn.q_proj", "rank": 4, "alpha": 8}]}),
            "which the model does not have",
        ),
        (
            json.dumps({"modules": [{"name": "model.layers.0.self_attn.q_proj", "rank": 0, "alpha": 8}]}),
            "rank must be an integer >= 1",
        ),
    ],
)
def test_load_errors(tmp_path, llama_model, content, message):
    path = tmp_path / "allocation.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        Allocation.load(path, inspect_model(llama_model))


def test_allocation_on_another_model_is_rejected(tmp_path, llama_model):
    path = tmp_path / "allocation.json"
    plan(llama_model, "uniform").save(path)
    gpt2 = inspect_model(meta_model(tiny_config("gpt2", num_layers=4)))
    with pytest.raises(UserError, match="which the model does not have"):
        Allocation.load(path, gpt2)


@pytest.mark.parametrize(
    "other, message",
    [
        (dict(num_layers=6), "planned for a 4-layer model; this model has 6 layers"),
        (dict(num_layers=4, hidden_size=64), "was planned as 32->32, but this model's is 64->64"),
    ],
)
def test_allocation_for_a_differently_sized_model_is_rejected(tmp_path, llama_model, other, message):
    path = tmp_path / "allocation.json"
    plan(llama_model, "linear_decay").save(path)
    anatomy = inspect_model(meta_model(tiny_config("llama", **other)))
    with pytest.raises(UserError, match=message):
        Allocation.load(path, anatomy)


def test_allocation_for_a_subset_of_modules_loads(tmp_path, llama_model):
    path = tmp_path / "allocation.json"
    planned = plan(llama_model, "uniform", rank=4, target_modules=["q", "v"])
    planned.save(path)
    loaded = Allocation.load(path, inspect_model(llama_model))  # onto the full anatomy of the same model
    assert loaded.ranks == planned.ranks and loaded.trainable_params == planned.trainable_params


# --- alpha policies --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def decay_ranks(llama_model):
    return get_strategy("linear_decay")(inspect_model(llama_model), {"start": 16, "end": 2})


def test_proportional_keeps_alpha_over_r(llama_model):
    allocation = plan(llama_model, "linear_decay", {"start": 16, "end": 2}, lora_alpha=32, alpha_policy="proportional")
    assert allocation.lora_r == 16
    assert len(set(allocation.ranks.values())) == 4
    for name, rank in allocation.ranks.items():
        assert allocation.alphas[name] == pytest.approx(2.0 * rank)
        assert allocation.scaling(name) == pytest.approx(2.0)


def test_constant_keeps_alpha(llama_model):
    allocation = plan(llama_model, "linear_decay", {"start": 16, "end": 2}, lora_alpha=32, alpha_policy="constant")
    for name, rank in allocation.ranks.items():
        assert allocation.alphas[name] == 32.0
        assert allocation.scaling(name) == pytest.approx(32.0 / rank)


def test_rslora_scales_by_sqrt_r(llama_model):
    allocation = plan(llama_model, "linear_decay", {"start": 16, "end": 2}, lora_alpha=32, alpha_policy="rslora")
    for name, rank in allocation.ranks.items():
        assert allocation.alphas[name] == 32.0
        assert allocation.scaling(name) == pytest.approx(32.0 / math.sqrt(rank))
    assert allocation.to_peft_config().use_rslora is True


def test_alphas_for(decay_ranks):
    assert alphas_for({"a": 4, "b": 8}, "proportional", 16, 8) == {"a": 8.0, "b": 16.0}
    assert alphas_for({"a": 4, "b": 8}, "constant", 16, 8) == {"a": 16.0, "b": 16.0}
    assert alphas_for({"a": 4}, "rslora", 16, 8) == {"a": 16.0}
    assert set(ALPHA_POLICIES) == {"proportional", "constant", "rslora"}
    with pytest.raises(UserError, match="unknown alpha policy"):
        alphas_for(decay_ranks, "linear", 16, 8)


@pytest.mark.parametrize(
    "ranks, message",
    [
        ({"model.layers.0.self_attn.q_proj": 0}, "rank must be an integer >= 1"),
        ({"model.layers.0.self_attn.q_proj": 2.0}, "rank must be an integer >= 1"),
        ({"model.layers.0.self_attn.q_proj": True}, "rank must be an integer >= 1"),
        ({"nope": 2}, "which the model does not have"),
    ],
)
def test_allocation_validates_ranks(ranks, message, llama_model):
    with pytest.raises(UserError, match=message):
        Allocation(inspect_model(llama_model), ranks, {n: 1.0 for n in ranks})


# --- PEFT export -----------------------------------------------------------------------------------


def test_peft_config_keys_are_full_escaped_names_that_never_overlap():
    from peft.utils.other import get_pattern_key

    anatomy = inspect_model(meta_model(tiny_config("llama", num_layers=12)))
    ranks = {m.name: 1 + (m.layer * 7 + len(m.leaf)) % 13 for m in anatomy.modules}
    allocation = Allocation(anatomy, ranks, alphas_for(ranks, "proportional", 16, 8))
    config = allocation.to_peft_config()
    names = anatomy.names
    assert sorted(config.target_modules) == sorted(names)
    assert set(config.rank_pattern) == {re.escape(n) for n in names}
    assert set(config.alpha_pattern) == set(config.rank_pattern)
    assert "model\\.layers\\.1\\.self_attn\\.q_proj" in config.rank_pattern
    keys = list(config.rank_pattern)
    for name in names:
        # exactly one key fits each module, whatever the order PEFT tries them in
        fitting = [k for k in keys if re.match(rf"(.*\.)?({k})$", name)]
        assert fitting == [re.escape(name)], name
        assert get_pattern_key(keys, name) == re.escape(name)
        assert get_pattern_key(list(reversed(keys)), name) == re.escape(name)
        assert config.rank_pattern[re.escape(name)] == ranks[name]
    # and PEFT's wrapped names (base_model.model.<name>) still find their own key
    assert get_pattern_key(keys, "base_model.model.model.layers.11.mlp.up_proj") == re.escape("model.layers.11.mlp.up_proj")


def test_peft_config_fields():
    anatomy = inspect_model(meta_model(tiny_config("gpt2", num_layers=2)))
    ranks = {n: 4 for n in anatomy.names}
    allocation = Allocation(anatomy, ranks, alphas_for(ranks, "constant", 8, 4), lora_r=4, lora_alpha=8.0)
    config = allocation.to_peft_config(lora_dropout=0.1)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 8.0, 0.1, "none")
    assert config.fan_in_fan_out is True  # GPT-2 Conv1D
    assert plan(meta_model(tiny_config("llama", num_layers=2))).to_peft_config().fan_in_fan_out is False


def _heterogeneous_plan(model, alpha_policy="proportional"):
    """Ranks that differ by layer and by role, so any mix-up shows in the shapes."""
    anatomy = inspect_model(model)
    ranks = {m.name: 1 + (3 * m.layer + 2 * anatomy.roles().index(m.role)) % 7 for m in anatomy.modules}
    assert len(set(ranks.values())) >= 4
    alphas = alphas_for(ranks, alpha_policy, 16.0, 4)
    return Allocation(anatomy, ranks, alphas, "custom", {}, alpha_policy, 4, 16.0)


def _peft(model, allocation):
    from peft import get_peft_model

    return get_peft_model(model, allocation.to_peft_config())


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_get_peft_model_then_verify_on_every_arch(arch):
    model = tiny_model(arch, num_layers=3)
    allocation = _heterogeneous_plan(model)
    peft_model = _peft(model, allocation)
    verify(peft_model, allocation)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == allocation.trainable_params
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_A") and "default" in module.lora_A:
            assert module.r["default"] == allocation.ranks[name.removeprefix("base_model.model.")]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_twelve_layers_each_get_their_own_rank(arch):
    """layers.1 and layers.11 (and 10) must not share a pattern: a rank per layer shows any overlap."""
    model = tiny_model(arch, num_layers=12)
    anatomy = inspect_model(model)
    ranks = {m.name: m.layer + 1 for m in anatomy.modules}
    allocation = Allocation(anatomy, ranks, alphas_for(ranks, "proportional", 16.0, 8))
    peft_model = _peft(model, allocation)
    verify(peft_model, allocation)
    got = {
        name.removeprefix("base_model.model."): module.r["default"]
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A") and "default" in module.lora_A
    }
    assert got == ranks


@pytest.mark.parametrize("policy", ["constant", "rslora"])
def test_verify_checks_scaling_for_each_policy(policy):
    model = tiny_model("qwen2", num_layers=2)
    allocation = _heterogeneous_plan(model, policy)
    verify(_peft(model, allocation), allocation)


def _wrong_uniform(model, allocation):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model,
        LoraConfig(
            r=4, lora_alpha=16, target_modules=allocation.anatomy.names, fan_in_fan_out=any(m.conv1d for m in allocation.modules)
        ),
    )


def _wrong_subset(model, allocation):
    import warnings

    from peft import get_peft_model

    config = allocation.to_peft_config()
    config.target_modules = set(allocation.anatomy.names[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # PEFT: the first module's pattern keys match nothing
        return get_peft_model(model, config)


def _wrong_alpha(model, allocation):
    from peft import get_peft_model

    config = allocation.to_peft_config()
    config.alpha_pattern = {k: v * 2 for k, v in config.alpha_pattern.items()}
    return get_peft_model(model, config)


def _wrong_extra_trainable(model, allocation):
    peft_model = _peft(model, allocation)
    next(p for n, p in peft_model.named_parameters() if "lora_" not in n).requires_grad_(True)
    return peft_model


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize(
    "wrong, message",
    [
        (_wrong_uniform, "planned rank"),
        (_wrong_subset, "planned modules have no adapter"),
        (_wrong_alpha, "scaling"),
        (_wrong_extra_trainable, "trainable parameters"),
    ],
)
def test_verify_raises_on_a_mismatched_model(arch, wrong, message):
    model = tiny_model(arch, num_layers=2)
    allocation = _heterogeneous_plan(model)
    with pytest.raises(RuntimeError, match=message):
        verify(wrong(model, allocation), allocation)


def test_verify_flags_modules_outside_the_plan():
    model = tiny_model("llama", num_layers=2)
    allocation = _heterogeneous_plan(model)
    smaller = Allocation(allocation.anatomy, dict(list(allocation.ranks.items())[1:]), dict(list(allocation.alphas.items())[1:]))
    with pytest.raises(RuntimeError, match="adapted but not in the plan"):
        verify(_peft(model, allocation), smaller)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_save_and_reload_gives_identical_logits(arch, tmp_path):
    from peft import PeftModel

    seed = 3
    model = tiny_model(arch, seed=seed, num_layers=2)
    inputs = tiny_inputs()
    with torch.no_grad():
        base_logits = model(inputs).logits
    allocation = _heterogeneous_plan(model)
    peft_model = _peft(model, allocation)
    torch.manual_seed(1)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(inputs).logits
    assert not torch.allclose(adapted, base_logits, atol=1e-4)  # the adapter really changes outputs
    peft_model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert set(saved["rank_pattern"]) == {re.escape(n) for n in allocation.ranks}

    fresh = tiny_model(arch, seed=seed, num_layers=2)
    reloaded = PeftModel.from_pretrained(fresh, tmp_path, is_trainable=True).eval()
    with torch.no_grad():
        again = reloaded(inputs).logits
    assert torch.equal(again, adapted)
    verify(reloaded, allocation)


def _random_case(rng):
    """A random anatomy (module sizes, roles), shape (some modules untargeted), rank bounds and target."""
    from adaptive_lora.anatomy import Anatomy, LinearModule

    roles = ("q", "k", "v", "o", "up", "gate", "down")
    modules = tuple(
        LinearModule(
            f"model.layers.{i}.proj", i, rng.choice(roles), rng.choice((8, 16, 24, 64, 96, 256, 1000)), rng.randint(4, 600)
        )
        for i in range(rng.randint(1, 9))
    )
    anatomy = Anatomy("random", len(modules), modules, 10**7)
    shape = {m.name: rng.choice((0, 1, 2, 3, 5, 8, 13, 40, 100)) for m in modules}
    shape[rng.choice(modules).name] = rng.randint(1, 64)  # at least one targeted module
    min_rank = rng.randint(1, 4)
    max_rank = rng.randint(min_rank, min_rank + rng.choice((0, 3, 30, 200)))
    targeted = [m for m in modules if shape[m.name] > 0]
    lowest = sum(min_rank * m.params_per_rank for m in targeted)
    highest = sum(max_rank * m.params_per_rank for m in targeted)
    return anatomy, shape, rng.randint(lowest, highest), min_rank, max_rank, targeted


def test_budget_matching_is_within_target_and_bounds_and_maximal_on_random_cases():
    """Property test: never over the target, always within [min_rank, max_rank], and maximal: no
    module can take one more rank without passing the target or max_rank."""
    import random

    rng = random.Random(2024)
    for case in range(3000):
        anatomy, shape, target, min_rank, max_rank, targeted = _random_case(rng)
        ranks = match_budget(anatomy, shape, target, min_rank, max_rank)
        where = (case, target, min_rank, max_rank, shape, [(m.in_features, m.out_features) for m in anatomy.modules])
        assert set(ranks) == {m.name for m in targeted}, where
        assert all(min_rank <= r <= max_rank for r in ranks.values()), where
        spent = count_params(anatomy, ranks)
        assert spent <= target, where
        can_grow = [m.name for m in targeted if ranks[m.name] < max_rank and spent + m.params_per_rank <= target]
        assert not can_grow, (can_grow, where)
