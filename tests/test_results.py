"""The committed studies (results/<suite>/): their runs regenerate the committed tables, offline, and the
repository stays lean (no adapter weights, locks or caches; under 50 MB), and the README's Findings quote only
numbers that a committed report holds."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from adaptive_lora.report import compute_tables

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
STUDIES = sorted(p for p in RESULTS.glob("*") if (p / "summary.csv").is_file()) if RESULTS.is_dir() else []
TABLES = ("summary.csv", "stats.csv")


def _committed(path: Path) -> list[str]:
    done = subprocess.run(["git", "-C", str(ROOT), "ls-files", str(path)], capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else []


def test_there_is_a_committed_study():
    assert STUDIES, "results/ holds no study with a report"


@pytest.mark.parametrize("study", STUDIES[:1], ids=lambda p: p.name)
def test_the_committed_runs_regenerate_the_committed_tables(study, tmp_path):
    """The tables `adaptive-lora report` computes (figures and prose aside), from the committed files only."""
    copy = tmp_path / study.name
    for source in [study / "suite.yaml", study / ".adaptive-lora-sweep", *(ROOT / f for f in _committed(study / "runs"))]:
        target = copy / source.relative_to(study)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    regenerated = compute_tables(copy).csvs(copy)
    for table in TABLES:
        committed, ours = pd.read_csv(study / table), pd.read_csv(io.StringIO(regenerated[table]))
        pd.testing.assert_frame_equal(ours, committed, check_exact=False, rtol=1e-12, atol=1e-12, obj=table)


def test_results_are_lean():
    files = [ROOT / f for f in _committed(RESULTS)]
    assert not [f for f in files if f.suffix in (".safetensors", ".bin", ".pt")], "weights under results/"
    caches = [f for f in files if f.suffix == ".lock" or {".claims", ".base-eval"} & set(f.parts)]
    assert not caches, f"locks or per-sweep caches under results/, e.g. {caches[:1]}"
    assert sum(f.stat().st_size for f in files if f.is_file()) < 50 * 2**20


def test_every_number_the_readme_findings_quote_is_in_a_committed_report():
    """The README's Findings quote the committed studies: each decimal number there (an effect, a CI bound,
    an MDE, a loss) appears in a committed report, README or table under results/ (run directories aside)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("## Findings")
    findings = readme[start : readme.index("\n## ", start + 1)]
    numbers = sorted(set(re.findall(r"(?<![\d.])\d+\.\d+(?![\d.])", findings)))
    assert numbers, "the Findings quote no numbers"
    reports = [ROOT / f for f in _committed(RESULTS) if "/runs/" not in f and Path(f).suffix in (".md", ".csv", ".json")]
    # whole numbers only: as substrings, the tables' full-precision floats would hold almost any figure
    quoted = {n for p in reports for n in re.findall(r"(?<![\d.])\d+\.\d+(?![\d.])", p.read_text(encoding="utf-8"))}
    missing = [n for n in numbers if n not in quoted]
    assert not missing, f"README Findings quote numbers no committed report has: {missing}"
