"""Report blocks (headings, paragraphs, tables, figures), number formatting, and their Markdown and
HTML renderings: report.md and report.html come from one list of blocks, so both say the same thing.

Numbers are formatted here and only here: a missing or non-finite value is shown as "—". The HTML is
self-contained: inline CSS and PNG figures as base64 data URIs, so it opens from disk, an e-mail
attachment or a CI artifact alike.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .plotting import FigureFile

DASH = "—"


# --- number formatting ------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, float) and not math.isfinite(value)


def fmt_num(value: Any, digits: int = 4) -> str:
    return DASH if _missing(value) else f"{float(value):,.{digits}f}"


def fmt_int(value: Any) -> str:
    return DASH if _missing(value) else f"{int(round(float(value))):,}"


def fmt_params(value: Any) -> str:
    """Exact counts as 3,145,728; a non-integer mean (runs of different size) as 3.15M."""
    if _missing(value):
        return DASH
    value = float(value)
    if value.is_integer():
        return f"{int(value):,}"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return f"{value:.1f}"


def fmt_p(value: Any) -> str:
    if _missing(value):
        return DASH
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def fmt_mean_ci(row: pd.Series | dict, metric: str, fmt: Callable[[Any], str]) -> str:
    """ "mean ± half-width of the 95% CI", or just the mean when there is no CI (n < 2)."""
    mean, high = row.get(f"{metric}_mean"), row.get(f"{metric}_ci_high")
    if _missing(mean):
        return DASH
    if _missing(high) or high - mean == 0:  # no CI (n < 2), or identical values (e.g. parameter counts)
        return fmt(mean)
    return f"{fmt(mean)} ± {fmt(high - mean)}"


def fmt_text(value: Any) -> str:
    return DASH if _missing(value) or value == "" else str(value)


# --- blocks -----------------------------------------------------------------------------------


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    kind: str = "p"  # p | note | warning | conclusion | alarm (the underpowered flag)


@dataclass
class Pre:
    text: str  # shown verbatim (prompts, model outputs)


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # right-aligned column indices


@dataclass
class Figure:
    file: FigureFile


# --- markdown ---------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_block(block, sweep: Path) -> str:
    if isinstance(block, Heading):
        return f"{'#' * block.level} {block.text}"
    if isinstance(block, Para):
        prefix = {"p": "", "note": "_Note:_ ", "warning": "> **Warning:** ", "conclusion": "", "alarm": "> **"}[block.kind]
        if block.kind == "alarm":
            return f"{prefix}{block.text}**"
        return prefix + block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Pre):
        fence = "````" if "```" in block.text else "```"
        return f"{fence}text\n{block.text}\n{fence}"
    if isinstance(block, Table):
        align = ["---:" if i in block.numeric else "---" for i in range(len(block.columns))]
        lines = ["| " + " | ".join(map(_md_cell, block.columns)) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows]
        return "\n".join(lines)
    if isinstance(block, Figure):
        f = block.file
        png, svg = (Path(p).relative_to(sweep).as_posix() for p in (f.png, f.svg))
        return f"### {f.title}\n\n![{f.title}]({png})\n\n{f.caption} ([SVG]({svg}))"
    raise TypeError(f"unknown block {block!r}")


def render_markdown(blocks: list, sweep: Path) -> str:
    return "\n\n".join(_md_block(b, sweep) for b in blocks) + "\n"


# --- html -------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .88rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .3rem .55rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
.note { color: #555; font-size: .9rem; }
.warning { background: #fff4e5; border-left: 4px solid #f0a020; padding: .6rem .8rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9rem; }
pre { background: #f6f6f6; padding: .6rem .8rem; white-space: pre-wrap; font-size: .85rem; }
.conclusion { background: #eef6ee; border-left: 4px solid #3a8a3a; padding: .6rem .8rem; }
.alarm { background: #fdecea; border-left: 6px solid #c62828; padding: .8rem 1rem; font-weight: 600; }
"""


def _html_block(block) -> str:
    e = html.escape
    if isinstance(block, Heading):
        return f"<h{block.level}>{e(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        return f'<p class="{block.kind}">{e(block.text)}</p>'
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Pre):
        return f"<pre>{e(block.text)}</pre>"
    if isinstance(block, Table):
        head = "".join(f"<th>{e(c)}</th>" for c in block.columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td{' class=num' if i in block.numeric else ''}>{e(str(c))}</td>" for i, c in enumerate(row))
            + "</tr>"
            for row in block.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        f = block.file
        data = base64.b64encode(f.png_bytes).decode("ascii")
        return (
            f'<figure><h3>{e(f.title)}</h3><img alt="{e(f.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{e(f.caption)}</figcaption></figure>"
        )
    raise TypeError(f"unknown block {block!r}")


def render_html(blocks: list, title: str) -> str:
    body = "\n".join(_html_block(b) for b in blocks)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )
