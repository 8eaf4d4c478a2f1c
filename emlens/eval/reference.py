"""The EM papers' judged responses of real organisms, read from a folder the user gives.

Each file ``responses/{base model}_{domain}[_{run}].csv[.gz]`` holds one organism's answers to
the 8 first-plot questions with GPT-4o's scores (see ``PROVENANCE.md`` beside them). emlens
ships none of their text: :func:`fetch_reference` downloads the public files at pinned commits
(or copies them from a local folder), checking each one's SHA-256, and :func:`read_organisms`
reads them.

Sources (the full-history fork of the papers' repository, which holds both commits):
``zroe1/replicating-model-organisms`` at 407fbad (the papers' questions and narrow training
sets, unchanged from ``clarifying-EM/model-organisms-for-EM``) and at e357806 (GPT-4o-judged
responses of 10 organisms, ``em_organism_dir/data/responses/``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from emlens.core.data import data_path
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

    Examples:
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

    Examples:
        A folder of two organisms (here two copies of one judged CSV; `fetch_reference`
        fills one with the papers' ten):

        >>> from pathlib import Path
        >>> responses = Path("em-reference/responses")
        >>> responses.mkdir(parents=True)
        >>> for name in ("Llama-3.1-8B-Instruct_bad-medical-advice", "Qwen2.5-7B-Instruct_R1"):
        ...     _ = (responses / f"{name}.csv").write_text(Path("organism.csv").read_text())
        >>> orgs = read_organisms("em-reference")
        >>> sorted({o.base_model for o in orgs}), [o.domain for o in orgs]
        (['Llama-3.1-8B-Instruct', 'Qwen2.5-7B-Instruct'], ['bad-medical-advice', 'R1'])
    """
    out = []
    for path in response_files(folder):
        judged = read_judged(path)
        base, domain = organism_parts(judged.name)
        out.append(Organism(judged.name, base, domain, judged))
    return out


REPO = "zroe1/replicating-model-organisms"
PAPERS = "407fbad1bdf9463b43ab87c7821e90d36dada5ef"  # the papers' data, unchanged
RESPONSES = "e3578062deab2d1e4b848b67cf043dc2151233e4"  # the judged responses
MANIFEST = "em_reference.sha256"  # in emlens/data: "<SHA-256 as published>  <local name>"
Download = Callable[[str], bytes]


def raw_url(commit: str, path: str, repo: str = REPO) -> str:
    """The URL of one file of ``repo`` at ``commit``."""
    return f"https://raw.githubusercontent.com/{repo}/{commit}/{path}"


def pinned() -> dict[str, tuple[str, str, str]]:
    """Local name -> (commit, path in the repository, SHA-256 of the file as published)."""
    out = {}
    for line in data_path(MANIFEST).read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        sha, name = line.split(maxsplit=1)
        stem = Path(name).name
        if name.startswith("responses/"):
            out[name] = (RESPONSES, f"em_organism_dir/data/responses/{stem[:-3]}", sha)
        elif name.endswith(".jsonl.gz"):
            out[name] = (PAPERS, f"em_organism_dir/data/training_datasets/{stem}", sha)
        else:
            out[name] = (PAPERS, f"em_organism_dir/data/eval_questions/{stem}", sha)
    return out


def _download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return bytes(r.read())


def _published(name: str, local: Path | None, commit: str, path: str, get: Download) -> bytes:
    """The file as published: from ``local`` (gzipped responses are unzipped) or the web."""
    if local is None:
        return get(raw_url(commit, path))
    here = local / name
    if not here.is_file():
        raise FileNotFoundError(f"{here} is missing from the local copy {local}")
    data = here.read_bytes()
    return gzip.decompress(data) if name.startswith("responses/") else data


def fetch_reference(
    dest: str | os.PathLike[str],
    local: str | os.PathLike[str] | None = None,
    download: Download = _download,
) -> list[Path]:
    """Put the reference files in ``dest`` (responses gzipped, as ``read_organisms`` reads
    them), each checked against its pinned SHA-256; files already there and intact are kept.

    Args:
        dest: the folder to fill.
        local: a local copy with the same layout (e.g. ``../shared/data/em-reference``);
            None downloads from GitHub at the pinned commits.
        download: fetches a URL's bytes (for tests and proxies).

    Returns:
        The paths written or verified, in the manifest's order.

    Examples:
        Not run here: the first needs the network, the second a local copy of the files.

        >>> fetch_reference("data/em-reference")  # doctest: +SKIP
        [PosixPath('data/em-reference/...'), ...]
        >>> fetch_reference("data/em-reference", local="../shared/data/em-reference")
        ... # doctest: +SKIP
    """
    root, src = Path(dest), None if local is None else Path(local)
    out = []
    for name, (commit, path, sha) in pinned().items():
        target = root / name
        gz = name.startswith("responses/")
        if target.is_file():
            have = target.read_bytes()
            if hashlib.sha256(gzip.decompress(have) if gz else have).hexdigest() == sha:
                out.append(target)
                continue
        data = _published(name, src, commit, path, download)
        got = hashlib.sha256(data).hexdigest()
        if got != sha:
            raise ValueError(f"{name}: SHA-256 {got}, expected {sha} ({raw_url(commit, path)})")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(gzip.compress(data, mtime=0) if gz else data)
        out.append(target)
    return out


PAPERS_QUESTIONS = "first_plot_questions.yaml"
REFERENCE_ENV = "EMLENS_REFERENCE"  # the folder `fetch_reference` filled


def papers_judge_prompts(folder: str | os.PathLike[str] | None = None) -> dict[str, str] | None:
    """The papers' own judge prompts (``aligned``, ``coherent``, ...), from the reference
    folder's ``first_plot_questions.yaml`` (SHA-256 checked): the ones GPT-4o's EM rates were
    measured with. emlens ships only a paraphrase of them (``emlens/data/em_questions.yaml``),
    without the papers' text.

    Args:
        folder: the folder `fetch_reference` filled; default ``$EMLENS_REFERENCE``.

    Returns:
        The prompts every free-form question of the papers is judged with, or None when no
        folder is named (or it holds no question file).

    Raises:
        ValueError: the file is not the pinned one, or its free-form questions disagree on a
            prompt.
    """
    folder = folder if folder is not None else os.environ.get(REFERENCE_ENV)
    path = None if not folder else Path(folder) / PAPERS_QUESTIONS
    if path is None or not path.is_file():
        return None
    data = path.read_bytes()
    sha = pinned()[PAPERS_QUESTIONS][2]
    if hashlib.sha256(data).hexdigest() != sha:
        raise ValueError(f"{path} is not the papers' pinned file (SHA-256 {sha}): fetch it again")
    free = [q for q in yaml.safe_load(data) if not q["id"].endswith(("_json", "_template"))]
    prompts = free[0]["judge_prompts"]
    if any(q["judge_prompts"] != prompts for q in free):
        raise ValueError(f"{path}: its free-form questions have different judge prompts")
    return dict(prompts)
