"""What the results pages' renderers share (``render_results.py`` and its ground-truth facts,
``_facts_ground_truth.py``): the committed JSON and the number format of their sentences."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from _common import RESULTS


def load(path: str) -> Any:
    """The JSON at ``docs/results/<path>``."""
    return json.loads((RESULTS / path).read_text())


def span(values: Iterable[float], fmt: str = ".2f", unit: str = "") -> str:
    """``lo-hi`` of ``values`` in ``fmt`` (``lo to hi`` when either is negative); one value
    when they round alike."""
    vs = sorted(values)
    lo, hi = f"{vs[0]:{fmt}}", f"{vs[-1]:{fmt}}"
    if lo == hi:
        return f"{lo}{unit}"
    sep = " to " if vs[0] < 0 or fmt.startswith("+") else "-"
    return f"{lo}{sep}{hi}{unit}"
