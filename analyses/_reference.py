"""Where the EM papers' reference data is: one rule for every ground-truth script and the study.

The folder given (a script's ``--reference``), else ``$EMLENS_REFERENCE``, else
``../shared/data/em-reference`` beside the repository (where developers and CI have it). The
files are the papers' public judged answers (``responses/*.csv.gz``); they are never committed
and no text of theirs is written into the repository, only numbers derived from them. Without
them, ``emlens fetch-reference DIR`` downloads them (SHA-256 checked).

Standard library only, so that ``study.py`` can ask before it starts any analysis.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = "EMLENS_REFERENCE"
SHARED = ROOT.parent / "shared/data/em-reference"


def reference_candidate(given: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The folder the rule picks (it may not exist) and where the choice came from."""
    if given:
        return Path(given), "--reference"
    if os.environ.get(ENV):
        return Path(os.environ[ENV]), f"${ENV}"
    return SHARED, "the default ../shared/data/em-reference"


def _has_responses(folder: Path) -> bool:
    """Whether ``folder`` (or its ``responses/``) holds judged-response CSVs."""
    sub = folder / "responses"
    root = sub if sub.is_dir() else folder
    return root.is_dir() and any(p.name.endswith((".csv", ".csv.gz")) for p in root.iterdir())


def reference_missing(given: str | os.PathLike[str] | None = None) -> str | None:
    """Why the reference data cannot be read, or None when it can."""
    path, source = reference_candidate(given)
    if _has_responses(path):
        return None
    return (
        f"no EM reference data at {path} ({source}; it needs responses/*.csv.gz): give "
        f"--reference DIR or set {ENV}=DIR, or download the public files with "
        f"`emlens fetch-reference DIR` (e.g. DIR = {SHARED})"
    )


def reference_folder(given: str | os.PathLike[str] | None = None) -> Path:
    """The reference folder by the rule above.

    Raises:
        SystemExit: it is not there (the message says how to get it).
    """
    reason = reference_missing(given)
    if reason is not None:
        raise SystemExit(reason)
    return reference_candidate(given)[0]
