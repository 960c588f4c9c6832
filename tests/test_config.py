"""Run configuration: YAML, dotted overrides, one-line errors that name the key."""

from __future__ import annotations

import pytest

from adaptive_lora.config import (
    AllocationConfig,
    RunConfig,
    apply_overrides,
    dump_yaml,
    load_run_config,
    load_yaml,
    parse_override,
)
from adaptive_lora.errors import UserError
from adaptive_lora.planning import plan, plan_from_config
from tiny_models import meta_model, tiny_config

FULL_YAML = """\
model:
  name: embedded
  precision: fp32
data:
  source: rows.jsonl
  field_map: {instruction: question, output: answer}
  max_samples: 200
  val_set_size: 0.2
allocation:
  strategy: linear_decay
  params: {start: 16, end: 4}
  lora_r: 16
  lora_alpha: 32
  alpha_policy: constant
  budget_rank: 8
  target_modules: [q_proj, v_proj]
training:
  learning_rate: 1e-4
  max_steps: 10
  micro_batch_size: 4
  seed: 7
  eval_steps: null
output:
  dir: runs/x
  overwrite: true
"""


@pytest.fixture
def yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(FULL_YAML)
    return path


def test_yaml_load(yaml_file):
    config = load_run_config(yaml_file)
    assert config.model.precision == "fp32"
    assert config.data.field_map == {"instruction": "question", "output": "answer"}
    assert config.data.max_samples == 200 and config.data.val_set_size == 0.2
    a = config.allocation
    assert (a.strategy, a.params, a.lora_r, a.lora_alpha, a.alpha_policy) == (
        "linear_decay",
        {"start": 16, "end": 4},
        16,
        32.0,
        "constant",
    )
    assert a.budget_rank == 8 and a.budget is None and a.target_modules == ["q_proj", "v_proj"]
    assert isinstance(a.lora_alpha, float)
    t = config.training
    assert t.learning_rate == 1e-4 and isinstance(t.learning_rate, float)  # YAML reads 1e-4 as a string
    assert (t.max_steps, t.micro_batch_size, t.seed, t.eval_steps) == (10, 4, 7, None)
    assert config.output.overwrite is True and config.output.dir == "runs/x"
    # untouched fields keep their defaults
    assert config.training.sequence_len == 256 and config.data.prompt_format == "auto"


def test_defaults_without_a_file():
    assert load_run_config() == RunConfig()
    assert load_run_config(None, []).allocation == AllocationConfig()


def test_dotted_overrides(yaml_file):
    config = load_run_config(yaml_file, ["training.max_steps=3", "data.max_samples=40"])
    assert config.training.max_steps == 3 and isinstance(config.training.max_steps, int)
    assert config.data.max_samples == 40
    assert config.training.seed == 7  # the rest of the file is kept


@pytest.mark.parametrize(
    "override, getter, expected",
    [
        ("allocation.params.start=12", lambda c: c.allocation.params, {"start": 12, "end": 4}),
        ("allocation.target_modules=q_proj,k_proj", lambda c: c.allocation.target_modules, ["q_proj", "k_proj"]),
        ("allocation.target_modules=[o_proj]", lambda c: c.allocation.target_modules, ["o_proj"]),
        ("allocation.target_modules=null", lambda c: c.allocation.target_modules, None),
        ("allocation.budget=3145728", lambda c: c.allocation.budget, 3145728),
        ("training.learning_rate=2e-4", lambda c: c.training.learning_rate, 2e-4),
        ("training.num_epochs=2", lambda c: c.training.num_epochs, 2.0),
        ("output.overwrite=false", lambda c: c.output.overwrite, False),
        ("output.overwrite=yes", lambda c: c.output.overwrite, True),
        ("data.field_map.output=reply", lambda c: c.data.field_map, {"instruction": "question", "output": "reply"}),
        ("model.name=/models/x", lambda c: c.model.name, "/models/x"),
        ("training.max_steps=5.0", lambda c: c.training.max_steps, 5),
    ],
)
def test_override_values(yaml_file, override, getter, expected):
    value = getter(load_run_config(yaml_file, [override]))
    assert value == expected and type(value) is type(expected)


