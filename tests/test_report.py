import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from adaptive_lora.errors import UserError
from adaptive_lora.report import write_report
from adaptive_lora.report.collect import collect_runs
from adaptive_lora.report.figures import pareto_front
from adaptive_lora.report.plotting import slugify
from adaptive_lora.report.study import STUDY_DIVERGED
from fixtures_runs import (
    BUDGETS,
    DIFFS,
    LABELS,
    SEEDS,
    UNPAIRED_SEED,
    add_run,
    seed_study_sweep,
    standard_sweep,
    uniform_loss,
    write_suite,
)

FIGURE_KINDS = ("forest", "pareto", "strategy_comparison", "loss_curves", "improvement")
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    sweep, expected = standard_sweep(tmp_path_factory.mktemp("std"))
    info = write_report(sweep)
    return sweep, expected, info


@pytest.fixture(scope="module")
def seed_study(tmp_path_factory):
    sweep = seed_study_sweep(tmp_path_factory.mktemp("seed"))
    return sweep, write_report(sweep)


def _text_without_images(path: Path) -> str:
    return DATA_URI.sub("", path.read_text(encoding="utf-8"))  # base64 may contain "nan" by chance


# --- collecting ---------------------------------------------------------------------------------


def test_collect_runs_keeps_valid_and_explains_skipped(standard):
    sweep, expected, _ = standard
    df, skipped = collect_runs(sweep)
    assert len(df) == expected["n_valid"]
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert set(reasons) == expected["skipped"]
    assert "not valid JSON" in reasons["badjson"]
    assert "no result.json" in reasons["partial"]
    assert "strategy" in reasons["missingkeys"] and "seed" in reasons["missingkeys"]
    diverged = df[df["run_id"] == expected["diverged_id"]].iloc[0]
    assert diverged["status"] == "diverged" and diverged["diverged_step"] == 7 and pd.isna(diverged["eval_loss"])


def test_collect_runs_never_crashes_on_odd_results(tmp_path):
    runs = tmp_path / "runs"
    for name, text in {
        "list": "[1, 2]",
        "status": '{"run_id": "x", "status": "weird", "strategy": "u", "label": "u", "budget_label": "own", "seed": 0}',
        "noloss": '{"run_id": "x", "status": "done", "strategy": "u", "label": "u", '
        '"budget_label": "own", "seed": 0, "eval_loss": null}',
        "binary": "\udcff",
    }.items():
        (runs / name).mkdir(parents=True)
        (runs / name / "result.json").write_text(text, errors="surrogateescape")
    df, skipped = collect_runs(tmp_path)
    assert df.empty and len(skipped) == 4
    reasons = " ".join(s["reason"] for s in skipped)
    assert "not an object" in reasons and "unknown status" in reasons and "eval_loss" in reasons


def test_a_single_run_dir_or_a_plain_folder_of_runs(tmp_path):
    one = add_run(tmp_path / "plain", strategy="uniform", label="uniform", budget_label="r8", seed=0, eval_loss=3.0)
    run_dir = tmp_path / "plain" / "runs" / one["run_id"]
    assert collect_runs(run_dir)[0]["run_id"].tolist() == [one["run_id"]]
    assert collect_runs(tmp_path / "plain" / "runs")[0]["run_id"].tolist() == [one["run_id"]]


def test_missing_sweep_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        collect_runs(tmp_path / "nope")


# --- CSV outputs ------------------------------------------------------------------------------


def test_results_csv_rows_and_statuses(standard):
    sweep, expected, info = standard
    results = pd.read_csv(sweep / "results.csv")
    assert info["n_runs"] == len(results) == expected["n_valid"]
    assert results["status"].value_counts().to_dict() == {"done": expected["n_valid"] - 2, "diverged": 1, "error": 1}
    assert results.loc[results["run_id"] == expected["error_id"], "error"].item() == "RuntimeError: boom"
    for column in (
        "budget_target",
        "budget_achieved",
        "rank_q",
        "rank_down",
        "data_hash",
        "efficiency_pct",
        "supervised_tokens_per_s",
        "peak_memory_mb",
        "diverged_step",
        "run_dir",
    ):
        assert column in results.columns
    assert results["trainable_params"].dtype == np.int64  # no "47104.0"
    assert "nan" not in (sweep / "results.csv").read_text().lower()


