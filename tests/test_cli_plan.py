"""`adaptive-lora plan` and `adaptive-lora strategies`, in-process through `cli.main`."""

from __future__ import annotations

import json

import pytest

from adaptive_lora.allocation import Allocation
from adaptive_lora.anatomy import inspect_model
from adaptive_lora.cli import main
from adaptive_lora.models import load_skeleton
from adaptive_lora.planning import plan
from adaptive_lora.schema import read_allocation
from adaptive_lora.strategies import all_strategies
from tiny_models import tiny_config

DIALOGPT_MEDIUM = dict(
    n_layer=24, n_embd=1024, n_head=16, vocab_size=50257, n_positions=1024, n_ctx=1024, bos_token_id=50256, eos_token_id=50256
)


@pytest.fixture(scope="module")
def dialogpt_dir(tmp_path_factory):
    from transformers import GPT2Config

    path = tmp_path_factory.mktemp("dialogpt-medium")
    GPT2Config(**DIALOGPT_MEDIUM).save_pretrained(path)
    assert sorted(p.name for p in path.iterdir()) == ["config.json"]
    return path


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2-tiny")
    tiny_config("gpt2", num_layers=4).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama-tiny")
    tiny_config("llama", num_layers=4).save_pretrained(path)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# --- the acceptance check -------------------------------------------------------------------------


@pytest.mark.parametrize("rank, trainable", [(8, 3_145_728), (16, 6_291_456)])
def test_dialogpt_medium_uniform_counts_via_api(dialogpt_dir, rank, trainable):
    allocation = plan(load_skeleton(str(dialogpt_dir)), "uniform", rank=rank)
    assert allocation.trainable_params == trainable
    assert allocation.anatomy.num_layers == 24 and len(allocation.ranks) == 96
    assert plan(str(dialogpt_dir), "uniform", rank=rank).trainable_params == trainable


@pytest.mark.parametrize("rank, trainable", [(8, 3_145_728), (16, 6_291_456)])
def test_dialogpt_medium_uniform_counts_via_cli(capsys, dialogpt_dir, rank, trainable):
    data = run_json(capsys, "plan", "--model", str(dialogpt_dir), "--strategy", "uniform", "--rank", str(rank))
    assert data["trainable_params"] == trainable
    assert data["total_params"] == 354_823_168  # GPT-2 medium, tied lm_head counted once
    assert data["efficiency_pct"] == pytest.approx(100 * trainable / 354_823_168)
    modules = data["modules"]
    assert len(modules) == 96
    assert all(set(m) == {"name", "layer", "role", "rank", "alpha"} for m in modules)
    assert all(m["rank"] == rank and m["alpha"] == 16.0 for m in modules)  # proportional, lora_r = rank
    assert {m["layer"] for m in modules} == set(range(24))
    by_name = {m["name"]: m["role"] for m in modules}
    assert by_name["transformer.h.23.attn.c_attn"] == "qkv"
    assert by_name["transformer.h.23.attn.c_proj"] == "o"
    assert by_name["transformer.h.23.mlp.c_proj"] == "down"
    assert data["strategy"] == "uniform" and data["params"] == {"rank": rank}
    assert data["budget"] == {"target": None, "budget_rank": None, "achieved": trainable}


def test_dialogpt_budget_rank_matches_uniform_budget(capsys, dialogpt_dir):
    data = run_json(capsys, "plan", "--model", str(dialogpt_dir), "--strategy", "linear_decay", "--budget-rank", "8")
    assert data["budget"]["target"] == 3_145_728
    assert 0 <= 3_145_728 - data["trainable_params"] < 4096 + 1024
    ranks = [m["rank"] for m in data["modules"] if m["role"] == "qkv"]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1]


# --- outputs ----------------------------------------------------------------------------------------


def test_table_output(capsys, gpt2_dir):
    code, out, err = run(
        capsys, "plan", "--model", str(gpt2_dir), "--strategy", "linear_decay", "--set", "start=8", "--set", "end=2"
    )
    assert code == 0 and err == ""
    assert "trainable parameters:" in out
    lines = out.splitlines()
    assert lines[0].startswith("linear_decay (start=8, end=2, min_rank=1) on ")
    header = lines[1].split()
    assert header[0] == "layer" and header[-1] == "params" and sorted(header[1:-1]) == ["down", "o", "qkv", "up"]
    qkv, down = header.index("qkv"), header.index("down")
    rows = [row.split() for row in lines[2:6]]
    assert [(row[0], row[qkv], row[down]) for row in rows] == [("0", "8", "8"), ("1", "6", "6"), ("2", "4", "4"), ("3", "2", "2")]
    allocation = plan(str(gpt2_dir), "linear_decay", {"start": 8, "end": 2})
    assert f"trainable parameters: {allocation.trainable_params:,}" in out


def test_table_output_with_budget_line(capsys, gpt2_dir):
    code, out, _ = run(capsys, "plan", "--model", str(gpt2_dir), "--strategy", "empirical", "--budget", "9.5k")
    assert code == 0
    budget_line = [line for line in out.splitlines() if line.startswith("budget:")]
    assert len(budget_line) == 1 and "target 9,500" in budget_line[0]