def test_overrides_as_a_dict():
    config = RunConfig().with_overrides({"training.max_steps": 3, "allocation.strategy": "empirical"})
    assert config.training.max_steps == 3 and config.allocation.strategy == "empirical"
    data = {"a": {"b": 1}}
    apply_overrides(data, ["a.c=2"])
    assert data == {"a": {"b": 1, "c": 2}}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("training.max_steps=3", ("training.max_steps", 3)),
        ("a.b=[1, 2]", ("a.b", [1, 2])),
        ("a.b=", ("a.b", "")),
        ("a.b=x=y", ("a.b", "x=y")),
        ("a.b={unclosed", ("a.b", "{unclosed")),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize(
    "yaml_text, key",
    [
        ("trainig:\n  max_steps: 3\n", "'trainig'"),
        ("training:\n  max_step: 3\n", "'max_step'"),
        ("allocation:\n  lora_rank: 8\n", "'lora_rank'"),
        ("model:\n  name: x\n  dtype: fp16\n", "'dtype'"),
    ],
)
def test_unknown_yaml_key_is_named(tmp_path, yaml_text, key):
    path = tmp_path / "run.yaml"
    path.write_text(yaml_text)
    with pytest.raises(UserError) as info:
        load_run_config(path)
    message = str(info.value)
    assert f"unknown key {key}" in message and "valid keys are" in message and str(path) in message


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.max_step=3", "unknown key 'max_step'"),
        ("lora_r=8", "unknown key 'lora_r'"),
        ("trainig.max_steps=3", "'trainig' is not a section"),
        ("training.max_steps.x=3", "'training.max_steps' is not a section"),
        ("training.max_steps", "is not key=value"),
    ],
)
def test_unknown_override_key_is_named(override, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.")):
        load_run_config(None, [override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.max_steps=abc", "training.max_steps: expected an integer, got 'abc'"),
        ("training.max_steps=2.5", "training.max_steps: expected an integer"),
        ("training.max_steps=true", "training.max_steps: expected an integer"),
        ("training.max_steps=.nan", "training.max_steps: expected an integer"),
        ("training.max_steps=.inf", "training.max_steps: expected an integer"),
        ("training.max_steps=[1]", "training.max_steps: expected an integer"),
        ("training.learning_rate=fast", "training.learning_rate: expected a number"),
        ("training.learning_rate=true", "training.learning_rate: expected a number"),
        ("output.overwrite=maybe", "output.overwrite: expected true or false"),
        ("data.field_map=[1]", "data.field_map: expected a mapping"),
        ("allocation.target_modules={a: 1}", "allocation.target_modules: expected a list"),
        ("allocation.budget=lots", "allocation.budget: expected an integer"),
        ("model.name=[a]", "model.name: expected a string"),
        ("allocation.params=3", "allocation.params: expected a mapping"),
        ("training=3", "training: expected a mapping"),
    ],
)
def test_wrong_type_is_a_user_error(override, message):
    with pytest.raises(UserError) as info:
        load_run_config(None, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_type_in_yaml_names_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  micro_batch_size: eight\n")
    with pytest.raises(UserError, match=r"run\.yaml\.training\.micro_batch_size: expected an integer"):
        load_run_config(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist"),
        ("training: [unclosed\n", "is not valid YAML"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "run.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_yaml(path)


def test_empty_yaml_is_the_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("")
    assert load_run_config(path) == RunConfig()


def test_dump_and_reload(tmp_path, yaml_file):
    config = load_run_config(yaml_file, ["training.max_steps=3"])
    out = tmp_path / "out" / "config.yaml"
    dump_yaml(config, out)
    assert load_run_config(out) == config


def test_plan_from_config_uses_the_allocation_section():
    anatomy_model = meta_model(tiny_config("llama", num_layers=4))
    config = load_run_config(
        None,
        [
            "allocation.strategy=linear_decay",
            "allocation.params.end=2",
            "allocation.lora_r=8",
            "allocation.alpha_policy=constant",
            "allocation.target_modules=q_proj,v_proj",
        ],
    )
    allocation = plan_from_config(anatomy_model, config.allocation)
    expected = plan(
        anatomy_model, "linear_decay", {"end": 2}, alpha_policy="constant", lora_r=8, target_modules=["q_proj", "v_proj"]
    )
    assert allocation.ranks == expected.ranks and allocation.alphas == expected.alphas
    assert {m.leaf for m in allocation.modules} == {"q_proj", "v_proj"}
    uniform = plan_from_config(anatomy_model, load_run_config(None, ["allocation.lora_r=4"]).allocation)
    assert set(uniform.ranks.values()) == {4}
