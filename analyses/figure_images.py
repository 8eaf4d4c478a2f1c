"""Make every figure under docs/ readable offline and on GitHub: plotly.js from one local copy
(docs/assets/plotly.min.js, the installed plotly's own) instead of its CDN, and a PNG beside
each HTML figure, drawn by headless Chromium from the page itself.

    .venv/bin/python analyses/figure_images.py            # every figure under docs/results
    .venv/bin/python analyses/figure_images.py --check    # only report what is out of date

The analyses write their figures with the local copy already (``plotlyjs=common.PLOTLYJS``);
this script brings pages written before that up to date (a page made with another plotly.js
version than the installed one is refused: re-run its analysis) and draws the PNGs, which
need Chromium (Debian: ``apt-get install chromium``; ``--browser`` names another).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import _common as common
from plotly.offline import get_plotlyjs_version

from emlens.report import plotlyjs_file

CDN = re.compile(
    r'<script charset="utf-8" src="https://cdn\.plot\.ly/plotly-(?P<version>[\d.]+)\.min\.js"'
    r"[^>]*></script>"
)
WIDTH, HEIGHT = 1100, 760  # the browser window the PNG is drawn in


def figures(root: Path) -> list[Path]:
    """The HTML pages under ``root`` that draw a plotly figure."""
    return sorted(p for p in root.rglob("*.html") if "Plotly.newPlot" in p.read_text())


def localised(page: Path, js: Path) -> str:
    """``page``'s HTML with its CDN plotly.js replaced by ``js``, relative to the page."""
    text = page.read_text()
    for m in CDN.finditer(text):
        if m["version"] != get_plotlyjs_version():
            sys.exit(
                f"{page}: made with plotly.js {m['version']}, but plotly.js "
                f"{get_plotlyjs_version()} is installed: re-run the analysis that wrote it"
            )
    src = os.path.relpath(js.resolve(), page.parent.resolve())
    return CDN.sub(f'<script charset="utf-8" src="{src}"></script>', text)


def draw(page: Path, browser: str) -> None:
    """A PNG of ``page`` beside it, drawn by headless Chromium once plotly has rendered."""
    png = page.with_suffix(".png")
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-quic",
            f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
            "--virtual-time-budget=10000", f"--screenshot={png}", page.resolve().as_uri(),
        ]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if run.returncode or not png.is_file():
        sys.exit(f"{browser} drew no PNG of {page}: {run.stderr[-500:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, default=common.RESULTS)
    p.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    p.add_argument("--check", action="store_true", help="report, change nothing")
    a = p.parse_args()
    stale = []
    for page in figures(a.root):
        text, png = localised(page, common.PLOTLYJS), page.with_suffix(".png")
        if text != page.read_text() or not png.is_file():
            stale.append(page)
        if a.check:
            continue
        page.write_text(text)
        plotlyjs_file(common.PLOTLYJS)
        draw(page, a.browser)
        print(f"{page.relative_to(common.ROOT)}: {png.name}")
    if a.check and stale:
        sys.exit("out of date: " + ", ".join(str(s.relative_to(common.ROOT)) for s in stale))


if __name__ == "__main__":
    main()
