import importlib.util

import plotly.graph_objects as go

from emlens.report import markdown_table, save_figure


def test_save_figure_writes_html_and_a_png_only_where_export_works(tmp_path):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[2, 3], name="line"))
    written = save_figure(fig, tmp_path / "sub" / "fig.html")
    html = (tmp_path / "sub" / "fig.html").read_text()
    assert written[0] == tmp_path / "sub" / "fig.html"
    assert "plotly" in html and '"name":"line"' in html.replace(" ", "")
    has_png = (tmp_path / "sub" / "fig.png").exists()
    assert has_png == (len(written) == 2)
    if importlib.util.find_spec("kaleido") is None:
        assert not has_png


def test_markdown_table_has_a_header_a_rule_and_one_line_per_row():
    lines = markdown_table([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    assert lines == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]
