"""Strategies: the study's exact semantics, custom inputs, and parameter validation."""

from __future__ import annotations

import json

import pytest

from adaptive_lora.anatomy import Anatomy, LinearModule, inspect_model
from adaptive_lora.errors import UserError
from adaptive_lora.planning import plan
from adaptive_lora.strategies import REGISTRY, all_strategies, get_strategy
from tiny_models import meta_model, tiny_config

STUDY_STRATEGIES = ("uniform", "linear_decay", "linear_increase", "attention_heavy", "mlp_heavy", "empirical", "custom")


def synthetic(num_layers: int, roles=("q", "k", "v", "o", "gate", "up", "down")) -> Anatomy:
    """A Llama-like anatomy without building any model."""
    leaf = {
        "q": "attn.q_proj",
        "k": "attn.k_proj",
        "v": "attn.v_proj",
        "o": "attn.o_proj",
        "qkv": "attn.c_attn",
        "gate": "mlp.gate_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    }
    size = {
        "q": (64, 64),
        "k": (64, 16),
        "v": (64, 16),
        "o": (64, 64),
        "qkv": (64, 192),
        "gate": (64, 96),
        "up": (64, 96),
        "down": (96, 64),
    }
    modules = tuple(LinearModule(f"blocks.{i}.{leaf[r]}", i, r, *size[r]) for i in range(num_layers) for r in roles)
    return Anatomy("synthetic", num_layers, modules, 10**6)


@pytest.fixture(scope="module")
def gpt2_24():
    return inspect_model(meta_model(tiny_config("gpt2", num_layers=24)))


@pytest.fixture(scope="module")
def llama_12():
    return inspect_model(meta_model(tiny_config("llama", num_layers=12)))


def per_layer(anatomy: Anatomy, ranks: dict[str, int]) -> list[int]:
    """The one rank each layer has (asserting that all its modules agree)."""
    layers: dict[int, set[int]] = {}
    for m in anatomy.modules:
        layers.setdefault(m.layer, set()).add(ranks[m.name])
    assert all(len(v) == 1 for v in layers.values()), layers
    return [layers[i].pop() for i in range(anatomy.num_layers)]


def test_registry_has_the_study_strategies():
    names = {s.name for s in all_strategies()}
    assert set(STUDY_STRATEGIES) <= names
    assert [s.name for s in all_strategies()] == sorted(REGISTRY)
    for name in STUDY_STRATEGIES:
        assert get_strategy(name).name == name and get_strategy(name).description


@pytest.mark.parametrize("name", STUDY_STRATEGIES[:-1])
def test_static_strategies_rank_every_module_with_positive_ints(name, llama_12):
    ranks = get_strategy(name)(llama_12)
    assert set(ranks) == set(llama_12.names)
    assert all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks.values())


# --- linear decay / increase ---------------------------------------------------------------------


def test_linear_decay_study_default_every_layer_of_24(gpt2_24):
    ranks = get_strategy("linear_decay")(gpt2_24)
    L = 24
    expected = [max(1, int(16 - (16 - 4) * i / (L - 1))) for i in range(L)]
    assert per_layer(gpt2_24, ranks) == expected
    assert expected[0] == 16 and expected[-1] == 4
    assert expected[:4] == [16, 15, 14, 14] and expected[11:13] == [10, 9]


@pytest.mark.parametrize(
    "start, end, L, min_rank",
    [
        (16, 4, 24, 1),
        (16, 4, 12, 1),
        (16, 4, 30, 1),
        (32, 8, 7, 1),
        (8, 2, 5, 3),
        (16, 4, 2, 1),
        (16, 4, 1, 1),
        # cases where (start - end) * (i / (L - 1)) and the study's (start - end) * i / (L - 1) truncate differently
        (26, 1, 26, 1),
        (30, 1, 30, 1),
        (36, 1, 36, 1),
        (40, 1, 40, 1),
        (39, 1, 39, 1),
    ],
)
def test_linear_decay_matches_the_study_formula(start, end, L, min_rank):
    anatomy = synthetic(L, roles=("q", "down"))
    ranks = get_strategy("linear_decay")(anatomy, {"start": start, "end": end, "min_rank": min_rank})
    expected = [max(min_rank, int(start - (start - end) * i / (L - 1))) if L > 1 else start for i in range(L)]
    assert per_layer(anatomy, ranks) == expected


