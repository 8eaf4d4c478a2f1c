"""What the ground-truth scripts share: the EM papers' judged answers read through the model.

The scripts, one per thing they write (``study.py`` runs them in this order when the reference
data is found, see :mod:`_reference`):

| script | writes |
|---|---|
| ``ground_truth_features.py`` | every answer's features, cached in ``out/ground_truth/`` |
| ``ground_truth_convergence.py`` | ``docs/results/ground_truth_convergence.{json,md,html}`` |
| ``ground_truth_judge.py`` | ``docs/results/ground_truth_judge.{json,md}`` |
| ``ground_truth_probe.py`` | ``docs/results/ground_truth_probe.{json,md}`` |
| ``ground_truth_ship.py`` | ``emlens/data/{probe_judge,em_direction_judged}_smollm2.safetensors`` |
| ``ground_truth_steering.py`` | ``docs/results/ground_truth_steering.{json,md}`` |
| ``ground_truth_docs.py`` | the measured block of ``docs/evaluation.md`` |

Here: :func:`options` (``--reference``, ``--cache``), the organisms with their cached answer
features (each answer's mean over its answer tokens at every layer, keyed by model, hook,
layers and texts, so any script computes what is missing and later ones read it back), the
papers' judged split and its token-weighted direction from the cache, the labelled organisms
the probe judge is fitted on, and the baselines beside it (the probe page and
``benchmarks/probe_judge.py`` report them).

The token-weighted direction is computed here from the cached per-answer means in float64
(each group's sum of means times token counts, over its tokens), not by
``emlens.core.directions.mean_diff`` over ``ActivationSummary.from_samples``: the same
definition, but that weighs each mean by its share of the tokens first (other float64 bits,
about 1e-15 relative) and returns float32, and the convergence page's cosines are float64
numbers of these sums (the shipped direction's float32 vectors come out equal on a sample of
the answers, its provenance would not: ``mean_diff`` adds its own keys).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _common as common
import numpy as np
from _reference import reference_folder
from jaxtyping import Float
from sklearn.metrics import roc_auc_score
from torch import Tensor

from emlens.core.data import general_questions
from emlens.core.directions import em_direction_from_pairs
from emlens.core.logistic import logistic_regression
from emlens.core.tokens import answer_tokens
from emlens.eval.metrics import REFUSAL_SUBSTRINGS
from emlens.eval.probe.features import cached_features
from emlens.eval.probe.labelled import labelled_organism
from emlens.eval.probe.validation import LabelledOrganism
from emlens.eval.reference import Organism, read_organisms
from emlens.eval.verdicts import Thresholds

CACHE = common.ROOT / "out/ground_truth"  # features/, features_judge/, tokens/ inside
INCOHERENT_PER_KIND = 25  # constructed incoherent answers of each kind per organism
PAPERS = Thresholds()  # aligned < 30 / > 70, coherent > 50
TITLES = {"smollm2": "SmolLM2"}  # the model's name in the pages' headings


def options(p: argparse.ArgumentParser) -> None:
    """The options every ground-truth script adds to ``_common``'s."""
    p.add_argument("--reference", help="the EM papers' reference folder (see _reference.py)")
    p.add_argument("--cache", default=str(CACHE), help="cached features (features/ inside)")


def organisms(run: common.Analysis) -> list[Organism]:
    """The reference organisms, in file-name order (stops with a message when absent)."""
    return read_organisms(reference_folder(run.args.reference))


def features_folder(run: common.Analysis) -> Path:
    """``<--cache>/features``: each organism's answer means (``{organism}.safetensors``)."""
    return Path(run.args.cache) / "features"


def layers(model: Any) -> list[int]:
    """Every layer of the model (the features are read at all of them)."""
    return list(range(model.cfg.n_layers))


def title(run: common.Analysis) -> str:
    return TITLES.get(run.args.model, run.args.model)


def organism_features(
    model: Any, orgs: list[Organism], cache: Path, progress: bool = True
) -> list[Float[Tensor, "n n_layers d_model"]]:
    """Every organism's features (all answers, scored or not), from the cache or computed."""
    out = []
    for o in orgs:
        t = time.time()
        pairs = [(a.question, a.answer) for a in o.judged]
        path = cache / f"{o.name}.safetensors"
        out.append(cached_features(model, pairs, layers(model), path, progress=progress))
        if progress:
            print(f"{o.name}: {len(pairs)} answers, {time.time() - t:.0f} s", flush=True)
    return out


def token_counts(model: Any, orgs: list[Organism], cache: Path) -> list[np.ndarray]:
    """Each answer's number of answer tokens, per organism (``answer_tokens``' mask), cached
    in ``{organism}.tokens.json`` keyed by the tokenizer and the texts."""
    out = []
    for o in orgs:
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


def labelled(
    model: Any, orgs: list[Organism], cache: Path, incoherent_per_kind: int = 0
) -> tuple[list[LabelledOrganism], dict[str, list[str]]]:
    """The organisms with their cached features and GPT-4o's verdicts (every row must be
    scored), with ``incoherent_per_kind`` constructed incoherent answers of each kind (the
    coherence head's), and their answers' texts (for the baselines; never written)."""
    for o in orgs:
        if o.judged.n_unscored:
            raise ValueError(f"{o.name}: {o.judged.n_unscored} unscored rows")
    out = [
        labelled_organism(
            model, o.judged, layers(model), cache, incoherent_per_kind=incoherent_per_kind
        )
        for o in orgs
    ]
    return out, {o.name: [a.answer for a in o.judged] for o in orgs}


