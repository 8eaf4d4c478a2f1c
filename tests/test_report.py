import importlib.util
import os
import re
from pathlib import Path
from shutil import which

import plotly.graph_objects as go
import pytest

from emlens.report import markdown_table, save_figure, write_report


def test_save_figure_writes_html_and_a_png_only_where_export_works(tmp_path):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[2, 3], name="line"))
    written = save_figure(fig, tmp_path / "sub" / "fig.html")
    html = (tmp_path / "sub" / "fig.html").read_text()
    assert written[0] == tmp_path / "sub" / "fig.html"
    assert "plotly" in html and '"name":"line"' in html.replace(" ", "")
    images = written[1:]  # png, svg, pdf beside the HTML, or none
    assert [p.suffix for p in images] in ([], [".png", ".svg", ".pdf"])
    assert all(p.exists() for p in images)
    if importlib.util.find_spec("kaleido") is None:
        assert not images


def _scripts(page: Path) -> list[str]:
    return re.findall(r'<script[^>]*src="([^"]+)"', page.read_text())


def test_figures_load_plotlyjs_offline_never_from_a_cdn(tmp_path):
    from plotly.offline import get_plotlyjs

    fig = go.Figure(go.Scatter(x=[0, 1], y=[2, 3]))
    beside = save_figure(fig, tmp_path / "a" / "fig", formats=[])[0]
    assert _scripts(beside) == ["plotly.min.js"]
    assert (tmp_path / "a" / "plotly.min.js").read_text() == get_plotlyjs()
    shared = tmp_path / "assets" / "plotly.min.js"
    deep = save_figure(fig, tmp_path / "b" / "c" / "fig", formats=[], plotlyjs=shared)[0]
    assert _scripts(deep) == ["../../assets/plotly.min.js"]
    assert shared.read_text() == get_plotlyjs()
    assert (deep.parent / _scripts(deep)[0]).resolve() == shared.resolve()
    page = write_report(tmp_path / "r.html", "t", ["<p>x</p>", fig, fig])
    assert _scripts(page) == [] and page.read_text().count("Plotly.newPlot") == 2  # embedded
    linked = write_report(tmp_path / "r2.html", "t", [fig], plotlyjs=shared)
    assert _scripts(linked) == ["assets/plotly.min.js"]
    for p in (beside, deep, page, linked):
        assert not [src for src in _scripts(p) if "://" in src]


def browser() -> str | None:
    """A Chrome or Chromium kaleido can drive (BROWSER_PATH first, as kaleido reads it)."""
    found = os.environ.get("BROWSER_PATH")
    names = ("chromium", "chromium-browser", "google-chrome", "chrome")
    return found if found and Path(found).exists() else next(filter(None, map(which, names)), None)


@pytest.mark.skipif(
    importlib.util.find_spec("kaleido") is None or browser() is None,
    reason='static figures need kaleido (pip install "emlens[figures]") and a Chrome/Chromium',
)
def test_save_figure_writes_images_people_can_paste(tmp_path):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[2, 3]))
    written = save_figure(fig, tmp_path / "fig")
    magic = {".png": b"\x89PNG", ".svg": b"<svg", ".pdf": b"%PDF"}
    assert [p.suffix for p in written] == [".html", *magic]
    for p in written[1:]:
        assert p.read_bytes().startswith(magic[p.suffix]), p
    assert save_figure(fig, tmp_path / "only", formats=["svg"])[1:] == [tmp_path / "only.svg"]


def test_markdown_table_has_a_header_a_rule_and_one_line_per_row():
    lines = markdown_table([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert lines == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]