def test_summary_matches_pandas_groupby(standard):
    sweep, _, _ = standard
    results = pd.read_csv(sweep / "results.csv")
    summary = pd.read_csv(sweep / "summary.csv").set_index(["label", "budget_label"])
    done = results[results["status"] == "done"]
    grouped = done.groupby(["label", "budget_label"])
    for metric in ("eval_loss", "perplexity", "improvement", "trainable_params", "train_time_s"):
        mean, std, n = grouped[metric].mean(), grouped[metric].std(), grouped[metric].count()
        half = sps.t.ppf(0.975, n - 1) * std / np.sqrt(n)
        for key in mean.index:
            assert summary.loc[key, f"{metric}_mean"] == pytest.approx(mean[key])
            assert summary.loc[key, f"{metric}_std"] == pytest.approx(std[key], rel=1e-9, abs=1e-12)
            assert summary.loc[key, f"{metric}_ci_low"] == pytest.approx(mean[key] - half[key], rel=1e-9, abs=1e-12)
            assert summary.loc[key, f"{metric}_ci_high"] == pytest.approx(mean[key] + half[key], rel=1e-9, abs=1e-12)
    assert summary["n"].to_dict() == {**grouped.size().to_dict(), ("empirical", "r8"): 0}
    failed = results[results["status"] != "done"].groupby(["label", "budget_label"]).size()
    assert summary.loc[summary["n_failed"] > 0, "n_failed"].to_dict() == failed.to_dict()
    # A group with no finished run has empty cells, not "nan".
    assert summary.loc[("empirical", "r8")].drop(["strategy", "role", "learning_rate", "n", "n_failed", "n_planned"]).isna().all()
    assert "nan" not in (sweep / "summary.csv").read_text().lower()


def test_stats_pair_by_seed_against_uniform(standard):
    sweep, _, _ = standard
    stats = pd.read_csv(sweep / "stats.csv")
    for (strategy, budget), diffs in DIFFS.items():
        row = stats[(stats["strategy"] == strategy) & (stats["budget_label"] == budget)].iloc[0]
        assert row["label"] == LABELS[strategy] and row["baseline_label"] == "uniform"
        # linear_decay r8 also has a finished seed-5 run (loss 2.0) without a uniform partner:
        # an unpaired difference of means would be far off, and n_pairs would be 4.
        assert row["n_pairs"] == len(SEEDS) and row["seeds"] == "0 1 2"
        assert row["mean_diff"] == pytest.approx(np.mean(diffs))
        ours = [uniform_loss(budget, s) + d for s, d in zip(SEEDS, diffs)]
        base = [uniform_loss(budget, s) for s in SEEDS]
        assert row["t_p"] == pytest.approx(sps.ttest_rel(ours, base).pvalue)
        assert row["wilcoxon_p"] == pytest.approx(sps.wilcoxon(ours, base).pvalue)
        assert "fewer than 6 pairs" in row["note"]
    for budget in BUDGETS:
        # Holm by hand: two tests per budget (empirical has no pair): 2 x the smaller p, then max(that, the larger).
        block = stats[(stats["budget_label"] == budget) & (stats["role"] == "strategy")].set_index("strategy")
        p_small, p_large = sorted(block.loc[["linear_decay", "attention_heavy"], "t_p"])
        assert sorted(block["t_p_holm"].dropna()) == pytest.approx([min(1, 2 * p_small), min(1, max(2 * p_small, p_large))])
        assert (block["family_size"] == 2).all() and (block["mde_level"] == 0.025).all()
    assert UNPAIRED_SEED not in SEEDS
    empirical = stats[stats["label"] == "empirical"].iloc[0]  # diverged: no pair, no test
    assert empirical["n_pairs"] == 0 and pd.isna(empirical["t_p"]) and "no pairs" in empirical["note"]
    assert empirical["verdict"] == "no test (no pairs)" and "seed 0 (empirical diverged" in empirical["note"]
    assert set(stats.loc[stats["strategy"] == "uniform", "role"]) == {"capacity-bind"}  # uniform r4 vs uniform r8


# --- figures and documents --------------------------------------------------------------------


