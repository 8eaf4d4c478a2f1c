"""Ground truth: the baselines beside the probe judge (imported by ground_truth_probe.py).

- naive probe (issue 14): logistic regression, C = 1, on the raw concatenated answer means of
  layers 15-22, fitted on the training organisms; its rate is the count of its verdicts;
- the EM direction from emlens's own 80 answer pairs (zero training on judged data):
  projection of each answer's mean onto it, AUC per organism and layer;
- the judged-data direction: mean(EM) - mean(not EM) over the training organisms' answers,
  layer chosen by the training organisms' own AUC, projection AUC on the held-out ones;
- refusal substrings: an answer with a refusal phrase is scored not EM.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from emlens.core.data import general_questions
from emlens.core.directions import em_direction_from_pairs
from emlens.eval.metrics import REFUSAL_SUBSTRINGS
from emlens.eval.probe.validation import LabelledOrganism

NAIVE_LAYERS = list(range(15, 23))
DIRECTION_LAYERS = list(range(6, 28, 3))


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def _folds(orgs: list[LabelledOrganism], by: str):
    for value in dict.fromkeys(getattr(o, by) for o in orgs):
        yield (
            value,
            [o for o in orgs if getattr(o, by) != value],
            [o for o in orgs if getattr(o, by) == value],
        )


def naive_probe(orgs: list[LabelledOrganism], by: str) -> list[dict[str, Any]]:
    """Issue 14's probe: raw features, C = 1, verdicts counted."""
    idx = [orgs[0].layers.index(layer) for layer in NAIVE_LAYERS]

    def xs(o: LabelledOrganism) -> np.ndarray:
        return o.x[:, idx].reshape(len(o.em), -1).numpy()

    rows = []
    for value, train, test in _folds(orgs, by):
        x = np.concatenate([xs(o) for o in train])
        y = np.concatenate([o.em for o in train])
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)
        for o in test:
            s = clf.decision_function(xs(o))
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
    """AUC of the projection on emlens's own pair direction, per organism and layer."""
    d = em_direction_from_pairs(model, general_questions(), layers=DIRECTION_LAYERS, progress=False)
    out: dict[str, Any] = {}
    for o in orgs:
        aucs = {}
        for layer in DIRECTION_LAYERS:
            proj = o.x[:, o.layers.index(layer)] @ d.at(layer)
            aucs[layer] = _auc(o.em, proj.numpy())
        out[o.name] = aucs
    return out


def judged_direction(orgs: list[LabelledOrganism], by: str) -> list[dict[str, Any]]:
    """Mean-difference direction of the training organisms' verdicts, projected."""
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
        "judged_direction": {by: judged_direction(orgs, by) for by in ("base_model", "domain")},
        "pairs_direction_auc": pairs_direction(model, orgs),
        "refusal_substrings": refusal_substrings(orgs, texts),
    }
