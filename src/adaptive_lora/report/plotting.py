"""Shared figure plumbing: the saved-figure record, atomic PNG + SVG output, colours and markers.

Figures are plain `matplotlib.figure.Figure` objects, never pyplot: savefig renders PNG with Agg
whatever backend is active, needs no display, and a notebook user's backend is left alone.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from ..io import atomic_write_bytes

DPI = 120
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


@dataclass
class FigureFile:
    name: str
    title: str
    caption: str
    png: Path
    svg: Path
    png_bytes: bytes
    figure: Figure | None = field(default=None, repr=False, compare=False)  # what was drawn (tests read it back)


def slugify(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", str(text)).strip("-.").lower()
    return slug or "label"


def label_colors(labels: list[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def save_figure(fig: Figure, out_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    rendered = {}
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        # No dates in the metadata: re-rendering the same sweep gives the same files.
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buffer, format=fmt, dpi=DPI, bbox_inches="tight", metadata=metadata)
        rendered[fmt] = buffer.getvalue()
        atomic_write_bytes(out_dir / f"{name}.{fmt}", rendered[fmt])
    return FigureFile(name, title, caption, out_dir / f"{name}.png", out_dir / f"{name}.svg", rendered["png"], fig)
