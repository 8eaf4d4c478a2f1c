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


def test_command_line_re_makes_the_recorded_command():
    import argparse
    import json
    from pathlib import Path

    from emlens.report import command_line

    root = Path(__file__).resolve().parents[1]
    a = argparse.Namespace(
        model="smollm2", out=str(root / "docs/results/elasticity"), slice=64, probe=32,
        positive=[0, 64, 192], negative=[0, 4, 8, 16, 32, 64], held_out=32, lr=0.0002,
        seed=0, threads=1, layer=None, train_only=False,
    )  # fmt: skip
    recorded = json.loads((root / "docs/results/elasticity/summary.json").read_text())
    assert command_line("analyses/elasticity.py", a, root) == recorded["command"]
    a.train_only = True  # a true flag is written bare
    assert command_line("x.py", a, root).endswith("--threads 1 --train-only")