def test_all_figure_kinds_exist_as_png_and_svg(standard):
    sweep, _, _ = standard
    figures = sweep / "figures"
    names = list(FIGURE_KINDS) + [f"rank_heatmap_{slugify(label)}" for label in [*LABELS.values(), "empirical"]]
    for name in names:
        png, svg = figures / f"{name}.png", figures / f"{name}.svg"
        assert png.read_bytes().startswith(b"\x89PNG"), name
        assert "<svg" in svg.read_text(), name
    assert slugify("linear_decay 16->4") == "linear_decay-16-4"


def test_html_is_self_contained(standard):
    sweep, _, info = standard
    html = Path(info["report_html"]).read_text()
    assert html.count("data:image/png;base64,") == len(list((sweep / "figures").glob("*.png")))
    assert '<img src="figures/' not in html and 'src="figures' not in html
    assert "<style>" in html


def test_no_nan_text_in_outputs(standard):
    sweep, _, info = standard
    for path in (Path(info["report_md"]), Path(info["report_html"]), sweep / "summary.csv", sweep / "stats.csv"):
        text = _text_without_images(path).replace(STUDY_DIVERGED, "").replace("diverged to NaN in fp16", "")
        assert "nan" not in text.lower(), path.name  # the original study's published words aside


def test_report_lists_failures_and_skipped(standard):
    sweep, expected, _ = standard
    md = (sweep / "report.md").read_text()
    diverged_row = next(line for line in md.splitlines() if expected["diverged_id"] in line)
    assert "| diverged |" in diverged_row and "| 7 |" in diverged_row and "non-finite at step 7" in diverged_row
    error_row = next(line for line in md.splitlines() if expected["error_id"] in line)
    assert "| error |" in error_row and "RuntimeError: boom" in error_row
    for name in expected["skipped"]:
        assert f"runs/{name}" in md
    assert "not valid JSON" in md and "lacks required key" in md
    assert "tiny-llama-test" in md and "3f2a9c1d7e5b" in md and "one learning rate for every strategy (0.0005)" in md
    assert "different data hashes" not in md
    # A budget-matched sweep sets the original study's rows beside ours at the study's rank (uniform) or our largest budget.
    original = md[md.index("## The original study beside ours") :]
    assert "| Linear Decay | 5.11 |" in original and "| linear_decay 16->4 at r8 |" in original
    assert next(line for line in original.splitlines() if line.startswith("| Baseline Rank 16 |")).endswith(
        "| — | — | — | — | — | — |"
    )
    assert "3.1000 ± " in md  # uniform r4 eval loss, 4 decimals with its CI


# --- the seed study ---------------------------------------------------------------------------


def test_seed_study_table_and_closest_uniform_baseline(seed_study):
    sweep, info = seed_study
    md = Path(info["report_md"]).read_text()
    assert "The original study beside ours" in md and STUDY_DIVERGED in md
    assert "applied only the first layer's rank to every layer" in md
    assert "6.3M (6,291,456)" in md and "3.1M (3,145,728)" in md
    stats = pd.read_csv(sweep / "stats.csv").set_index("strategy")
    assert stats.loc["linear_decay", "baseline_label"] == "uniform r8"  # 58,880 params: nearer 47,104
    assert stats.loc["mlp_heavy", "baseline_label"] == "uniform r16"  # 77,824 params: nearer 94,208
    assert "closest trainable params" in stats.loc["mlp_heavy", "baseline_choice"]
    assert stats.loc["linear_decay", "mean_diff"] == pytest.approx(-0.025)
    assert stats.loc["mlp_heavy", "mean_diff"] == pytest.approx(-0.015)
    # Holm by hand over the two tests at budget own: 2 x the smaller p, max(that, the larger)
    p = stats.loc[["linear_decay", "mlp_heavy"], "t_p"]
    assert stats.loc[p.idxmin(), "t_p_holm"] == pytest.approx(2 * p.min())
    assert stats.loc[p.idxmax(), "t_p_holm"] == pytest.approx(max(2 * p.min(), p.max()))
    for path in (Path(info["report_md"]), Path(info["report_html"])):
        text = _text_without_images(path).replace(STUDY_DIVERGED, "").replace("diverged to NaN in fp16", "")
        assert "nan" not in text.lower(), path.name


# --- edge cases -------------------------------------------------------------------------------


