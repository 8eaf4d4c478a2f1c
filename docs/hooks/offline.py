"""mkdocs hook (``hooks`` in mkdocs.yml): a site that needs no network to read.

The theme's highlight.js and mkdocs-jupyter's require.js and MathJax would load from CDNs; here
code is highlighted by Pygments at build time (``codehilite``), with its stylesheet written
into the site, MathJax 2.7 comes from the ``jupyter-server-mathjax`` package (the ``docs``
extra, pinned there), and plotly.js from ``assets/plotly.min.js`` (`emlens.report`).
``tests/test_docs.py`` builds the site and fails on any script or stylesheet from the network.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

# plotly's notebook renderer puts MathJax 3 from a CDN beside every figure (for LaTeX in figure
# text, which emlens's figures have none of); the page's own MathJax typesets the text.
PLOTLY_MATHJAX = re.compile(
    r'<script src="https://cdnjs\.cloudflare\.com/ajax/libs/mathjax/[^"]*"></script>'
)
PYGMENTS_CSS = "assets/pygments.css"  # mkdocs.yml's extra_css
MATHJAX = "assets/mathjax"  # mkdocs.yml's custom_mathjax_url points here


def on_post_page(output: str, page: Any, config: Any) -> str:  # noqa: ARG001
    """A built page without the CDN MathJax plotly adds to each notebook figure."""
    return PLOTLY_MATHJAX.sub("", output)


def on_post_build(config: Any) -> None:
    """Write the Pygments stylesheet and copy MathJax into the built site."""
    import jupyter_server_mathjax
    from pygments.formatters import HtmlFormatter

    site = Path(config["site_dir"])
    css = site / PYGMENTS_CSS
    css.parent.mkdir(parents=True, exist_ok=True)
    css.write_text(HtmlFormatter(style="default").get_style_defs(".codehilite"))
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    shutil.copytree(static, site / MATHJAX, dirs_exist_ok=True)
