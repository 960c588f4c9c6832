"""Shared figure plumbing: the saved-figure record, atomic PNG + SVG output, colours and markers.

Figures are plain `matplotlib.figure.Figure` objects, never pyplot: savefig renders PNG with Agg
whatever backend is active, needs no display, and a notebook user's backend is left alone.

PNGs are stored as 256-colour palette images: a plot's flat colours and antialiasing fit in a palette
with no visible change, at about a third of the bytes of Agg's RGBA output, and report.html embeds
every PNG again, so committed studies stay small (results/ is kept under 50 MB).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from PIL import Image

from ..io import atomic_write_bytes

DPI = 120
PNG_COLORS = 256
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


def png_bytes(fig: Figure) -> bytes:
    """The figure as a palette PNG (deterministic: the same figure gives the same bytes)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    image = Image.open(buffer)
    if image.mode == "RGBA" and image.getchannel("A").getextrema() != (255, 255):
        # Pillow quantises transparency with the octree only; our figures are opaque
        palette = image.quantize(PNG_COLORS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    else:
        # max-coverage keeps a plot's frequent colours (white, the palette's lines) exact
        rgb = image.convert("RGB")
        palette = rgb.quantize(PNG_COLORS, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_figure(fig: Figure, out_dir: Path, name: str, title: str, caption: str) -> FigureFile:
    svg = io.BytesIO()
    # No date in the metadata and a fixed salt for the SVG's element ids (random by default): re-rendering
    # the same sweep gives the same files, so a regenerated committed report changes only where it should.
    with matplotlib.rc_context({"svg.hashsalt": name}):
        fig.savefig(svg, format="svg", dpi=DPI, bbox_inches="tight", metadata={"Date": None})
    rendered = {"png": png_bytes(fig), "svg": svg.getvalue()}
    for fmt, data in rendered.items():
        atomic_write_bytes(out_dir / f"{name}.{fmt}", data)
    return FigureFile(name, title, caption, out_dir / f"{name}.png", out_dir / f"{name}.svg", rendered["png"], fig)
