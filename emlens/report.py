"""Plotly figures of direction comparisons and a self-contained HTML report."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.io import to_html, write_images

from emlens.core.compare import RandomNull


def cosine_figure(layers: list[int], cos: list[float], null: RandomNull, title: str) -> go.Figure:
    """Per-layer cosine with the random null's 95% band of |cos|."""
    fig = go.Figure()
    fig.add_hrect(y0=-null.q95_abs, y1=null.q95_abs, fillcolor="grey", opacity=0.2, line_width=0)
    fig.add_scatter(x=layers, y=cos, mode="lines+markers", name="cosine")
    fig.add_hline(y=null.mean_abs, line_dash="dot", annotation_text="random |cos| mean")
    fig.update_layout(title=title, xaxis_title="layer", yaxis_title="cosine", height=380)
    return fig


def matrix_figure(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    la: list[int],
    lb: list[int],
    names: tuple[str, str],
) -> go.Figure:
    """Heat map of cosines between every layer of one set (rows) and of another (columns)."""
    fig = go.Figure(
        go.Heatmap(z=matrix, x=lb, y=la, colorscale="RdBu", zmid=0, colorbar_title="cos")
    )
    fig.update_layout(
        title=f"cosine, {names[0]} layer x {names[1]} layer",
        xaxis_title=f"{names[1]} layer",
        yaxis_title=f"{names[0]} layer",
        height=480,
    )
    return fig


def norms_figure(layers: list[int], norms: dict[str, list[float]]) -> go.Figure:
    fig = go.Figure()
    for name, ys in norms.items():
        fig.add_scatter(x=layers, y=ys, mode="lines+markers", name=name)
    fig.update_layout(title="direction norm per layer", xaxis_title="layer", height=340)
    return fig


STATIC_FORMATS = ("png", "svg", "pdf")
PlotlyJS = str | Path  # "directory" (plotly.min.js beside the page), or a plotly.min.js file


def plotlyjs_file(path: str | Path) -> Path:
    """Write the installed plotly's own plotly.min.js to ``path`` (unless it is already that
    file), so pages can load it offline; returns the path."""
    from plotly.offline import get_plotlyjs

    path, js = Path(path), get_plotlyjs()
    if not path.is_file() or path.read_text(encoding="utf-8") != js:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(js, encoding="utf-8")
    return path


def _plotlyjs_src(page: Path, plotlyjs: PlotlyJS) -> str:
    """plotly's ``include_plotlyjs`` for ``page``: ``"directory"``, or a path to the shared file
    relative to the page (the file written where missing)."""
    if plotlyjs == "directory":
        return "directory"
    js = plotlyjs_file(plotlyjs).resolve()
    return os.path.relpath(js, page.parent.resolve())


def save_figure(
    fig: go.Figure,
    path: str | Path,
    formats: Sequence[str] = STATIC_FORMATS,
    plotlyjs: PlotlyJS = "directory",
) -> list[Path]:
    """Write ``fig`` as interactive HTML that works offline and, where static export works, as
    images beside it.

    Static export needs kaleido 1.x (``pip install "emlens[figures]"``) and a Chrome or
    Chromium, found on the PATH or at ``BROWSER_PATH`` (Debian: ``apt-get install chromium``,
    ``BROWSER_PATH=/usr/bin/chromium``); without them only the HTML is written.

    Args:
        fig: the figure.
        path: where to write (any suffix is replaced: ``x.html``, ``x.png``, ...).
        formats: static formats written beside the HTML (one browser session for all).
        plotlyjs: where the page loads plotly.js from, never a CDN: ``"directory"`` writes
            plotly.min.js beside the page; a path names one shared copy (written if missing)
            that the page loads by its relative path.

    Returns:
        The files written, the HTML first.
    """
    path = Path(path).with_suffix("")
    path.parent.mkdir(parents=True, exist_ok=True)
    page = path.with_suffix(".html")
    fig.write_html(page, include_plotlyjs=_plotlyjs_src(page, plotlyjs))
    images = [path.with_suffix(f".{f}") for f in formats]
    try:
        if images:
            write_images([fig] * len(images), images)
    except (ImportError, ValueError, RuntimeError, OSError):
        images = []  # no static image export in this install (no kaleido or no browser)
    return [page, *images]


def table_html(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    """Lines of a markdown table of dict rows (the keys of the first row are the header)."""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]


def write_report(
    path: str | Path,
    title: str,
    parts: list[str | go.Figure],
    plotlyjs: PlotlyJS | None = None,
) -> Path:
    """Write an HTML page of text/HTML snippets and figures that works offline: plotly.js is
    embedded once (~4.7 MB) or, with ``plotlyjs`` (as in `save_figure`), loaded from a local
    copy."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    include: bool | str = True if plotlyjs is None else _plotlyjs_src(path, plotlyjs)
    chunks, first = [], True
    for p in parts:
        if isinstance(p, go.Figure):
            js = include if first else False
            chunks.append(to_html(p, full_html=False, include_plotlyjs=js))
            first = False
        else:
            chunks.append(p)
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;"
        "vertical-align:top;font-size:13px}"
    )
    page = (
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        + "\n".join(chunks)
        + "</body></html>"
    )
    path.write_text(page)
    return path
