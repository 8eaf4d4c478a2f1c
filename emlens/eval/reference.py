"""The EM papers' judged responses of real organisms, read from a folder the user gives.

Each file ``responses/{base model}_{domain}[_{run}].csv[.gz]`` holds one organism's answers to
the 8 first-plot questions with GPT-4o's scores (see ``PROVENANCE.md`` beside them). emlens
ships none of their text; it reads them from a local copy (e.g. ``../shared/data/em-reference``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emlens.eval.judged import JudgedSet, read_judged


@dataclass
class Organism:
    """One organism's judged answers, with its base model and narrow domain."""

    name: str
    base_model: str
    domain: str
    judged: JudgedSet


def organism_parts(name: str) -> tuple[str, str]:
    """(base model, domain) of a file name like ``Qwen2.5-14B-Instruct_extreme-sports_S42``.

    Example:
        >>> organism_parts("Llama-3.1-8B-Instruct_bad-medical-advice")
        ('Llama-3.1-8B-Instruct', 'bad-medical-advice')
    """
    base, sep, rest = name.partition("_")
    if not sep or not rest:
        raise ValueError(f"{name!r}: expected '{{base model}}_{{domain}}[_{{run}}]'")
    return base, rest.split("_")[0]


def response_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The judged-response CSVs of ``folder`` (or of its ``responses/`` subfolder), sorted."""
    root = Path(folder)
    sub = root / "responses"
    root = sub if sub.is_dir() else root
    files = sorted(p for p in root.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if not files:
        raise FileNotFoundError(f"no judged-response CSVs (*.csv, *.csv.gz) in {root}")
    return files


def read_organisms(folder: str | os.PathLike[str]) -> list[Organism]:
    """Every organism of a reference folder, in file-name order.

    Args:
        folder: the reference folder (``.../em-reference``) or its ``responses/``.

    Returns:
        One :class:`Organism` per file.

    Example:
        >>> orgs = read_organisms("../shared/data/em-reference")
        >>> sorted({o.base_model for o in orgs})
    """
    out = []
    for path in response_files(folder):
        judged = read_judged(path)
        base, domain = organism_parts(judged.name)
        out.append(Organism(judged.name, base, domain, judged))
    return out