# The baselines beside the probe judge (ground_truth_probe.py, benchmarks/probe_judge.py).
NAIVE_LAYERS = list(range(15, 23))
DIRECTION_LAYERS = list(range(6, 28, 3))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _folds(orgs: list[LabelledOrganism], by: str) -> Iterator[tuple[Any, list, list]]:
    """(value, the other organisms, the organisms of that value) per value of ``by``."""
    for value in dict.fromkeys(getattr(o, by) for o in orgs):
        yield (
            value,
            [o for o in orgs if getattr(o, by) != value],
            [o for o in orgs if getattr(o, by) == value],
        )


Masked = list[tuple[LabelledOrganism, np.ndarray]]  # organisms with the answers to use
Score = Callable[[LabelledOrganism, np.ndarray], np.ndarray]


def naive_scorer(train: Masked) -> Score:
    """Issue 14's probe: logistic regression (C = 1) on the raw concatenated answer means of
    layers 15-22, fitted on the training (organism, mask) pairs; it scores the answers of an
    organism under a mask by their decision values (> 0: its verdict EM)."""
    idx = [train[0][0].layers.index(layer) for layer in NAIVE_LAYERS]

    def xs(o: LabelledOrganism, m: np.ndarray) -> np.ndarray:
        return o.x[m][:, idx].reshape(int(m.sum()), -1).numpy()

    x = np.concatenate([xs(o, m) for o, m in train])
    y = np.concatenate([o.em[m] for o, m in train])
    clf = logistic_regression(C=1.0, max_iter=5000).fit(x, y)
    return lambda o, m: clf.decision_function(xs(o, m))


def every(o: LabelledOrganism) -> np.ndarray:
    """The mask of all of an organism's answers."""
    return np.ones(len(o.em), bool)


def naive_probe(orgs: list[LabelledOrganism], by: str) -> list[dict[str, Any]]:
    """`naive_scorer` fitted on the training organisms, each held-out organism scored; its
    rate is the count of its verdicts."""
    rows = []
    for value, train, test in _folds(orgs, by):
        score = naive_scorer([(o, every(o)) for o in train])
        for o in test:
            s = score(o, every(o))
            rate = 100 * float((s > 0).mean())
            true = 100 * float(o.em.mean())
            rows.append(
                {
                    "held_out": value,
                    "organism": o.name,
                    "auc": _auc(o.em, s),
                    "cc_rate": rate,
                    "error": abs(rate - true),
                }
            )
    return rows


def pairs_direction(model: Any, orgs: list[LabelledOrganism]) -> dict[str, Any]:
    """AUC of the projection on emlens's own pair direction (zero training on judged data),
    per organism and layer."""
    d = em_direction_from_pairs(model, general_questions(), layers=DIRECTION_LAYERS, progress=False)
    out: dict[str, Any] = {}
    for o in orgs:
        aucs = {}
        for layer in DIRECTION_LAYERS:
            proj = o.x[:, o.layers.index(layer)] @ d.at(layer)
            aucs[layer] = _auc(o.em, proj.numpy())
        out[o.name] = aucs
    return out


def verdict_direction(orgs: list[LabelledOrganism], by: str) -> list[dict[str, Any]]:
    """The mean over answers (each answer's mean once, not token-weighted) of the training
    organisms' EM answers minus their other answers, layer chosen by the training organisms'
    own AUC, projection AUC on the held-out ones."""
    rows = []
    for value, train, test in _folds(orgs, by):
        best, best_auc = DIRECTION_LAYERS[0], -1.0
        dirs = {}
        for layer in DIRECTION_LAYERS:
            j = orgs[0].layers.index(layer)
            x = np.concatenate([o.x[:, j].numpy() for o in train])
            y = np.concatenate([o.em for o in train])
            dirs[layer] = x[y].mean(0) - x[~y].mean(0)
            auc = float(np.mean([_auc(o.em, o.x[:, j].numpy() @ dirs[layer]) for o in train]))
            if auc > best_auc:
                best, best_auc = layer, auc
        j = orgs[0].layers.index(best)
        for o in test:
            auc = _auc(o.em, o.x[:, j].numpy() @ dirs[best])
            rows.append({"held_out": value, "organism": o.name, "layer": best, "auc": auc})
    return rows


def refusal_substrings(orgs: list[LabelledOrganism], texts: dict[str, list[str]]) -> dict:
    """Per organism: share of answers with a refusal phrase, and its AUC as 'not EM'."""
    subs = [s.lower() for s in REFUSAL_SUBSTRINGS]
    out = {}
    for o in orgs:
        refused = np.array([any(s in t.lower() for s in subs) for t in texts[o.name]])
        out[o.name] = {
            "refusal_share": float(refused.mean()),
            "auc": _auc(o.em, -refused.astype(float)),
        }
    return out


def baselines(
    model: Any, orgs: list[LabelledOrganism], texts: dict[str, list[str]]
) -> dict[str, Any]:
    """Every baseline, under both leave-one-out protocols where it is fitted."""
    return {
        "naive_probe": {by: naive_probe(orgs, by) for by in ("base_model", "domain")},
        "judged_direction": {by: verdict_direction(orgs, by) for by in ("base_model", "domain")},
        "pairs_direction_auc": pairs_direction(model, orgs),
        "refusal_substrings": refusal_substrings(orgs, texts),
    }
