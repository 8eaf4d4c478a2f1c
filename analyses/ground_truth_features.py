"""Ground truth, stage 1: every reference answer read through SmolLM2, cached once.

    .venv/bin/python analyses/ground_truth_features.py [--reference ../shared/data/em-reference]

Per organism, each answer's mean ``blocks.{l}.hook_resid_post`` over its answer tokens at
every layer, written to ``out/ground_truth/features/{organism}.safetensors`` (git-ignored,
keyed by model, hook, layers and texts: a rerun reads them back). The later stages
(``ground_truth_probe.py``, ``benchmarks/probe_judge.py``) fit on these files only.

``--template``: the answers read inside a judge-style prompt instead (the question and answer
in one user turn asking whether the answer is harmful; :data:`JUDGE_TEMPLATE`), one forward
pass giving the mean over the answer's tokens and the state at the final position, to
``out/ground_truth/features_judge/``.

The later stages weigh each answer's cached mean by its number of answer tokens
(:func:`token_counts`, cached beside the features) to take the papers' token-weighted
direction from the cache (:func:`judged_sums`, :func:`judged_direction`).

``--tokens``: every answer token's state at layers 9, 15, 21 and 27 (float16, for token-level
probes and other poolings), to ``out/ground_truth/tokens/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from emlens.core.models import load_model
from emlens.core.tokens import answer_tokens
from emlens.eval.probe.features import (
    answer_token_states,
    cached_features,
    cached_template_features,
)
from emlens.eval.reference import Organism, read_organisms
from emlens.eval.verdicts import Thresholds

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "em-reference"
CACHE = Path("out/ground_truth/features")
CACHE_JUDGE = Path("out/ground_truth/features_judge")
CACHE_TOKENS = Path("out/ground_truth/tokens")
TOKEN_LAYERS = [9, 15, 21, 27]
LAYERS = list(range(30))


def organism_features(
    model, organisms: list[Organism], cache: Path = CACHE, progress: bool = True
) -> list[Float[Tensor, "n n_layers d_model"]]:
    """Every organism's features (all answers, scored or not), from the cache or computed."""
    out = []
    for o in organisms:
        t = time.time()
        pairs = [(a.question, a.answer) for a in o.judged]
        out.append(
            cached_features(
                model, pairs, LAYERS, cache / f"{o.name}.safetensors", progress=progress
            )
        )
        if progress:
            print(f"{o.name}: {len(pairs)} answers, {time.time() - t:.0f} s", flush=True)
    return out


def token_counts(model, organisms: list[Organism], cache: Path = CACHE) -> list[np.ndarray]:
    """Each answer's number of answer tokens, per organism (``answer_tokens``' mask), cached
    in ``{organism}.tokens.json`` keyed by the tokenizer and the texts."""
    out = []
    for o in organisms:
        tok = model.tokenizer
        texts = [(a.question, a.answer) for a in o.judged]
        key = hashlib.sha256(json.dumps([tok.name_or_path, texts]).encode()).hexdigest()
        path = cache / f"{o.name}.tokens.json"
        saved = json.loads(path.read_text()) if path.is_file() else {}
        if saved.get("key") != key:
            counts = [sum(answer_tokens(tok, q, a)[1]) for q, a in texts]
            saved = {"key": key, "counts": counts}
            cache.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(saved))
        out.append(np.array(saved["counts"], dtype=np.float64))
    return out


PAPERS = Thresholds()  # aligned < 30 / > 70, coherent > 50


def judged_groups(o: Organism, t: Thresholds = PAPERS) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``o.judged`` of its misaligned and its aligned answers (the papers' split)."""
    mis, ali = o.judged.split(t)
    pos = {id(a): i for i, a in enumerate(o.judged)}
    return np.array([pos[id(a)] for a in mis]), np.array([pos[id(a)] for a in ali])


Sums = tuple[np.ndarray, float, np.ndarray, float]  # misaligned sum, tokens; aligned sum, tokens


def judged_sums(x: np.ndarray, w: np.ndarray, mis: np.ndarray, ali: np.ndarray) -> Sums:
    """Token-weighted sums of the answer means ``x`` ([n, ...]) over ``mis`` and ``ali``, and
    their token counts: one organism's share of a (pooled) judged direction."""

    def tw(idx: np.ndarray) -> tuple[np.ndarray, float]:
        return np.tensordot(w[idx], x[idx], axes=1), float(w[idx].sum())

    return (*tw(mis), *tw(ali))


def judged_direction(parts: list[Sums]) -> np.ndarray:
    """mean over answer tokens of the misaligned answers minus that of the aligned ones, pooled
    over ``parts`` (each organism's :func:`judged_sums`)."""
    sm, nm = sum(p[0] for p in parts), sum(p[1] for p in parts)
    sa, na = sum(p[2] for p in parts), sum(p[3] for p in parts)
    return sm / nm - sa / na


def organism_template_features(
    model, organisms: list[Organism], cache: Path = CACHE_JUDGE, progress: bool = True
) -> list[dict[str, Tensor]]:
    """Every organism's answers read inside the judge-style prompt (``mean``, ``last``)."""
    out = []
    for o in organisms:
        t = time.time()
        pairs = [(a.question, a.answer) for a in o.judged]
        out.append(cached_template_features(model, pairs, LAYERS, cache / f"{o.name}.safetensors"))
        if progress:
            print(f"{o.name}: {len(pairs)} answers, {time.time() - t:.0f} s", flush=True)
    return out


def organism_token_states(model, organisms: list[Organism], cache: Path = CACHE_TOKENS) -> None:
    """Every organism's answer-token states at :data:`TOKEN_LAYERS`, written once."""
    from safetensors.torch import save_file

    for o in organisms:
        path = cache / f"{o.name}.safetensors"
        if path.is_file():
            continue
        t = time.time()
        states, counts = answer_token_states(
            model, [(a.question, a.answer) for a in o.judged], TOKEN_LAYERS
        )
        cache.mkdir(parents=True, exist_ok=True)
        save_file({"states": states, "counts": torch.tensor(counts)}, str(path))
        print(f"{o.name}: {len(counts)} answers, {time.time() - t:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=str(REFERENCE))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--template", action="store_true", help="read inside the judge prompt")
    p.add_argument("--tokens", action="store_true", help="every answer token's state")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    # one domain at a time, every base model in each: a partial cache already spans them
    orgs = sorted(read_organisms(a.reference), key=lambda o: (o.domain, o.base_model))
    stage = organism_template_features if a.template else organism_features
    stage = organism_token_states if a.tokens else stage
    stage(load_model("smollm2"), orgs)


if __name__ == "__main__":
    main()
