"""The documentation site builds with --strict and its API reference is not empty."""

import ast
import html
import os
import re
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
    env = dict(os.environ, HF_HUB_OFFLINE="1")
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
    # mkdocs.yml reports missing link targets as INFO, so that the tutorial notebooks
    # (written separately) and docs/results/ (re-made by the analyses) cannot break the build.
    # Everywhere else a missing target is an error.
    _, log = site
    broken = re.findall(r"Doc file '([^']+)' contains a link '([^']+)', but the target", log)
    broken = [
        (page, link)
        for page, link in broken
        if not page.startswith("results/") and not re.fullmatch(r"tutorials/[\w.-]+\.ipynb", link)
    ]
    assert not broken, f"links to missing files: {broken}"
