"""`adaptive-lora recommend`: the pick on validation loss with its evidence against uniform, uniform when
nothing beat it detectably, no test metric to choose on, files PEFT loads, the transfer of a shape to
another model, and an output directory that never holds the user's files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from peft import LoraConfig, get_peft_model

from adaptive_lora import plan, verify
from adaptive_lora.allocation import Allocation
from adaptive_lora.budget import budget_for_rank
from adaptive_lora.cli import main as cli_main
from adaptive_lora.cli.recommend import format_recommendation
from adaptive_lora.errors import UserError
from adaptive_lora.planning import anatomy_of
from adaptive_lora.recommend import (
    NO_WIN,
    OUTPUT_MARKER,
    check_output_dir,
    recommend,
    recommended_allocations,
    transfer_allocation,
    transfer_shape,
    write_recommendation,
)
from adaptive_lora.report.collect import read_sweep, runs_frame
from adaptive_lora.report.compare import paired_stats
from adaptive_lora.schema import read_allocation
from fixtures_runs import add_run, write_suite
from tiny_models import tiny_config, tiny_model

SEEDS = (0, 1, 2)
STRATEGIES = {"uniform": {}, "linear_decay": {}, "attention_heavy": {"rank": 8}}
CONTROL = "attention_heavy control"  # role control: never recommended, however good its numbers
# Per-seed differences from uniform in validation loss; test loss moves alike, exact match the other way.
CLEAR_WIN = {"linear_decay": (-0.10, -0.12, -0.11), "attention_heavy": (0.02, -0.01, 0.03), CONTROL: (-0.5, -0.45, -0.55)}
NO_DIFFERENCE = {"linear_decay": (0.01, -0.03, 0.015), "attention_heavy": (0.02, 0.03, -0.01), CONTROL: (-0.5, -0.45, -0.55)}


def config_dir(root: Path, name: str, arch: str = "llama", **overrides) -> Path:
    path = root / name
    tiny_config(arch, **overrides).save_pretrained(path)  # config.json only: planning builds it on the meta device
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "source": config_dir(root, "llama-4", num_layers=4),
        "deeper": config_dir(root, "llama-8", num_layers=8),
        "wider": config_dir(root, "llama-8-wide", num_layers=8, hidden_size=64, intermediate_size=160),
        "gpt2": config_dir(root, "gpt2-6", arch="gpt2", num_layers=6),
    }


@pytest.fixture(scope="module")
def allocations(models) -> dict[str, Allocation]:
    """What each strategy plans for the 4-layer model at the budget of uniform r8 (as a sweep's runs save it)."""
    return {s: plan(str(models["source"]), s, params or None, budget_rank=8) for s, params in STRATEGIES.items()}


def tiny_sweep(
    root: Path, model: Path, allocations: dict[str, Allocation], diffs: dict[str, tuple], target_modules: list[str] | None = None
) -> Path:
    """A finished r8 sweep on a real tiny model: uniform, two strategies and a control, three seeds,
    with validation and test losses (uniform's: 3.0 + 0.1 x seed) and test exact match; the runs
    adapted `target_modules` (all linear modules when None)."""
    sweep = root / "sweep"
    entries = [{"strategy": s, "label": s} for s in STRATEGIES] + [
        {"strategy": "attention_heavy", "label": CONTROL, "role": "control"}
    ]
    write_suite(sweep, "recommend-test", strategies=entries, budgets=["r8"], seeds=list(SEEDS))
    for entry in entries:
        strategy, label = entry["strategy"], entry["label"]
        for i, seed in enumerate(SEEDS):
            diff = diffs[label][i] if label in diffs else 0.0
            loss = round(3.0 + 0.1 * seed + diff, 10)
            result = add_run(
                sweep, strategy=strategy, label=label, budget_label="r8", seed=seed, rank=8, eval_loss=loss, model=str(model)
            )
            run_dir = sweep / "runs" / result["run_id"]
            allocations[strategy].save(run_dir)
            result["test"] = {"loss": round(loss + 0.05, 10), "exact_match": round(0.4 - diff, 10), "n_rows": 50}
            result["config"]["allocation"]["target_modules"] = target_modules
            (run_dir / "config.yaml").write_text(yaml.safe_dump(result["config"], sort_keys=False))
            (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return sweep


@pytest.fixture(scope="module")
def win_sweep(tmp_path_factory, models, allocations) -> Path:
    return tiny_sweep(tmp_path_factory.mktemp("win"), models["source"], allocations, CLEAR_WIN)


@pytest.fixture(scope="module")
def tie_sweep(tmp_path_factory, models, allocations) -> Path:
    return tiny_sweep(tmp_path_factory.mktemp("tie"), models["source"], allocations, NO_DIFFERENCE)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def layer_means(allocation: Allocation) -> list[float]:
    table = allocation.layer_role_table()
    return [sum(table[layer].values()) / len(table[layer]) for layer in sorted(table)]


def test_a_strategy_that_clearly_beats_uniform_is_recommended_with_its_evidence(win_sweep, models, allocations, tmp_path, capsys):
    out = tmp_path / "rec"
    assert cli_main(["recommend", str(win_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rec = json.loads((out / "recommendation.json").read_text())
    (choice,) = rec["budgets"]
    assert (choice["budget"], choice["best"], choice["recommended"], choice["beat_baseline"]) == (
        "r8",
        "linear_decay",
        "linear_decay",
        True,
    )
    assert [c["label"] for c in choice["candidates"]] == ["linear_decay", "attention_heavy"]  # the control is no candidate
    evidence = {e["metric"]: e for e in choice["evidence"]}
    assert list(evidence) == ["eval_loss", "test_loss", "test_exact_match"]
    # The same numbers as the report's paired statistics, which the fixture's differences determine.
    read = read_sweep(win_sweep)
    stats = paired_stats(runs_frame(read.runs))
    for metric, e in evidence.items():
        row = stats[(stats["label"] == "linear_decay") & (stats["metric"] == metric)].iloc[0]
        assert (e["mean_diff"], e["ci_low"], e["ci_high"], e["p_holm"], e["mde"]) == pytest.approx(
            (row["mean_diff"], row["ci_low"], row["ci_high"], row["t_p_holm"], row["mde"])
        )
    loss = evidence["eval_loss"]
    assert loss["mean_diff"] == pytest.approx(-0.11) and loss["ci_high"] < 0 and loss["p_holm"] < 0.05 and loss["mde"] > 0
    assert loss["n_pairs"] == 3 and loss["verdict"] == "better"
    assert (
        evidence["test_exact_match"]["mean_diff"] == pytest.approx(0.11) and evidence["test_exact_match"]["verdict"] == "better"
    )
    assert (loss["group_mean"], loss["baseline_mean"]) == pytest.approx((3.1 - 0.11, 3.1))
    assert choice["seed"] == 0 and choice["run_dir"].startswith("runs/")
    # The files: the pick's allocation, and a LoraConfig that builds exactly that adapter.
    written = Allocation.load(out / "allocation.json", anatomy_of(str(models["source"])))
    assert written.ranks == allocations["linear_decay"].ranks and written.alphas == allocations["linear_decay"].alphas
    config = LoraConfig.from_pretrained(out)
    model = get_peft_model(tiny_model("llama", num_layers=4), config)
    verify(model, written)
    assert "budget r8: linear_decay" in printed and "beat uniform detectably" in printed and NO_WIN not in printed
    assert "best strategy linear_decay, detectably better than uniform:" in printed
    assert "validation loss (lower is better)" in printed and "Holm p" in printed and "MDE" in printed


def test_no_detectable_difference_recommends_uniform_and_says_so(tie_sweep, allocations, tmp_path, capsys):
    out = tmp_path / "rec"
    assert cli_main(["recommend", str(tie_sweep), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"{NO_WIN} at r8 (the best non-uniform strategy, linear_decay: no detectable difference" in printed
    assert "best non-uniform strategy linear_decay, not detectably better than uniform:" in printed
    assert "best strategy" not in printed
    (choice,) = json.loads((out / "recommendation.json").read_text())["budgets"]
    assert (choice["best"], choice["recommended"], choice["beat_baseline"]) == ("linear_decay", "uniform", False)
    e = choice["evidence"][0]
    assert e["metric"] == "eval_loss" and e["verdict"] == "no detectable difference" and e["ci_low"] < 0 < e["ci_high"]
    assert e["mean_diff"] == pytest.approx((0.01 - 0.03 + 0.015) / 3)  # the best group's numbers are still shown
    assert json.loads((out / "allocation.json").read_text())["strategy"] == "uniform"
    assert LoraConfig.from_pretrained(out).rank_pattern == allocations["uniform"].to_peft_config().rank_pattern
    assert set(allocations["uniform"].ranks.values()) == {8}


def test_choosing_on_a_test_metric_is_refused(win_sweep, tmp_path, capsys):
    for metric in ("test_loss", "test_exact_match"):
        assert cli_main(["recommend", str(win_sweep), "--metric", metric, "--out", str(tmp_path / "rec")]) == 2
        err = one_error_line(capsys)
        assert f"--metric {metric} is a test metric" in err and "meaningless" in err
    assert not (tmp_path / "rec").exists()
    with pytest.raises(UserError, match="not a validation metric"):
        recommend(win_sweep, metric="accuracy")
    with pytest.raises(UserError, match="--budget r4 has no finished baseline"):
        recommend(win_sweep, budget="r4")


def test_another_validation_metric_chooses_alike(win_sweep):
    (choice,) = recommend(win_sweep, metric="perplexity").budgets
    assert choice.recommended == "linear_decay" and choice.evidence[0].metric == "perplexity"
    assert choice.evidence[0].mean_diff < 0 and choice.evidence[0].verdict == "better"
    assert [e.metric for e in choice.evidence[1:]] == ["test_loss", "test_exact_match"]


@pytest.mark.parametrize("target", ["deeper", "wider"])
def test_a_shape_transfers_to_another_model_at_its_budget(models, allocations, target):
    source = allocations["linear_decay"]
    assert layer_means(source) == sorted(layer_means(source), reverse=True) and layer_means(source)[0] > layer_means(source)[-1]
    moved = transfer_allocation(source, str(models[target]), "r8")
    anatomy = anatomy_of(str(models[target]))
    assert anatomy.num_layers == 8 and set(moved.ranks) == set(anatomy.names)
    budget = budget_for_rank(anatomy, 8)  # the same budget rank: uniform r8 of the target
    assert 0 <= budget - moved.trainable_params < max(m.params_per_rank for m in anatomy.modules)
    means = layer_means(moved)
    assert means == sorted(means, reverse=True) and means[0] > means[-1]  # still decaying


def test_with_a_model_the_files_are_for_that_model(win_sweep, models, allocations, tmp_path, capsys):
    out = tmp_path / "rec"
    assert cli_main(["recommend", str(win_sweep), "--model", str(models["deeper"]), "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["model"] == str(models["deeper"]) and printed["budgets"][0]["allocation"]["num_layers"] == 8
    written = Allocation.load(out / "allocation.json", anatomy_of(str(models["deeper"])))
    assert written.ranks == transfer_allocation(allocations["linear_decay"], str(models["deeper"]), "r8").ranks
    verify(get_peft_model(tiny_model("llama", num_layers=8), LoraConfig.from_pretrained(out)), written)


def test_a_fused_qkv_takes_the_rank_of_q_k_and_v_together(models):
    """GPT-2's fused qkv takes the mean rank of q, k and v, which the source all adapted; gate has no counterpart."""
    source = plan(str(models["source"]), "attention_heavy", {"rank": 8})  # attention 8, MLP 4
    gpt2 = anatomy_of(str(models["gpt2"]))
    shape = transfer_shape(source, gpt2)
    assert set(shape) == set(gpt2.names)
    roles = gpt2.by_name()
    by_role = {role: {v for name, v in shape.items() if roles[name].role == role} for role in ("qkv", "o", "up", "down")}
    assert by_role == {"qkv": {8.0}, "o": {8.0}, "up": {4.0}, "down": {4.0}}
    assert transfer_allocation(source, gpt2, "r8").meta["transfer"]["not_transferred"] == ["gate"]


# Per rank of every layer of the tiny Llama (hidden 32, 4 heads of 8, 2 key/value heads): q 32->32, v 32->16,
# k 32->16, o 32->32, up and gate 32->48, down 48->32; LoRA costs in + out parameters per rank.
PER_RANK = {"q": 32 + 32, "k": 32 + 16, "v": 32 + 16, "o": 32 + 32, "up": 32 + 48, "gate": 32 + 48, "down": 48 + 32}


@pytest.fixture(scope="module")
def q_v_sweep(tmp_path_factory, models) -> Path:
    """A sweep whose runs adapted q and v only (allocation.target_modules=[q, v])."""
    planned = {
        s: plan(str(models["source"]), s, p or None, budget_rank=8, target_modules=["q", "v"]) for s, p in STRATEGIES.items()
    }
    assert {m.role for a in planned.values() for m in a.modules} == {"q", "v"}
    return tiny_sweep(tmp_path_factory.mktemp("q-v"), models["source"], planned, CLEAR_WIN, ["q", "v"])


def test_a_q_v_only_recommendation_transferred_stays_on_q_v_at_the_targets_uniform_cost(q_v_sweep, models, tmp_path, capsys):
    out = tmp_path / "rec"
    assert cli_main(["recommend", str(q_v_sweep), "--model", str(models["deeper"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    written = json.loads((out / "allocation.json").read_text())
    written["modules"] = [m.__dict__ for m in read_allocation(out).modules]
    assert {m["role"] for m in written["modules"]} == {"q", "v"} and len(written["modules"]) == 2 * 8  # every layer
    assert {m["name"].rsplit(".", 1)[-1] for m in written["modules"]} == {"q_proj", "v_proj"}
    budget = 8 * 8 * (PER_RANK["q"] + PER_RANK["v"])  # uniform r8 on q and v of the 8-layer target
    assert written["budget"]["target"] == budget
    assert 0 <= budget - written["trainable_params"] < PER_RANK["q"]  # within one rank step of it
    assert len({m["rank"] for m in written["modules"]}) > 1  # linear_decay's shape, not uniform
    assert f"{written['trainable_params']:,} trainable parameters for {models['deeper']} on q, v," in printed
    assert "not transferred" not in printed
    config = LoraConfig.from_pretrained(out)  # PEFT adapts exactly these modules
    verify(
        get_peft_model(tiny_model("llama", num_layers=8), config),
        Allocation.load(out / "allocation.json", anatomy_of(str(models["deeper"]))),
    )


def test_a_role_the_target_lacks_is_reported_and_none_at_all_is_one_line(q_v_sweep, models, tmp_path, capsys):
    """GPT-2 fuses q, k and v: adapting its qkv would add k, so q and v do not transfer."""
    assert cli_main(["recommend", str(q_v_sweep), "--model", str(models["gpt2"]), "--out", str(tmp_path / "rec")]) == 2
    err = one_error_line(capsys)
    assert "roles q, v" in err and "gpt2" in err and not (tmp_path / "rec" / "allocation.json").exists()

    source = plan(str(models["source"]), "linear_decay", budget_rank=8, target_modules=["q", "v", "up", "down"])
    moved = transfer_allocation(source, str(models["gpt2"]), "r8")
    gpt2 = anatomy_of(str(models["gpt2"]), ["up", "down"])
    assert {m.role for m in moved.modules} == {"up", "down"} and moved.meta["transfer"]["not_transferred"] == ["q", "v"]
    assert moved.budget["target"] == budget_for_rank(gpt2, 8)  # the cost of r8 on the modules that did transfer
    rec = recommend(q_v_sweep)
    rec.model = str(models["gpt2"])
    write_recommendation(rec, {"r8": moved}, tmp_path / "rec2")
    printed = format_recommendation(rec)
    assert "on up, down," in printed and "not transferred: role(s) q, v of the recommended run" in printed


def test_the_output_directory_never_holds_the_users_files(win_sweep, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert cli_main(["recommend", str(win_sweep), "--out", str(mine)]) == 2
    err = one_error_line(capsys)
    assert str(mine) in err and "not empty" in err and "notes.txt" in err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output_dir(file)
    # Empty is fine; so is an earlier recommendation, whose files are replaced (a file added to it is kept).
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty) == empty
    default = win_sweep / "recommended"
    assert cli_main(["recommend", str(win_sweep)]) == 0 and (default / OUTPUT_MARKER).is_file()
    (default / "notes.txt").write_text("mine")
    rec = recommend(win_sweep, metric="perplexity")
    write_recommendation(rec, recommended_allocations(rec), default)
    assert json.loads((default / "recommendation.json").read_text())["metric"] == "perplexity"
    assert (default / "notes.txt").read_text() == "mine" and (default / "adapter_config.json").is_file()


def test_a_file_or_a_sweep_whose_runs_all_failed_gets_its_own_message(tmp_path, capsys):
    file = tmp_path / "results.csv"
    file.write_text("run_id,status\n")
    assert cli_main(["recommend", str(file)]) == 2
    assert f"{file} is a file, not a sweep directory" in one_error_line(capsys)
    assert cli_main(["report", str(file)]) == 2
    assert f"{file} is a file, not a sweep directory" in one_error_line(capsys)
    assert file.read_text() == "run_id,status\n"

    sweep = tmp_path / "failed"
    write_suite(sweep, "all-failed", strategies=[{"strategy": "uniform", "label": "uniform"}], budgets=["r8"], seeds=[0, 1, 2])
    for seed in (0, 1):
        add_run(sweep, strategy="uniform", label="uniform", budget_label="r8", seed=seed, eval_loss=None, status="diverged",
                error="non-finite loss at step 3", diverged_step=3)  # fmt: skip
    add_run(
        sweep,
        strategy="uniform",
        label="uniform",
        budget_label="r8",
        seed=2,
        eval_loss=None,
        status="oom",
        error="CUDA out of memory",
    )
    assert cli_main(["recommend", str(sweep)]) == 2
    err = one_error_line(capsys)
    assert f"none of the 3 runs of sweep {sweep} finished (2 diverged, 1 oom;" in err
    assert "non-finite loss at step 3" in err and "--retry-failed" in err and "run the sweep first" not in err
    assert not (sweep / "recommended").exists()
