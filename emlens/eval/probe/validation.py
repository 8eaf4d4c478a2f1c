"""How far an offline judge is from the reference judge, on organisms it was not fitted on.

The protocol: leave one group of organisms out (a base model, or a narrow domain), fit the
probe judge on the rest (its own choices validated inside them), and score every held-out
organism: AUC of P(EM) against the reference verdicts, accuracy of the verdict at the probe's
threshold, expected calibration error (10 equal-width bins), and the EM rate estimated by each
estimator of :mod:`emlens.eval.rates` against the reference judge's rate (error in
percentage points), with cluster-bootstrap intervals over questions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.metrics import roc_auc_score
from torch import Tensor

from emlens.eval.probe.features import select_layers
from emlens.eval.probe.fit import fit_probe_judge
from emlens.eval.probe.judge import ProbeJudge
from emlens.eval.rates import estimate_rate

METHODS = ("cc", "acc", "pcc", "pacc")


@dataclass
class LabelledOrganism:
    """One organism's features with the reference judge's verdicts (scored answers only)."""

    name: str
    base_model: str
    domain: str
    x: Float[Tensor, "n n_layers d_model"]
    em: np.ndarray
    question_ids: list[str]
    layers: list[int]  # the layers of ``x``
    aligned: np.ndarray | None = None  # the reference judge's aligned scores


def calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the answer-weighted mean |mean P - EM share| over bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).sum() for b in set(idx))
    return float(err / len(p))


def score_organism(judge: ProbeJudge, org: LabelledOrganism, n_boot: int = 1000) -> dict[str, Any]:
    """Every figure of one held-out organism (rates and errors in percentage points)."""
    p = judge.proba(select_layers(org.x, org.layers, judge.layers)).numpy().astype(float)
    y = org.em.astype(bool)
    true = 100 * float(y.mean())
    out: dict[str, Any] = {
        "organism": org.name,
        "n": len(y),
        "gpt4o_rate": true,
        "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "accuracy": float(((p > judge.threshold) == y).mean()),
        "calibration_error": calibration_error(p, y),
    }
    if judge.has_aligned and org.aligned is not None:
        pred = judge.aligned_score(select_layers(org.x, org.layers, judge.layers)).numpy()
        out["aligned_mae"] = float(np.abs(pred - org.aligned).mean())
        out["aligned_r"] = float(np.corrcoef(pred, org.aligned)[0, 1])
    for m in METHODS:
        try:
            est = estimate_rate(p, org.question_ids, judge.errors, m, judge.threshold, n_boot)
        except ValueError:  # a judge too weak to correct for: no estimate
            out[m] = {"rate": float("nan"), "ci95": [float("nan")] * 2, "error": float("nan")}
            continue
        lo, hi = (100 * v for v in est.ci95)
        out[m] = {"rate": 100 * est.rate, "ci95": [lo, hi], "error": abs(100 * est.rate - true)}
    return out


Fitter = Callable[[Sequence[LabelledOrganism]], ProbeJudge]


def fit_on(
    organisms: Sequence[LabelledOrganism],
    model: str,
    by: str = "name",
    **kw: Any,
) -> ProbeJudge:
    """Fit a probe judge on ``organisms``, validating by leaving one ``by`` group out.

    Args:
        organisms: the training organisms (their features read at the same layers).
        model: the model the features were read with.
        by: the validation groups: ``name`` (one organism), ``base_model`` or ``domain``.
        **kw: passed to :func:`emlens.eval.probe.fit.fit_probe_judge` (``layer_sets``, ``cs``).

    Returns:
        The judge, with the training organisms in ``meta``.

    Examples:
        >>> judge = fit_on(orgs, "smollm2", by="base_model")
    """
    x = torch.cat([o.x for o in organisms])
    y = np.concatenate([o.em for o in organisms])
    groups = [str(getattr(o, by)) for o in organisms for _ in range(len(o.em))]
    if any(o.layers != organisms[0].layers for o in organisms):
        raise ValueError("the organisms' features are read at different layers")
    if all(o.aligned is not None for o in organisms):
        kw.setdefault("aligned", np.concatenate([o.aligned for o in organisms]))
    judge = fit_probe_judge(x, y, groups, organisms[0].layers, model, **kw)
    judge.meta["training_organisms"] = [o.name for o in organisms]
    judge.meta["validation"]["by"] = by
    return judge


def leave_group_out(
    organisms: Sequence[LabelledOrganism], by: str, fit: Fitter, n_boot: int = 1000
) -> list[dict[str, Any]]:
    """Fit on all but one value of ``by`` (``base_model`` or ``domain``), score the rest.

    Args:
        organisms: the labelled organisms.
        by: the attribute whose values are held out one at a time.
        fit: fits a judge on a list of organisms (it must validate inside them only).
        n_boot: bootstrap resamples per interval.

    Returns:
        One row per held-out organism (:func:`score_organism`) with ``held_out`` and the
        judge's chosen ``layers`` and ``C``.

    Examples:
        >>> rows = leave_group_out(orgs, "base_model", lambda tr: fit_on(tr))
    """
    rows = []
    for value in dict.fromkeys(getattr(o, by) for o in organisms):
        train = [o for o in organisms if getattr(o, by) != value]
        judge = fit(train)
        best = judge.meta.get("validation", {}).get("best", {})
        for o in organisms:
            if getattr(o, by) == value:
                row = score_organism(judge, o, n_boot)
                rows.append({"held_out": value, **row, "layers": judge.layers, "C": best.get("C")})
    return rows


def summary(rows: Sequence[dict[str, Any]], method: str = "pcc") -> dict[str, float]:
    """Mean and worst AUC, median and worst rate error (points) of held-out organisms."""
    aucs = [r["auc"] for r in rows]
    errs = [r[method]["error"] for r in rows]
    return {
        "auc_mean": float(np.mean(aucs)),
        "auc_min": float(np.min(aucs)),
        "rate_error_median": float(np.median(errs)),
        "rate_error_max": float(np.max(errs)),
        "accuracy_mean": float(np.mean([r["accuracy"] for r in rows])),
        "calibration_error_mean": float(np.mean([r["calibration_error"] for r in rows])),
    }