@pytest.mark.parametrize(
    "start, end, L", [(4, 16, 24), (4, 16, 12), (2, 10, 5), (1, 24, 24), (1, 23, 23), (1, 40, 40), (8, 8, 6)]
)
def test_linear_increase_mirrors_linear_decay(start, end, L):
    anatomy = synthetic(L, roles=("k",))
    ranks = get_strategy("linear_increase")(anatomy, {"start": start, "end": end})
    expected = [max(1, int(start + (end - start) * i / (L - 1))) for i in range(L)]
    got = per_layer(anatomy, ranks)
    assert got == expected
    assert got[0] == start and got[-1] == end and got == sorted(got)


def test_linear_decay_min_rank_floors(llama_12):
    ranks = get_strategy("linear_decay")(llama_12, {"start": 16, "end": 1, "min_rank": 6})
    got = per_layer(llama_12, ranks)
    assert min(got) == 6 and got[0] == 16 and got[-1] == 6


def test_rank_sets_the_strategy_rank_parameter(llama_12):
    assert get_strategy("linear_decay").resolve(None, rank=12)["start"] == 12
    assert get_strategy("linear_increase").resolve(None, rank=12)["end"] == 12
    assert get_strategy("uniform").resolve(None, rank=3)["rank"] == 3
    assert get_strategy("custom").resolve(None, rank=3) == get_strategy("custom").defaults()
    # user parameters win over the base rank
    assert get_strategy("linear_decay").resolve({"start": 20}, rank=12)["start"] == 20


# --- attention / MLP heavy ------------------------------------------------------------------------


def test_attention_heavy_on_gpt2_counts_attn_c_proj_as_attention(gpt2_24):
    ranks = get_strategy("attention_heavy")(gpt2_24)
    for m in gpt2_24.modules:
        expected = 16 if m.leaf == "c_attn" or m.name.endswith("attn.c_proj") else 8
        assert ranks[m.name] == expected, m.name
    assert ranks["transformer.h.5.attn.c_proj"] == 16 and ranks["transformer.h.5.mlp.c_proj"] == 8


def test_mlp_heavy_is_the_mirror(gpt2_24, llama_12):
    for anatomy in (gpt2_24, llama_12):
        ranks = get_strategy("mlp_heavy")(anatomy)
        for m in anatomy.modules:
            assert ranks[m.name] == (8 if m.role in {"q", "k", "v", "o", "qkv"} else 16), m.name


@pytest.mark.parametrize("rank, ratio, light", [(16, 0.5, 8), (10, 0.25, 2), (8, 0.3, 2), (4, 0.1, 1), (12, 0.0, 1)])
def test_heavy_ratios_truncate_and_floor_at_one(rank, ratio, light, llama_12):
    att = get_strategy("attention_heavy")(llama_12, {"rank": rank, "mlp_ratio": ratio})
    mlp = get_strategy("mlp_heavy")(llama_12, {"rank": rank, "attention_ratio": ratio})
    for m in llama_12.modules:
        assert att[m.name] == (rank if m.is_attention else light)
        assert mlp[m.name] == (light if m.is_attention else rank)


# --- empirical ------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", [16, 8, 5, 32])
@pytest.mark.parametrize("L", [24, 11, 10, 4, 2])
def test_empirical_bands_by_relative_depth(base, L):
    anatomy = synthetic(L, roles=("q", "up"))
    got = per_layer(anatomy, get_strategy("empirical")(anatomy, rank=base))
    for i, rank in enumerate(got):
        depth = i / (L - 1)
        factor = 0.6 if depth < 0.3 else 1.2 if depth < 0.7 else 1.0
        assert rank == max(1, int(base * factor)), (i, depth)


