"""The documentation site builds with --strict and its API reference is not empty."""

import ast
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_DOCUMENTED = {"cli", "demo"}  # the command line and `make demo`, not a library API
# "core/models" for emlens/core/models.py: public modules, private ones start with "_"
MODULES = sorted(
    p.relative_to(ROOT / "emlens").with_suffix("").as_posix()
    for p in (ROOT / "emlens").rglob("*.py")
    if not p.stem.startswith("_") and p.stem not in NOT_DOCUMENTED
)


def public_names(module: str) -> list[str]:
    """Top-level public functions and classes defined in ``emlens/<module>.py``."""
    tree = ast.parse((ROOT / "emlens" / f"{module}.py").read_text())
    return [
        n.name
        for n in tree.body
        if isinstance(n, ast.FunctionDef | ast.ClassDef) and not n.name.startswith("_")
    ]


MKDOCS = [sys.executable, "-m", "mkdocs", "build", "--strict"]


def page_text(path: Path) -> str:
    """The visible text of a built page: tags dropped, entities decoded, spaces collapsed."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", path.read_text()))
    return " ".join(text.split())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    # the tutorial pages without executing the notebooks (minutes): test_notebook_outputs_render
    # runs the same plugin options with execution on a one-cell notebook
    env = dict(os.environ, HF_HUB_OFFLINE="1", EMLENS_DOCS_EXECUTE="false")
    run = subprocess.run(
        [*MKDOCS, "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out, run.stdout + run.stderr


def test_every_module_has_an_api_page():
    assert MODULES, "found no emlens modules"
    for module in MODULES:
        page = ROOT / "docs" / "api" / f"{module}.md"
        dotted = module.replace("/", ".")
        assert page.exists(), f"emlens.{dotted} has no API page docs/api/{module}.md"
        assert f"::: emlens.{dotted}" in page.read_text(), f"{page} does not render the module"


def test_api_reference_renders_the_docstrings(site):
    out, _ = site
    tree = ast.parse((ROOT / "emlens" / "core" / "directions.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "em_direction")
    first_line = ast.get_docstring(fn).splitlines()[0]
    text = page_text(out / "api" / "core" / "directions" / "index.html")
    assert "em_direction" in text
    assert first_line in text, "the em_direction docstring is missing from the API reference"


@pytest.mark.parametrize("module", MODULES)
def test_api_page_lists_the_public_names(site, module):
    out, _ = site
    page = out / "api" / module / "index.html"
    assert page.exists(), f"no built page for emlens.{module}"
    text = page_text(page)
    missing = [name for name in public_names(module) if name not in text]
    assert not missing, f"emlens.{module}: {missing} are not in the API reference"


def test_no_broken_links_outside_results(site):
    # mkdocs.yml reports missing link targets as INFO, so that docs/results/ (re-made by the
    # analyses) cannot break the build.
    # Everywhere else a missing target is an error.
    _, log = site
    broken = re.findall(r"Doc file '([^']+)' contains a link '([^']+)', but the target", log)
    broken = [(page, link) for page, link in broken if not page.startswith("results/")]
    assert not broken, f"links to missing files: {broken}"


# --- the tutorial notebooks are pages (mkdocs-jupyter), not links to raw .ipynb files ---

TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.ipynb"))


def _code(text: str) -> str:
    """HTML or source reduced to its characters: tags dropped, entities decoded, no spaces."""
    return re.sub(r"\s+", "", html.unescape(re.sub(r"<[^>]+>", "", text)))


def test_tutorials_are_pages_in_the_nav(site):
    out, _ = site
    assert len(TUTORIALS) >= 2, "found no tutorial notebooks"
    home = (out / "index.html").read_text()
    overview = (out / "tutorials" / "index.html").read_text()
    for nb in TUTORIALS:
        assert (out / "tutorials" / nb.stem / "index.html").exists(), f"{nb.name} is not a page"
        assert f'href="tutorials/{nb.stem}/"' in home, f"{nb.name} is not in the nav"
        assert f'href="{nb.stem}/"' in overview, f"tutorials.md does not link the {nb.stem} page"
    assert not re.search(r'href="[^"]*\.ipynb"', home + overview), "a raw .ipynb link is left"


@pytest.mark.parametrize("nb", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_page_shows_every_cell(site, nb):
    out, _ = site
    page = (out / "tutorials" / nb.stem / "index.html").read_text()
    text = _code(page)
    cells = json.loads(nb.read_text())["cells"]
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code":
            assert _code(source) in text, f"{nb.name}: code cell missing:\n{source}"
    title = next(c for c in cells if c["cell_type"] == "markdown")["source"][0]
    assert title.startswith("# ") and _code(title[2:]) in text, title


def _plugin_options() -> dict:
    """The mkdocs-jupyter options of mkdocs.yml (as `make docs` reads them)."""
    from mkdocs.config import load_config

    return dict(load_config(str(ROOT / "mkdocs.yml")).plugins["mkdocs-jupyter"].config)


def _notebook(*sources: str) -> str:
    cells = [
        {"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
        for s in sources
    ]
    kernel = {"name": "python3", "display_name": "Python 3", "language": "python"}
    meta = {"kernelspec": kernel, "language_info": {"name": "python"}}
    return json.dumps({"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5})


FIGURE = "import plotly.graph_objects as go\n\ngo.Figure(go.Scatter(x=[1, 2], y=[3, 4])).show()"


def test_notebook_outputs_render(tmp_path, monkeypatch):
    # The repo's plugin options and hook, with execution as in `make docs`, on a small notebook:
    # the page shows the cells' outputs (the real tutorials are stored without outputs), plotly
    # figures as HTML and no progress bars; and a cell that raises fails the build.
    monkeypatch.delenv("EMLENS_DOCS_EXECUTE", raising=False)
    options = _plugin_options()
    assert options["execute"] is True and options["allow_errors"] is False, options
    (tmp_path / "docs" / "tutorials").mkdir(parents=True)
    (tmp_path / "docs" / "index.md").write_text("# Home\n")
    nb = tmp_path / "docs" / "tutorials" / "t.ipynb"
    assert "- docs/tutorials/mkdocs_hooks.py" in (ROOT / "mkdocs.yml").read_text()
    assert "- docs/hooks/offline.py" in (ROOT / "mkdocs.yml").read_text()
    hooks = [str(ROOT / "docs" / "tutorials" / "mkdocs_hooks.py")]
    hooks.append(str(ROOT / "docs" / "hooks" / "offline.py"))
    config = {"site_name": "t", "plugins": [{"mkdocs-jupyter": options}], "hooks": hooks}
    config["theme"] = {"name": "readthedocs", "highlightjs": False}  # as mkdocs.yml
    (tmp_path / "mkdocs.yml").write_text(json.dumps(config))  # JSON is YAML

    def build(*sources: str) -> subprocess.CompletedProcess:
        nb.write_text(_notebook(*sources))
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        cmd = [*MKDOCS, "-d", str(tmp_path / "site")]
        return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=300)

    run = build("print('answer', 6 * 7)", FIGURE, "from tqdm.auto import tqdm\nsum(tqdm([1, 2]))")
    assert run.returncode == 0, run.stderr.decode()
    page = (tmp_path / "site" / "tutorials" / "t" / "index.html").read_text()
    assert _code("print('answer', 6 * 7)") in _code(page), "the code cell is not on the page"
    assert "answer 42" in page_text(tmp_path / "site" / "tutorials" / "t" / "index.html")
    assert 'class="plotly-graph-div' in page, "the plotly figure is not shown as HTML"
    assert _network_refs(tmp_path / "site" / "tutorials" / "t" / "index.html") == []
    stderr = re.findall(r'data-mime-type="application/vnd\.jupyter\.stderr"[\s>]', page)
    assert not stderr, "stderr (progress bars) is on the page"
    assert build("raise ValueError('boom')").returncode != 0, "a failing cell built anyway"


def _network_refs(page: Path) -> list[str]:
    """The scripts and stylesheets a built page would fetch from the network."""
    text = page.read_text()
    refs = re.findall(r'<script[^>]*\ssrc="([^"]*)"', text)
    refs += re.findall(r'<link[^>]*\shref="([^"]*\.(?:css|js)[^"]*)"', text)
    return [r for r in refs if re.match(r"(https?:)?//", r)]


def test_the_site_loads_nothing_from_the_network(site):
    out, _ = site
    pages = list(out.rglob("*.html"))
    assert len(pages) > 50
    assert {str(p.relative_to(out)): r for p in pages if (r := _network_refs(p))} == {}
    assert ".codehilite .k {" in (out / "assets" / "pygments.css").read_text()
    tutorial = out / "tutorials" / "01_directions" / "index.html"
    [mathjax] = re.findall(r'<script[^>]*src="([^"]*MathJax\.js[^"]*)"', tutorial.read_text())
    assert (tutorial.parent / mathjax.split("?")[0]).resolve().is_file(), mathjax


CHROMIUM = shutil.which("chromium")


def _rendered(page: Path) -> str:
    """``page``'s DOM after its scripts ran, in headless Chromium with no network."""
    cmd = [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--proxy-server=127.0.0.1:9", "--virtual-time-budget=15000", "--dump-dom",
        page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_formulas_and_figures_render_offline(site):
    """A proxy that refuses every connection: MathJax typesets the tutorial's formulas and
    plotly draws a results figure from the site's own files."""
    out, _ = site
    tutorial = _rendered(out / "tutorials" / "01_directions" / "index.html")
    assert 'class="MathJax_Display"' in tutorial, "no formula was typeset"
    figure = _rendered(out / "results" / "circuits.html")
    assert 'class="main-svg"' in figure, "plotly drew no figure"
