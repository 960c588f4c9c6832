"""What the report's statistics say, checked against values computed independently: the MDE at the
level of its family, the chosen learning rate only, "k of n seeds", the row as the unit of per-row
tests, the capacity checks, the UNDERPOWERED flag, and figures that show what the verdicts use."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from adaptive_lora.report import write_report
from fixtures_runs import (
    CONTROL,
    CONTROL_TEST,
    FAMILY_DIFFS,
    GRID_CHOSEN,
    GRID_LABELS,
    GRID_NO_RATE,
    GRID_RATES,
    SEEDS,
    add_run,
    family_sweep,
    grid_sweep,
    grid_test_loss,
    standard_sweep,
)
from power_by_hand import holm_by_hand, power_by_quadrature

M = "\u2212"
D_3_SEEDS_AT_001 = 7.3198923035816  # MDE / sd for 3 pairs at 0.05/5, 80% power: tests/test_stats.py checks it by quadrature


def _report(sweep: Path, figures: bool = True) -> dict:
    """write_report; without figures (each costs seconds) where a test reads only the tables and text."""
    with pytest.MonkeyPatch.context() as patch:
        if not figures:
            patch.setattr("adaptive_lora.report.render_all", lambda *args: ([], []))
        else:  # rank heatmaps are checked on the standard sweep
            patch.setattr("adaptive_lora.report.figures.heatmap_figures", lambda *args: [])
        return write_report(sweep)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    sweep = family_sweep(tmp_path_factory.mktemp("family"), failed_seed=2)
    _report(sweep, figures=False)
    return sweep, (sweep / "report.md").read_text(encoding="utf-8"), pd.read_csv(sweep / "stats.csv")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    sweep, expected = grid_sweep(tmp_path_factory.mktemp("grid"))
    info = _report(sweep)
    return sweep, info, expected


def _section(md: str, heading: str) -> str:
    start = md.index(heading)
    end = md.find("\n## ", start + len(heading))
    return md[start : end if end > 0 else None]


# --- the MDE at the family's level --------------------------------------------------------------


def test_a_family_of_five_prints_the_mde_at_its_level(family):
    _, md, stats = family
    rows = stats[(stats["metric"] == "test_loss") & (stats["budget_label"] == "r8")].set_index("label")
    assert set(rows.index) == set(FAMILY_DIFFS) and (rows["family_size"] == 5).all() and (rows["mde_level"] == 0.01).all()
    conclusion = _section(md, "## Conclusion")
    for label in ("linear_decay 16->4", "attention_heavy 16/8", "mlp_heavy 8/16", CONTROL):
        sd = float(np.std(FAMILY_DIFFS[label], ddof=1))
        expected = sd * D_3_SEEDS_AT_001
        assert rows.loc[label, "mde"] == pytest.approx(expected, rel=1e-6), label
        printed = f"{expected:.4f}"
        table_row = next(line for line in md.splitlines() if line.startswith(f"| {label} | r8 | test loss |"))
        assert f"| 0.01 | {printed} |" in table_row, table_row
        if label != CONTROL:
            assert f"about {printed} nats or more (80% power at its family's level 0.01)" in conclusion, label
    # The MDE at plain 0.05 would be less than half: the report must not print that one.
    sd = float(np.std(FAMILY_DIFFS["mlp_heavy 8/16"], ddof=1))
    assert f"{sd * 3.264043552819638:.4f}" not in md
    assert "5 comparisons form one family" in conclusion and "below 0.05/5 = 0.01" in conclusion
    methods = _section(md, "## Methods")
    assert "test loss at r8: m = 5, level 0.01" in methods.replace("validation loss, ", "")


def test_the_family_verdicts_by_hand(family):
    # Paired t-tests on the designed differences (empirical lost seed 2), Holm by hand across the five,
    # and the verdict rule: Holm p < 0.05 and a 95% t CI that excludes 0.
    _, _, stats = family
    rows = stats[stats["metric"] == "test_loss"].set_index("label")
    diffs = {label: d[:2] if label == "empirical" else d for label, d in FAMILY_DIFFS.items()}
    p = {label: sps.ttest_1samp(d, 0.0).pvalue for label, d in diffs.items()}
    holm = dict(zip(p, holm_by_hand(list(p.values()))))
    for label, d in diffs.items():
        half = sps.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / math.sqrt(len(d))
        excludes_zero = abs(np.mean(d)) > half
        expected = (
            ("worse" if np.mean(d) > 0 else "better") if holm[label] < 0.05 and excludes_zero else "no detectable difference"
        )
        assert rows.loc[label, "t_p_holm"] == pytest.approx(holm[label]), label
        assert rows.loc[label, "verdict"] == expected, label
    assert rows.loc[CONTROL, "verdict"] == "worse"
    # mlp_heavy is the README's case: CI above 0, Holm p above 0.05. Its effect exceeds the MDE at plain 0.05
    # (what the report used to print beside "no detectable difference") but not the MDE at the family's level.
    mlp = rows.loc["mlp_heavy 8/16"]
    assert mlp["verdict"] == "no detectable difference" and mlp["ci_low"] > 0 and mlp["t_p_holm"] > 0.05
    assert np.std(diffs["mlp_heavy 8/16"], ddof=1) * 3.264043552819638 < mlp["mean_diff"] < mlp["mde"]


def test_one_failed_seed_shows_two_of_three(family):
    _, md, stats = family
    results = _section(md, "## Results")
    row = next(line for line in results.splitlines() if line.startswith("| empirical | r8 |"))
    assert "| 2 of 3 | 1 |" in row
    conclusion = _section(md, "## Conclusion")
    sentence = next(line for line in conclusion.splitlines() if line.startswith("empirical at r8:") and "test loss" in line)
    assert "2 of 3 seeds" in sentence
    empirical = stats[(stats["label"] == "empirical") & (stats["metric"] == "test_loss")].iloc[0]
    assert (empirical["n_pairs"], empirical["n_planned"]) == (2, 3)
    assert "not paired: seed 2 (empirical diverged)" in empirical["note"]


def test_underpowered_flag_when_the_control_does_not_separate(tmp_path):
    sweep = family_sweep(tmp_path, control_diffs=(0.05, -0.03, 0.06))
    md = (Path(_report(sweep, figures=False)["report_md"])).read_text(encoding="utf-8")
    flag = md.index("> **UNDERPOWERED.")
    assert flag < md.index("## Conclusion")
    assert "did not separate from it in test loss" in md[flag:]
    separated = family_sweep(tmp_path / "ok")
    assert "UNDERPOWERED" not in Path(_report(separated, figures=False)["report_md"]).read_text(encoding="utf-8")


# --- no test split ------------------------------------------------------------------------------


def test_a_sweep_without_a_test_split_says_so_first(tmp_path, grid):
    sweep, _ = standard_sweep(tmp_path)
    md = Path(_report(sweep, figures=False)["report_md"]).read_text(encoding="utf-8")
    note = next(line for line in md.splitlines() if "No test split" in line)
    assert md.index(note) < md.index("## Conclusion")
    assert "the strategies are judged on validation loss" in note and "data.test_set_size" in note
    assert "No test split" not in (grid[0] / "report.md").read_text(encoding="utf-8")


# --- the chosen learning rate -------------------------------------------------------------------


def test_only_the_chosen_rate_enters_and_unchosen_groups_are_named(grid):
    sweep, _, expected = grid
    results = pd.read_csv(sweep / "results.csv")
    for row in results.itertuples():
        chosen = GRID_CHOSEN.get((row.label, row.budget_label))
        hand = (row.label, row.budget_label) != GRID_NO_RATE and math.isclose(chosen, row.learning_rate)
        assert bool(row.at_chosen_rate) == hand, (row.label, row.budget_label, row.learning_rate)
    summary = pd.read_csv(sweep / "summary.csv").set_index(["label", "budget_label"])
    assert GRID_NO_RATE not in summary.index
    for group, rate in GRID_CHOSEN.items():
        if group != GRID_NO_RATE:
            assert summary.loc[group, "learning_rate"] == pytest.approx(rate), group
    md = (sweep / "report.md").read_text(encoding="utf-8")
    reason = "its learning-rate selection has not finished: 2 of 4 selection runs ended"
    assert f"mlp_heavy 8/16 at r8 ({reason})" in _section(md, "## Results")
    assert f"mlp_heavy 8/16 at r8: no chosen learning rate ({reason}); it is in no comparison." in _section(md, "## Conclusion")


def test_the_capacity_control_is_compared_at_every_budget(grid):
    sweep, _, _ = grid
    stats = pd.read_csv(sweep / "stats.csv")
    control = stats[(stats["label"] == CONTROL) & (stats["metric"] == "test_loss")].set_index("budget_label")
    assert sorted(control.index) == ["r4", "r8"]
    for budget in ("r4", "r8"):
        uniform = [grid_test_loss("uniform", "uniform", budget, s) for s in SEEDS]
        assert control.loc[budget, "mean_diff"] == pytest.approx(np.mean(np.subtract(CONTROL_TEST, uniform)))
        assert control.loc[budget, "t_p"] == pytest.approx(sps.ttest_rel(CONTROL_TEST, uniform).pvalue)
        assert control.loc[budget, "verdict"] == "worse" and control.loc[budget, "n_pairs"] == 3


def test_does_capacity_bind(grid):
    sweep, _, _ = grid
    stats = pd.read_csv(sweep / "stats.csv")
    bind = stats[(stats["role"] == "capacity-bind") & (stats["metric"] == "test_loss")].iloc[0]
    small = [grid_test_loss("uniform", "uniform", "r4", s) for s in SEEDS]
    large = [grid_test_loss("uniform", "uniform", "r8", s) for s in SEEDS]
    assert (bind["label"], bind["budget_label"], bind["baseline_label"], bind["baseline_budget"]) == (
        "uniform",
        "r4",
        "uniform",
        "r8",
    )
    assert bind["mean_diff"] == pytest.approx(np.mean(np.subtract(small, large)))
    assert bind["t_p"] == pytest.approx(sps.ttest_rel(small, large).pvalue) and bind["verdict"] == "worse"
    conclusion = _section((sweep / "report.md").read_text(encoding="utf-8"), "## Conclusion")
    assert "Does capacity bind? uniform at r4 against uniform at r8, paired by seed, in test loss: yes" in conclusion
    gap = f"{np.mean(np.subtract(small, large)):.4f}"
    assert f"of the capacity gap of {gap} nats (uniform at r4 against uniform at r8)" in conclusion


# --- per-row tests, the row as the unit ---------------------------------------------------------


def _row_values(sweep: Path, label: str, budget: str, key: str) -> dict[int, dict[int, float]]:
    """seed -> row -> value, read straight from predictions.jsonl of the runs at the designed chosen rate."""
    results = pd.read_csv(sweep / "results.csv")
    rate = GRID_CHOSEN[(label, budget)]
    runs = results[(results["label"] == label) & (results["budget_label"] == budget) & (results["status"] == "done")]
    values = {}
    for run in runs[np.isclose(runs["learning_rate"], rate)].itertuples():
        lines = [json.loads(line) for line in (sweep / run.run_dir / "predictions.jsonl").read_text().splitlines()]
        values[run.seed] = {r["row"]: float(r[key]) for r in lines if r["source"] == "adapter" and r[key] is not None}
    return values


def test_row_stats_through_the_pipeline(grid):
    sweep, _, _ = grid
    rows = pd.read_csv(sweep / "row_stats.csv")
    for budget, metric, key in (("r4", "test_exact_match", "exact_match"), ("r4", "test_rouge_l", "rouge_l")):
        family = rows[(rows["budget_label"] == budget) & (rows["metric"] == metric)].set_index("label")
        labels = [lab for lab in GRID_LABELS.values() if lab != "uniform"]
        assert sorted(family.index) == sorted(labels)
        base = _row_values(sweep, "uniform", budget, key)
        expected_p = {}
        for label in labels:
            mine = _row_values(sweep, label, budget, key)
            seeds = sorted(set(mine) & set(base))
            test_rows = sorted(set.intersection(*(set(mine[s]) & set(base[s]) for s in seeds)))
            diffs = np.array([[mine[s][r] - base[s][r] for s in seeds] for r in test_rows])  # rows x seeds
            per_row = diffs.mean(axis=1)
            got = family.loc[label]
            assert (got["n_rows"], got["n_seeds"]) == (len(test_rows), len(seeds))
            half = sps.t.ppf(0.975, len(per_row) - 1) * per_row.std(ddof=1) / math.sqrt(len(per_row))
            assert got["mean_diff"] == pytest.approx(per_row.mean())
            assert (got["ci_low"], got["ci_high"]) == (pytest.approx(per_row.mean() - half), pytest.approx(per_row.mean() + half))
            if key == "exact_match":  # every sign pattern of the row totals: scipy's exhaustive permutation test
                totals = diffs.sum(axis=1)
                p = sps.permutation_test((totals,), np.sum, permutation_type="samples", n_resamples=np.inf).pvalue
            else:
                p = sps.ttest_1samp(per_row, 0.0).pvalue
            expected_p[label] = min(1.0, p)
            assert got["p"] == pytest.approx(expected_p[label], rel=1e-9), label
            assert (got["rows_strategy_ahead"], got["rows_baseline_ahead"]) == ((per_row > 0).sum(), (per_row < 0).sum())
            level, sd, n = 0.05 / 3, per_row.std(ddof=1), len(per_row)
            assert got["mde_level"] == pytest.approx(level)
            if key == "exact_match":  # the sign-flip test's MDE: its normal approximation, written out
                z, mde = sps.norm.ppf(1 - level / 2), got["mde"]
                spread = math.sqrt(n) * sd
                threshold = z * math.sqrt(n * (sd**2 + mde**2))
                power = sps.norm.cdf((n * mde - threshold) / spread) + sps.norm.cdf((-n * mde - threshold) / spread)
            else:
                power = power_by_quadrature(got["mde"] / sd, n, level)
            assert power == pytest.approx(0.8, abs=1e-6), (label, key)
        holm = holm_by_hand([expected_p[label] for label in labels])
        assert [family.loc[label, "p_holm"] for label in labels] == pytest.approx(holm, rel=1e-9)


def test_row_stats_without_verifiable_rows(tmp_path):
    # Plain instruction data: no row has an exact answer, so exact match has no rows; ROUGE-L still does.
    rows = [{"row": r, "exact_match": None, "rouge_l": 0.1 * r} for r in range(4)]
    for strategy, bonus in (("uniform", 0.0), ("linear_decay", 0.05)):
        for seed in (0, 1):
            scored = [{**row, "rouge_l": row["rouge_l"] + bonus * (1 + seed) * (row["row"] % 2)} for row in rows]
            add_run(
                tmp_path,
                strategy=strategy,
                label=strategy,
                budget_label="r8",
                seed=seed,
                eval_loss=3.0,
                test_loss=2.0,
                predictions=scored,
            )
    _report(tmp_path, figures=False)
    table = pd.read_csv(tmp_path / "row_stats.csv")
    assert table["metric"].tolist() == ["test_rouge_l"] and table["n_rows"].tolist() == [4]
    assert table["mean_diff"].item() == pytest.approx(np.mean([0, 0.075, 0, 0.075]))


# --- figures show what the verdicts use ---------------------------------------------------------


def _drawn(figure, kind: str) -> dict[str, object]:
    """Artists the figure code labelled "_<kind>|...", by the rest of their label."""
    return {a.get_label().split("|", 1)[1]: a for a in figure.findobj() if str(a.get_label()).startswith(f"_{kind}|")}


def test_figures_match_summary_on_a_rate_grid(grid):
    sweep, info, _ = grid
    figures = {f.name: f for f in info["figures"]}
    summary = pd.read_csv(sweep / "summary.csv")
    means = {f"{r.label}|{r.budget_label}": r for r in summary.itertuples()}
    bars = _drawn(figures["strategy_comparison"].figure.axes[0], "bar")  # the first panel: test loss
    assert figures["strategy_comparison"].figure.axes[0].get_title().startswith("test loss")
    assert set(bars) == set(means)
    for key, bar in bars.items():
        assert bar.get_height() == pytest.approx(means[key].test_loss_mean, rel=1e-12), key
    points = _drawn(figures["pareto"].figure, "point")
    assert set(points) == set(means)
    for key, point in points.items():
        assert point.get_ydata()[0] == pytest.approx(means[key].test_loss_mean, rel=1e-12), key
        assert point.get_xdata()[0] == pytest.approx(means[key].trainable_params_mean, rel=1e-12), key
    gains = _drawn(figures["improvement"].figure, "bar")
    for key, bar in gains.items():
        assert bar.get_height() == pytest.approx(means[key].test_improvement_mean, rel=1e-12), key
    # The unfiltered mean (both rates) is far off: drawing it would fail the checks above.
    results = pd.read_csv(sweep / "results.csv")
    uniform = results[(results["label"] == "uniform") & (results["budget_label"] == "r4")]
    assert set(uniform["learning_rate"]) == set(GRID_RATES)
    assert abs(uniform["test_loss"].mean() - means["uniform|r4"].test_loss_mean) > 0.1
    for name in ("pareto", "strategy_comparison", "improvement", "loss_curves"):
        assert "chosen learning rate" in figures[name].caption, name


def test_forest_plot_comes_first_and_draws_the_paired_numbers(grid):
    sweep, info, _ = grid
    assert info["figures"][0].name == "forest"
    md = (sweep / "report.md").read_text(encoding="utf-8")
    assert md.index("](figures/forest.png)") < md.index("## Methods") < md.index("](figures/pareto.png)")
    stats = pd.read_csv(sweep / "stats.csv")
    primary = stats[(stats["metric"] == "test_loss") & (stats["role"] != "baseline")]
    figure = info["figures"][0].figure
    points, lines, bands = _drawn(figure, "mean"), _drawn(figure, "ci"), _drawn(figure, "mde")
    assert len(points) == len(primary) == 8  # 5 strategy rows, the control at r4 and r8, one capacity check
    for row in primary.itertuples():
        key = f"{row.label}|{row.budget_label}|{row.baseline_label}"
        assert points[key].get_xdata()[0] == pytest.approx(row.mean_diff, rel=1e-12), key
        assert list(lines[key].get_xdata()) == pytest.approx([row.ci_low, row.ci_high], rel=1e-12), key
        assert bands[key].get_x() == pytest.approx(-row.mde) and bands[key].get_width() == pytest.approx(2 * row.mde), key
    verdicts = {t.get_text() for t in figure.findobj() if type(t).__name__ == "Annotation"}
    assert verdicts == set(primary["verdict"])
    assert "paired difference" in info["figures"][0].caption and "test loss" in info["figures"][0].caption


def test_limitations_name_the_groups_whose_chosen_rate_is_at_the_grid_edge(grid):
    sweep, _, _ = grid
    limitations = _section((sweep / "report.md").read_text(encoding="utf-8"), "## Limitations")
    for rate, edge in ((max(GRID_RATES), "highest"), (min(GRID_RATES), "lowest")):
        groups = [g for g, r in GRID_CHOSEN.items() if r == rate and g != GRID_NO_RATE]
        sentence = next(line for line in limitations.split(". ") if f"the grid's {edge} rate ({rate:g})" in line)
        assert sentence.startswith(f"{len(groups)} group")
        listed = sentence.split(": ", 1)[1].rstrip(".\n").split(", ")
        assert sorted(listed) == sorted(f"{label} at {budget}" for label, budget in groups)


def test_the_abstract_names_every_budget_the_control_separated_at_in_one_sentence(grid):
    sweep, _, _ = grid
    md = (sweep / "report.md").read_text(encoding="utf-8")
    abstract = _section(md, "## Abstract")
    assert abstract.count("Its capacity control") == 1
    r4 = np.mean(np.subtract(CONTROL_TEST, [grid_test_loss("uniform", "uniform", "r4", s) for s in SEEDS]))
    r8 = np.mean(np.subtract(CONTROL_TEST, [grid_test_loss("uniform", "uniform", "r8", s) for s in SEEDS]))
    assert f"Its capacity control ({CONTROL}) separated from the baseline at r4 (+{r4:.4f} nats in test loss, Holm p " in abstract
    assert f") and at r8 (+{r8:.4f} nats in test loss, Holm p " in abstract
