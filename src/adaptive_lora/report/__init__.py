"""Reports: a sweep directory -> results.csv, summary.csv, stats.csv, figures/, report.md, report.html.

    collect.py   the runs of a sweep as one table (results.csv), in report order; plan.py: what the suite planned
    compare.py   per-group summaries and paired statistics against uniform; capacity.py: does capacity bind?
    rowstats.py  paired statistics per test row, the row as the unit
    family.py    a family of comparisons: Holm, the level each must reach, the MDE there, the verdict
    stats.py     the statistics themselves (CIs, paired tests, Holm, MDE)
    figures.py   figures (forest.py: paired differences; heatmaps.py, figures_importance.py: rank and importance maps)
    blocks.py    report blocks rendered as Markdown and HTML; sections.py, findings.py, study.py: what the report says
    search.py    the search section of a final stage of `adaptive-lora search` (search.json)
The statistical method is described in docs/statistics.md.

Torch-free: a report can be written on a machine without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError
from ..io import atomic_write_text
from ..schema import RUN_MARKER, SWEEP_MARKER
from ..workdirs import is_run_dir, is_runs_folder, is_sweep_dir
from .blocks import render_html, render_markdown
from .capacity import capacity_stats
from .collect import SweepRuns, mark_chosen_rates, read_sweep, relative_path, runs_frame
from .compare import paired_stats, summarize
from .figures import render_all
from .findings import findings_blocks
from .plan import groups_without_rate, planned_seeds
from .rowstats import row_stats
from .search import search_blocks
from .sections import ReportContext, build_blocks


def _csv(df: pd.DataFrame) -> str:
    # Missing values become empty cells (never "nan"); 15 significant digits drop only float noise (3.0999999999999996).
    return df.to_csv(index=False, na_rep="", float_format="%.15g", lineterminator="\n")


@dataclass
class Tables:
    """What a report is computed from: the sweep as read, and its tables (each CSV's frame)."""

    read: SweepRuns
    df: pd.DataFrame  # results.csv, with the chosen learning rates marked
    summary: pd.DataFrame  # summary.csv
    stats: pd.DataFrame  # stats.csv: paired statistics and the capacity checks
    row_stats: pd.DataFrame  # row_stats.csv
    unchosen: list[dict]

    def csvs(self, sweep: Path) -> dict[str, str]:
        results = self.df.assign(run_dir=[relative_path(p, sweep) for p in self.df["run_dir"]])
        frames = {"results.csv": results, "summary.csv": self.summary, "stats.csv": self.stats, "row_stats.csv": self.row_stats}
        return {name: _csv(frame) for name, frame in frames.items()}


def compute_tables(sweep_dir: str | Path) -> Tables:
    """The report's tables of a sweep directory, computed from its runs (no files written, no figures)."""
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        what = "is a file, not a sweep directory" if sweep.exists() else "does not exist"
        raise UserError(f"sweep directory {sweep} {what}; give the --out directory of `adaptive-lora run`")
    if not (is_sweep_dir(sweep) or is_run_dir(sweep) or is_runs_folder(sweep)):
        raise UserError(
            f"{sweep} is not an adaptive-lora sweep or run directory (no {SWEEP_MARKER} or {RUN_MARKER}); "
            "the report writes its files there, so nothing was written: give the --out directory of `adaptive-lora run`"
        )
    read = read_sweep(sweep)
    df = mark_chosen_rates(runs_frame(read.runs), read.runs, read.suite)
    planned, unchosen = planned_seeds(read.suite), groups_without_rate(read.runs, read.suite)
    paired, capacity = paired_stats(df, planned), capacity_stats(df, planned)
    frames = [frame for frame in (paired, capacity) if len(frame)]  # the capacity checks join stats.csv
    stats_table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (frames or [paired])[0]
    return Tables(read, df, summarize(df, planned), stats_table, row_stats(df), unchosen)


def write_report(sweep_dir: str | Path, title: str | None = None) -> dict[str, Any]:
    """Write results.csv, summary.csv, stats.csv, figures/, report.md and report.html into sweep_dir."""
    sweep = Path(sweep_dir)
    tables = compute_tables(sweep)
    for name, text in tables.csvs(sweep).items():
        atomic_write_text(sweep / name, text)
    read, df, stats_table, unchosen = tables.read, tables.df, tables.stats, tables.unchosen
    summary, rows_table = tables.summary, tables.row_stats
    figure_files, figure_errors = render_all(df, sweep / "figures", stats_table)
    name = read.suite.name if read.suite else sweep.resolve().name
    context = ReportContext(
        title=title or f"adaptive-lora report: {name}",
        sweep=sweep,
        read=read,
        df=df,
        summary=summary,
        stats=stats_table,
        row_stats=rows_table,
        findings=findings_blocks(df, stats_table, read.suite, unchosen),
        figures=figure_files,
        figure_errors=figure_errors,
        unchosen=unchosen,
    )
    blocks = build_blocks(context) + search_blocks(sweep, sweep / "figures")  # the search section: final stages of `search` only
    md_path, html_path = sweep / "report.md", sweep / "report.html"
    atomic_write_text(md_path, render_markdown(blocks, sweep))
    atomic_write_text(html_path, render_html(blocks, context.title))
    return {
        "report_md": str(md_path),
        "report_html": str(html_path),
        "n_runs": len(df),
        "skipped": read.skipped,
        "others": read.others,
        "figures": figure_files,
    }
