"""The results pages agree with the JSON the analysis scripts wrote (issue 10, section 3).

Re-renders ``docs/results/README.md`` and the per-finding READMEs from the committed JSON with
``analyses/render_results.py`` and compares them with the committed pages; no model is loaded.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def render():
    """The renderer module, imported from ``analyses/``."""
    sys.path.insert(0, str(ROOT / "analyses"))
    spec = importlib.util.spec_from_file_location(
        "render_results", ROOT / "analyses/render_results.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_results_page_is_rendered_from_its_json(render):
    page = render.RESULTS / "README.md"
    assert page.read_text() == render.results_page(), (
        "docs/results/README.md differs from its rendering: run "
        "`.venv/bin/python analyses/render_results.py` (and edit the template, not the page)"
    )


def test_benchmarks_page_has_the_study_times_of_its_json(render):
    assert render.BENCHMARKS.read_text() == render.benchmarks_page(), (
        "docs/benchmarks.md's study block differs from docs/results/study_times.json: run "
        "`.venv/bin/python analyses/render_results.py`"
    )


def test_study_block_sums_the_minutes_and_ranks_the_analyses(render):
    data = {
        "date": "2026-12-02",
        "commit": "abc1234",
        "cpus": 2,
        "lanes": 2,
        "wall_minutes": 31.0,
        "minutes": {"small": 10.0, "big": 30.0},
        "stage_seconds": {"big": {"x": 5.0, "y": 50.0}},
    }
    block = render.study_block(data)
    assert "**31.0 minutes**" in block and "others, add up to 40.0." in block
    given = render.study_block({**data, "idle_threads_given": True})
    assert "gets the idle lanes' threads), add up to 40.0." in given
    table = block.split("\n")[2:]
    assert table[2] == "| big | 30.0 | 75% | y 50, x 5 |"
    assert table[3] == "| small | 10.0 | 25% | - |"


# Pages whose summary.json predates their script (none now; a stale one is xfail strict).
STALE: set[str] = set()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            n,
            marks=pytest.mark.xfail(
                n in STALE, raises=KeyError, strict=True, reason="summary.json predates the script"
            ),
        )
        for n in ("organisms", "steering_sweep", "phase_change", "elasticity")
    ],
)
def test_finding_page_is_rendered_from_its_summary(render, name):
    page = render.RESULTS / name / "README.md"
    assert page.read_text() == render.finding_page(name), (
        f"{page} differs from readme(summary.json)"
    )


def test_tables_beside_the_json_agree_with_it(render):
    assert render.beside_problems() == []


def test_template_fields_are_all_filled(render):
    """Every ``${name}`` of the template has a fact, and every fact is used."""
    import re

    fields = set(re.findall(r"\$\{(\w+)\}", render.TEMPLATE.read_text()))
    facts = set().union(*(f() for f in render.FACTS))
    assert fields == facts


def test_a_changed_number_fails_the_check(render, monkeypatch):
    """A number in the JSON that moves makes the rendered page differ (the check can fail)."""
    real = render.load

    def moved(path):
        data = real(path)
        if path == "circuits.json":
            data["jaccard"] += 0.1
        return data

    monkeypatch.setattr(render, "load", moved)
    assert (render.RESULTS / "README.md").read_text() != render.results_page()


def test_evaluation_page_has_the_probe_judges_figures_from_its_json():
    """docs/evaluation.md's measured block is ground_truth_probe.json rendered."""
    sys.path.insert(0, str(ROOT / "analyses"))
    spec = importlib.util.spec_from_file_location(
        "ground_truth_docs", ROOT / "analyses/ground_truth_docs.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.PAGE.read_text() == module.rendered(), (
        "docs/evaluation.md differs from its rendering: run "
        "`.venv/bin/python analyses/ground_truth_docs.py`"
    )


def judge_page_module():
    sys.path.insert(0, str(ROOT / "analyses"))
    spec = importlib.util.spec_from_file_location("_judge_page", ROOT / "analyses/_judge_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_judge_page_is_rendered_from_its_json():
    """docs/results/ground_truth_judge.md is ground_truth_judge.json rendered, and a number
    that moves in the JSON moves the page."""
    import json

    page = judge_page_module().page
    data = json.loads((ROOT / "docs/results/ground_truth_judge.json").read_text())
    assert (ROOT / "docs/results/ground_truth_judge.md").read_text() == page(data), (
        "docs/results/ground_truth_judge.md differs from its JSON: run "
        "`.venv/bin/python analyses/ground_truth_judge.py` (its stages are reused)"
    )
    data["base_model"]["judge"]["rows"][0]["pcc"]["rate"] += 1.0
    assert (ROOT / "docs/results/ground_truth_judge.md").read_text() != page(data)


def test_judge_targets_are_judged_by_their_rule():
    m = judge_page_module()
    assert m.met(0.95, ">=", 0.95) and not m.met(0.949, ">=", 0.95)
    assert m.met(1.25, "in", (0.8, 1.25)) and not m.met(0.79, "in", (0.8, 1.25))
    assert m.met(0.02, "<=", 0.02) and not m.met(0.021, "<=", 0.02)


def test_every_figure_under_docs_loads_plotlyjs_locally_and_has_a_png_beside_it():
    """Offline and on GitHub (no CDN; `analyses/figure_images.py` draws the PNGs)."""
    import re

    root = Path(__file__).resolve().parents[1] / "docs"
    pages = [p for p in root.rglob("*.html") if "Plotly.newPlot" in p.read_text()]
    assert pages
    for page in pages:
        for src in re.findall(r'<script[^>]*src="([^"]+)"', page.read_text()):
            assert "://" not in src, f"{page} loads {src}: run analyses/figure_images.py"
            assert (page.parent / src).is_file(), f"{page}: {src} is not there"
        png = page.with_suffix(".png")
        assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG", f"no PNG beside {page}"