def test_out_writes_a_loadable_allocation(capsys, gpt2_dir, tmp_path):
    path = tmp_path / "sub" / "allocation.json"
    code, out, _ = run(
        capsys, "plan", "--model", str(gpt2_dir), "--strategy", "attention_heavy", "--rank", "12", "--out", str(path)
    )
    assert code == 0 and f"wrote allocation to {path}" in out
    anatomy = inspect_model(load_skeleton(str(gpt2_dir)))
    loaded = Allocation.load(path, anatomy)
    expected = plan(str(gpt2_dir), "attention_heavy", rank=12)
    assert loaded.ranks == expected.ranks and loaded.alphas == expected.alphas
    assert loaded.to_dict() == expected.to_dict()
    assert {loaded.ranks[m.name] for m in anatomy.modules if m.is_attention} == {12}


def test_out_then_plan_custom_file_reproduces_it(capsys, llama_dir, tmp_path):
    path = tmp_path / "allocation.json"
    assert run(capsys, "plan", "--model", str(llama_dir), "--strategy", "linear_decay", "--out", str(path))[0] == 0
    data = run_json(capsys, "plan", "--model", str(llama_dir), "--strategy", "custom", "--set", f"file={path}")
    original = read_allocation(path).to_dict()
    assert [m["rank"] for m in data["modules"]] == [m["rank"] for m in original["modules"]]


def test_peft_config_dir(capsys, llama_dir, tmp_path):
    from peft import LoraConfig

    out_dir = tmp_path / "peft"
    code, out, _ = run(
        capsys,
        "plan",
        "--model",
        str(llama_dir),
        "--strategy",
        "linear_decay",
        "--set",
        "start=8",
        "--alpha-policy",
        "constant",
        "--peft-config",
        str(out_dir),
    )
    assert code == 0 and "wrote PEFT config" in out
    saved = json.loads((out_dir / "adapter_config.json").read_text())
    allocation = plan(str(llama_dir), "linear_decay", {"start": 8}, alpha_policy="constant")
    assert saved["rank_pattern"] == {k: v for k, v in allocation.to_peft_config().rank_pattern.items()}
    assert saved["r"] == 8 and saved["use_rslora"] is False
    config = LoraConfig.from_pretrained(out_dir)
    assert set(config.target_modules) == set(allocation.ranks)


def test_json_has_summary_and_no_table(capsys, llama_dir):
    code, out, _ = run(
        capsys, "plan", "--model", str(llama_dir), "--strategy", "mlp_heavy", "--target-modules", "q_proj,down", "--json"
    )
    assert code == 0
    data = json.loads(out)  # the whole of stdout is JSON
    assert {m["role"] for m in data["modules"]} == {"q", "down"}
    assert data["summary"]["ranks_by_role"] == {"q": 8, "down": 16}
    assert data["zero_rank_modules"] == []


def test_strategies_lists_every_registered_strategy(capsys):
    code, out, _ = run(capsys, "strategies")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == [s.name for s in all_strategies()]
    for s in all_strategies():
        for p in s.params:
            assert f"{p.name}: {p.help}" in out


# --- bad input: exit 2, one line on stderr, no traceback ------------------------------------------


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    from transformers import MixtralConfig

    path = tmp_path_factory.mktemp("mixtral")
    MixtralConfig(
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=64,
        num_local_experts=4,
        num_experts_per_tok=2,
    ).save_pretrained(path)
    return path


BAD = [
    (["--strategy", "linear_decya"], "unknown strategy 'linear_decya'"),
    (["--set", "foo=1"], "has no parameter 'foo'"),
    (["--strategy", "linear_decay", "--set", "start=abc"], "start must be int"),
    (["--strategy", "linear_decay", "--set", "start=.inf"], "start must be int"),
    (["--strategy", "attention_heavy", "--set", "mlp_ratio=-1"], "mlp_ratio must be >= 0"),
    (["--set", "rank"], "is not key=value"),
    (["--strategy", "custom", "--set", "layer_ranks=[8,8,8]"], "has 3 entries but the model has 4 layers"),
    (["--strategy", "custom", "--set", "module_ranks={'c_attn[': 4}", "--set", "default=2"], "valid regex"),
    (["--strategy", "custom", "--set", "file=/nonexistent/ranks.json"], "does not exist"),
    (["--rank", "0"], "rank must be >= 1"),
    (["--strategy", "linear_decay", "--rank", "-2"], "rank must be >= 1"),
    (["--budget", "10"], "below the smallest possible"),
    (["--budget-rank", "1000"], "above the largest possible"),
    (["--alpha-policy", "sqrt"], "unknown alpha policy"),
    (["--target-modules", "q_proj"], "target_modules entry 'q_proj'"),
    (["--min-rank", "0", "--budget-rank", "4"], "min_rank"),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_error_line(capsys, gpt2_dir, extra, message):
    code, out, err = run(capsys, "plan", "--model", str(gpt2_dir), *extra)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "which, message",
    [
        ("missing", "does not exist"),
        ("empty", "has no config.json"),
        ("moe", "mixture-of-experts"),
    ],
)
def test_bad_model_is_one_error_line(capsys, tmp_path, moe_dir, which, message):
    model = {"missing": tmp_path / "no-such-model", "empty": tmp_path, "moe": moe_dir}[which]
    code, out, err = run(capsys, "plan", "--model", str(model))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_argparse_rejects_bad_counts_with_exit_2(capsys, gpt2_dir):
    with pytest.raises(SystemExit) as info:
        main(["plan", "--model", str(gpt2_dir), "--budget", "lots"])
    assert info.value.code == 2
    assert "is not a parameter count" in capsys.readouterr().err
