"""The `profile` family: the static shapes are points of it (same ranks, at their own ranks and
budget-matched), its interpolation by hand, and its one-line errors."""

from __future__ import annotations

import pytest

from adaptive_lora.anatomy import inspect_model
from adaptive_lora.errors import UserError
from adaptive_lora.planning import plan
from adaptive_lora.strategies import get_strategy
from tiny_models import meta_model, tiny_config

# (static strategy, its params, the profile point that should equal it)
POINTS = [
    ("uniform", {"rank": 8}, {"rank": 8}),
    ("uniform", {"rank": 3}, {"rank": 3, "depth": [1.0]}),
    ("linear_decay", {"start": 16, "end": 4}, {"rank": 16, "depth": [1.0, 0.25]}),
    ("linear_decay", {"start": 12, "end": 3}, {"rank": 12, "depth": [1.0, 0.25]}),
    ("linear_increase", {"start": 4, "end": 16}, {"rank": 16, "depth": [0.25, 1.0]}),
    ("attention_heavy", {"rank": 16, "mlp_ratio": 0.5}, {"rank": 16, "roles": {"mlp": 0.5, "other": 0.5}}),
    ("attention_heavy", {"rank": 10, "mlp_ratio": 0.3}, {"rank": 10, "roles": {"mlp": 0.3, "other": 0.3}}),
    ("mlp_heavy", {"rank": 16, "attention_ratio": 0.5}, {"rank": 16, "roles": {"attention": 0.5}}),
    (
        "mlp_heavy",
        {"rank": 16, "attention_ratio": 0.25},
        {"rank": 16, "roles": {"q": 0.25, "k": 0.25, "v": 0.25, "o": 0.25, "qkv": 0.25}},
    ),
]


@pytest.fixture(scope="module", params=[("llama", 30), ("gpt2", 24), ("qwen2", 7), ("llama", 1)], ids=lambda p: f"{p[0]}-{p[1]}")
def anatomy(request):
    arch, layers = request.param
    return inspect_model(meta_model(tiny_config(arch, num_layers=layers)))


@pytest.mark.parametrize("static, static_params, point", POINTS, ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(POINTS)])
def test_the_static_shapes_are_points_of_the_family(anatomy, static, static_params, point):
    expected = get_strategy(static)(anatomy, static_params)
    assert get_strategy("profile")(anatomy, point) == expected
    for budget_rank in (2, 8):  # and budget-matched: planning rescales both shapes alike
        matched = plan(anatomy, static, static_params, budget_rank=budget_rank).ranks
        assert plan(anatomy, "profile", point, budget_rank=budget_rank).ranks == matched


def test_three_knots_interpolate_linearly_by_hand():
    anatomy = inspect_model(meta_model(tiny_config("llama", num_layers=5)))
    # knots 8 x [1, 0.25, 1] at depths 0, 0.5, 1; layers at depths 0, .25, .5, .75, 1 -> 8, 5, 2, 5, 8
    # down (role weight 0.5) -> int(4), int(2.5), int(1), int(2.5), int(4) = 4, 2, 1, 2, 4
    ranks = get_strategy("profile")(anatomy, {"rank": 8, "depth": [1, 0.25, 1], "roles": {"down": 0.5}})
    by_layer = {(m.layer, m.role): ranks[m.name] for m in anatomy.modules}
    assert [by_layer[(i, "q")] for i in range(5)] == [8, 5, 2, 5, 8]
    assert [by_layer[(i, "down")] for i in range(5)] == [4, 2, 1, 2, 4]
    zero = get_strategy("profile")(anatomy, {"rank": 8, "roles": {"attention": 0}})
    assert min(zero.values()) == 1  # a zero weight floors at rank 1, as the static shapes do


@pytest.mark.parametrize(
    "params, message",
    [
        ({"roles": {"query": 1.0}}, "unknown role 'query'"),
        ({"roles": {"q": -1}}, "roles.q must be a non-negative number"),
        ({"roles": [1, 2]}, "roles must be a mapping"),
        ({"depth": []}, "depth must be a list of non-negative numbers"),
        ({"depth": [1, "x"]}, "depth must be a list"),
        ({"depth": [1, float("nan")]}, "depth must be a list"),
    ],
)
def test_bad_parameters_are_one_line_errors(params, message):
    anatomy = inspect_model(meta_model(tiny_config("llama", num_layers=2)))
    with pytest.raises(UserError, match=message):
        get_strategy("profile")(anatomy, params)
