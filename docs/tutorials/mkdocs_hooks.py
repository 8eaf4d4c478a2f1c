"""mkdocs hook (``hooks`` in mkdocs.yml): the environment the tutorial notebooks execute in
when the site is built. mkdocs-jupyter's kernel inherits this process's environment; values
already set are kept.

- ``PLOTLY_RENDERER``: a kernel without a notebook front end renders plotly figures only as
  ``application/vnd.plotly.v1+json``, which the HTML pages cannot show; ``notebook`` adds an
  HTML rendering, with plotly.js embedded once per page (~4.7 MB, works offline).
- progress bars off, and tqdm's "IProgress not found" warning: transformers' bars for the
  GGUF de-quantisation would otherwise fill the pages with stderr. Libraries' deprecation
  warnings (``FutureWarning``, ``DeprecationWarning``) are not shown either, as in the tests
  (pyproject.toml's ``filterwarnings``).
"""

from __future__ import annotations

import os
from typing import Any

BUILD_ENV = {
    "PLOTLY_RENDERER": "plotly_mimetype+notebook",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "PYTHONWARNINGS": "ignore:IProgress not found,ignore::FutureWarning,ignore::DeprecationWarning",
}


def on_config(config: Any) -> Any:
    """Set the notebooks' build environment (mkdocs calls this before the build)."""
    for key, value in BUILD_ENV.items():
        os.environ.setdefault(key, value)
    return config