def test_empirical_values_of_the_study():
    anatomy = synthetic(11, roles=("q",))  # depths 0.0, 0.1 ... 1.0: 0.3 and 0.7 fall exactly on the bounds
    got = per_layer(anatomy, get_strategy("empirical")(anatomy))
    assert got == [9, 9, 9, 19, 19, 19, 19, 16, 16, 16, 16]  # int(9.6), int(19.2), 16


# --- custom ---------------------------------------------------------------------------------------


def test_custom_per_layer_list(llama_12):
    layer_ranks = [16, 14, 12, 12, 10, 8, 8, 6, 6, 4, 4, 2]
    for value in (layer_ranks, json.dumps(layer_ranks)):
        ranks = get_strategy("custom")(llama_12, {"layer_ranks": value})
        assert per_layer(llama_12, ranks) == layer_ranks


def test_custom_module_map_exact_suffix_and_regex(llama_12):
    first = llama_12.modules[0].name
    module_ranks = {
        first: 32,  # a full name
        r"model\.layers\.(1|11)\.self_attn\.[qk]_proj": 24,  # a regex; layers.1 must not catch layers.11's siblings
        "down_proj": 6,  # a leaf suffix
    }
    ranks = get_strategy("custom")(llama_12, {"module_ranks": module_ranks, "default": 3})
    for m in llama_12.modules:
        if m.name == first:
            expected = 32
        elif m.layer in (1, 11) and m.leaf in ("q_proj", "k_proj"):
            expected = 24
        elif m.leaf == "down_proj":
            expected = 6
        else:
            expected = 3
        assert ranks[m.name] == expected, m.name


def test_custom_module_map_on_top_of_a_layer_list(llama_12):
    ranks = get_strategy("custom")(llama_12, {"layer_ranks": [4] * 12, "module_ranks": json.dumps({"o_proj": 9})})
    assert all(ranks[m.name] == (9 if m.leaf == "o_proj" else 4) for m in llama_12.modules)


def test_custom_module_map_without_default_must_cover_everything(llama_12):
    with pytest.raises(UserError, match="gives no rank for module"):
        get_strategy("custom")(llama_12, {"module_ranks": {"q_proj": 4}})


@pytest.mark.parametrize(
    "module_ranks, message",
    [
        ({"q_proj": 4, "nothing_here": 2}, "'nothing_here' matches no targeted module"),
        ({"q_proj[": 4}, "valid regex"),
        ({"q_proj": "eight"}, "rank must be an integer"),
        ({"q_proj": 4.5}, "rank must be an integer"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_custom_module_map_errors(module_ranks, message, llama_12):
    with pytest.raises(UserError, match=message):
        get_strategy("custom")(llama_12, {"module_ranks": module_ranks, "default": 1})


def test_custom_study_file(tmp_path, llama_12):
    layer_ranks = [16, 16, 12, 12, 12, 8, 8, 8, 8, 4, 4, 4]
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"strategy_name": "my_decay", "description": "from the study", "layer_ranks": layer_ranks}))
    ranks = get_strategy("custom")(llama_12, {"file": str(path)})
    assert per_layer(llama_12, ranks) == layer_ranks


@pytest.mark.parametrize(
    "content",
    [
        {"module_ranks": {"q_proj": 5}, "layer_ranks": [2] * 12},
        {"model.layers.0.self_attn.q_proj": 5, ".*": 2},  # a plain {name or regex: rank} map
        [2] * 12,  # a bare list
    ],
)
def test_custom_file_formats(tmp_path, llama_12, content):
    path = tmp_path / "ranks.json"
    path.write_text(json.dumps(content))
    ranks = get_strategy("custom")(llama_12, {"file": str(path)})
    assert set(ranks) == set(llama_12.names)
    assert ranks["model.layers.3.mlp.up_proj"] == 2
    if not isinstance(content, list):
        assert ranks["model.layers.0.self_attn.q_proj"] == 5


@pytest.mark.parametrize("given", [3, 13, 0])
def test_custom_wrong_length_list_names_both_counts(given, llama_12):
    with pytest.raises(UserError) as info:
        get_strategy("custom")(llama_12, {"layer_ranks": [8] * given})
    assert f"has {given} entries" in str(info.value) and "12 layers" in str(info.value)


