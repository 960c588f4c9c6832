"""The README is a front door and the documentation holds together: every relative link in README.md,
CONTRIBUTING.md and docs/*.md resolves (files, and #anchors by GitHub's heading slugs), the README
stays short, and the configuration reference lists every key with its default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from adaptive_lora.config import RunConfig
from adaptive_lora.sweep.suite import builtin_suites, load_suite

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (a `# comment` in a bash block is no heading)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (github-slugger): the rendered text, lower-cased, with
    punctuation removed (letters, digits, `_`, `-` and spaces stay) and spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags render as nothing
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file; a repeated slug gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[str]:
    links = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        if reference := _REFERENCE.match(line):
            links.append(reference.group(1))
            continue
        links += _LINK.findall(_INLINE_CODE.sub("", line))
    return [link for link in links if not re.match(r"[a-z][a-z0-9+.-]*:", link, re.IGNORECASE)]  # not http:, mailto:, ...


def broken_links(path: Path) -> list[str]:
    problems = []
    for link in relative_links(path):
        target, _, anchor = link.partition("#")
        file = (path.parent / target).resolve() if target else path
        if not file.exists():
            problems.append(f"{path.name}: {link} ({file} does not exist)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{path.name}: {link} (no heading #{anchor} in {file.name})")
    return problems


def test_github_slugs_follow_githubs_rules():
    assert github_slug("Quick start") == "quick-start"
    assert github_slug("doctor, recommend, export") == "doctor-recommend-export"
    assert github_slug("Reproducing the original study, correctly") == "reproducing-the-original-study-correctly"
    assert github_slug("`result.json`") == "resultjson"
    assert github_slug("Planning: ranks without training") == "planning-ranks-without-training"
    assert github_slug("eva_init and `from_run`") == "eva_init-and-from_run"
    assert github_slug("A [linked](other.md) heading") == "a-linked-heading"
    assert github_slug("Mean ± CI") == "mean--ci"


def test_the_link_checker_finds_a_missing_file_and_a_missing_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Section two\n\n```bash\n# not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Section\n\n## Section\n\n"
        "[ok](other.md#section-two) [ok](#section-1) [ok](https://example.com/x.md) `[code](missing.md)`\n"
        "[file](missing.md) [anchor](other.md#not-a-heading) [comment](other.md#not-a-heading-1)\n"
        "```\n[in a code block](missing.md)\n```\n"
        "[ref]: also-missing.md\n"
    )
    assert broken_links(page) == [
        f"page.md: missing.md ({tmp_path / 'missing.md'} does not exist)",
        "page.md: other.md#not-a-heading (no heading #not-a-heading in other.md)",
        "page.md: other.md#not-a-heading-1 (no heading #not-a-heading-1 in other.md)",
        f"page.md: also-missing.md ({tmp_path / 'also-missing.md'} does not exist)",
    ]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    for command in ("scripts/main-job.sh", "scripts/test.sh"):
        assert command in readme
    linked = {link.partition("#")[0] for link in relative_links(ROOT / "README.md")}
    assert {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} <= linked  # every reference page is reachable


def test_the_configuration_reference_lists_every_key_with_its_default():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = text[text.index("Every key, with its default") :]
    block = block[block.index("```yaml") + len("```yaml") : block.index("```", block.index("```yaml") + 1)]
    assert yaml.safe_load(block) == RunConfig().to_dict()


def test_the_built_in_suites_table_gives_each_suites_run_counts():
    """docs/studies.md's `--list` column says what `adaptive-lora run <suite> --list` counts: every run,
    or for a staged learning-rate grid, the runs listed and the runs the sweep trains."""
    rows = {}
    for line in prose_lines((ROOT / "docs" / "studies.md").read_text(encoding="utf-8")):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"`[\w-]+`( \(default\))?", cells[0]):
            rows[cells[0].split("`")[1]] = cells[-1]
    assert sorted(rows) == builtin_suites()
    for name, counted in rows.items():
        suite = load_suite(name)
        listed, trained = len(suite.runs), suite.expected_runs()
        expected = f"{listed} runs" if listed == trained else f"{listed} listed, {trained} trained"
        assert counted == expected, f"docs/studies.md, suite {name}: says {counted!r}, `--list` gives {expected!r}"