def test_empty_sweep_still_writes_a_report(tmp_path):
    write_suite(tmp_path, "empty")
    (tmp_path / "runs").mkdir()
    stale = tmp_path / "figures" / "rank_heatmap_gone.png"  # from an earlier render with other labels
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    info = write_report(tmp_path, title="Nothing yet")
    assert info["n_runs"] == 0 and info["skipped"] == []
    assert not stale.exists()
    assert "# Nothing yet" in Path(info["report_md"]).read_text()
    for kind in FIGURE_KINDS:
        assert (tmp_path / "figures" / f"{kind}.png").is_file()


def test_a_failing_figure_does_not_lose_the_report(tmp_path, monkeypatch):
    from adaptive_lora.report import figures

    def broken(*args):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(figures, "pareto_figure", broken)
    add_run(tmp_path, strategy="uniform", label="uniform", budget_label="r8", seed=0, eval_loss=3.0)
    info = write_report(tmp_path)
    assert "Figure not drawn (pareto: RuntimeError: no fonts)" in Path(info["report_md"]).read_text()
    assert (tmp_path / "figures" / "loss_curves.png").is_file() and (tmp_path / "results.csv").is_file()


def test_different_data_hashes_are_flagged(tmp_path):
    for seed, data_hash in ((0, "aaaa1111"), (1, "bbbb2222")):
        add_run(
            tmp_path, strategy="uniform", label="uniform", budget_label="r8", seed=seed, eval_loss=3.0 + seed, data_hash=data_hash
        )
    md = Path(write_report(tmp_path)["report_md"]).read_text()
    assert "2 different data hashes" in md and "aaaa1111" in md and "bbbb2222" in md


def test_pareto_front():
    points = [(3.0, 2.0), (1.0, 3.0), (2.0, 3.5), (4.0, 1.0), (2.0, 2.5)]
    assert pareto_front(points) == [(1.0, 3.0), (2.0, 2.5), (3.0, 2.0), (4.0, 1.0)]


def test_a_budget_label_with_unequal_parameter_counts_is_flagged():
    from adaptive_lora.report.methods import unequal_budgets

    def frame(mlp_params):
        rows = [
            ("uniform", "r8", "strategy", 2_442_240),
            ("MLP only", "r8", "strategy", mlp_params),
            ("control", "own", "capacity-control", 23_040),
        ]
        return pd.DataFrame(rows, columns=["label", "budget_label", "role", "trainable_params"])

    (warning,) = unequal_budgets(frame(1_520_640))
    assert "Budget r8 is not one parameter count: MLP only 1,520,640, uniform 2,442,240" in warning
    assert unequal_budgets(frame(2_441_664)) == []  # within one rank step: equal budget


def test_figure_pngs_are_palette_images_that_look_like_the_rendering(tmp_path):
    import io

    from matplotlib.figure import Figure
    from PIL import Image

    from adaptive_lora.report.plotting import DPI, png_bytes, save_figure

    fig = Figure(figsize=(4, 3))
    ax = fig.add_subplot()
    ax.imshow(np.linspace(0, 1, 400).reshape(20, 20), cmap="viridis")  # a continuous colour map
    ax.plot([0, 19], [0, 19], color="tab:red", linewidth=2)
    ax.set_title("antialiased text and lines")
    rendered = io.BytesIO()
    fig.savefig(rendered, format="png", dpi=DPI, bbox_inches="tight")
    full = np.asarray(Image.open(rendered).convert("RGB"), dtype=float)

    saved = save_figure(fig, tmp_path, "demo", "Demo", "caption")
    image = Image.open(saved.png)
    assert image.mode == "P"
    assert saved.png.read_bytes() == saved.png_bytes == png_bytes(fig)  # deterministic
    svg = saved.svg.read_bytes()
    (tmp_path / "again").mkdir()
    assert save_figure(fig, tmp_path / "again", "demo", "Demo", "caption").svg.read_bytes() == svg
    assert len(saved.png_bytes) < rendered.getbuffer().nbytes
    palette = np.asarray(image.convert("RGB"), dtype=float)
    assert palette.shape == full.shape
    error = np.abs(palette - full)
    assert error.mean() < 1.0 and np.percentile(error, 99.9) < 24  # 0-255 scale: no visible change
    assert (palette[0, 0] == 255).all()  # the white background stays exactly white

    fig.patch.set_alpha(0.0)  # a transparent background stays transparent
    alpha = np.asarray(Image.open(io.BytesIO(png_bytes(fig))).convert("RGBA"))[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255