def test_custom_wrong_length_file_names_the_file(tmp_path, llama_12):
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"strategy_name": "x", "layer_ranks": [8, 8]}))
    with pytest.raises(UserError, match=r"study\.json.*has 2 entries but the model has 12 layers"):
        get_strategy("custom")(llama_12, {"file": str(path)})


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "needs layer_ranks"),
        ({"layer_ranks": "[8, 8"}, "must be JSON"),
        ({"layer_ranks": [8.5] * 12}, "list of integers"),
        ({"layer_ranks": [True] * 12}, "list of integers"),
        ({"layer_ranks": {"a": 1}}, "list of integers"),
        ({"file": "/nonexistent/ranks.json"}, "does not exist"),
    ],
)
def test_custom_input_errors(params, message, llama_12):
    with pytest.raises(UserError, match=message):
        get_strategy("custom")(llama_12, params)


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "not valid JSON"), ('"a string"', "expected an object"), ('{"x": "y"}', "expected layer_ranks")],
)
def test_custom_bad_files(tmp_path, llama_12, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        get_strategy("custom")(llama_12, {"file": str(path)})


def test_custom_zero_rank_is_rejected_by_plan(llama_12):
    with pytest.raises(UserError, match="every rank must be >= 1"):
        plan(llama_12, "custom", {"layer_ranks": [0] + [4] * 11})


# --- parameter validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, message",
    [
        ("uniform", {"rnak": 8}, "has no parameter 'rnak'; its parameters are: rank"),
        ("linear_decay", {"rank": 8}, "has no parameter 'rank'; its parameters are: start, end, min_rank"),
        ("linear_decay", {"start": "abc"}, "start must be int, got 'abc'"),
        ("linear_decay", {"start": 2.5}, "start must be int"),
        ("linear_decay", {"start": True}, "start must be int"),
        ("linear_decay", {"start": [16]}, "start must be int"),
        ("linear_decay", {"start": float("inf")}, "start must be int"),
        ("linear_decay", {"start": float("nan")}, "start must be int"),
        ("attention_heavy", {"mlp_ratio": "half"}, "mlp_ratio must be float"),
        ("attention_heavy", {"mlp_ratio": float("nan")}, "mlp_ratio must be float"),
        ("empirical", {"early": float("inf")}, "early must be float"),
        ("uniform", {"rank": 0}, "rank must be >= 1, got 0"),
        ("uniform", {"rank": -3}, "rank must be >= 1"),
        ("linear_decay", {"end": 0}, "end must be >= 1"),
        ("linear_decay", {"min_rank": 0}, "min_rank must be >= 1"),
        ("mlp_heavy", {"attention_ratio": -0.5}, "attention_ratio must be >= 0"),
        ("custom", {"default": -1, "module_ranks": {"q_proj": 2}}, "default must be >= 0"),
        ("custom", {"default": "x"}, "default must be int"),
    ],
)
def test_parameter_validation(name, params, message, llama_12):
    with pytest.raises(UserError) as info:
        get_strategy(name)(llama_12, params)
    assert message in str(info.value)
    assert repr(name) in str(info.value)


@pytest.mark.parametrize("value, expected", [("12", 12), (12.0, 12), ("12.0", 12), (12, 12)])
def test_integer_parameters_accept_integral_text_and_floats(value, expected):
    assert get_strategy("linear_decay").resolve({"start": value})["start"] == expected


def test_base_rank_below_one_is_rejected(llama_12):
    with pytest.raises(UserError, match="must be >= 1"):
        get_strategy("uniform")(llama_12, rank=0)
    with pytest.raises(UserError, match="rank must be >= 1"):
        plan(llama_12, "linear_decay", rank=0)


def test_unknown_strategy_lists_the_available_ones():
    with pytest.raises(UserError) as info:
        get_strategy("linear_decya")
    message = str(info.value)
    assert "'linear_decya'" in message
    assert all(name in message for name in STUDY_STRATEGIES)


def test_strategies_are_pure(llama_12):
    for name in STUDY_STRATEGIES[:-1]:
        assert get_strategy(name)(llama_12) == get_strategy(name)(llama_12)
