"""How far an offline judge is from the reference judge, on organisms it was not fitted on.

The protocol: leave one group of organisms out (a base model, or a narrow domain), fit the
probe judge on the rest (its own choices validated inside them), and score every held-out
organism: AUC of P(EM) against the reference verdicts, accuracy of the verdict at the probe's
threshold, expected calibration error (10 equal-width bins), and the EM rate estimated by each
estimator of :mod:`emlens.eval.rates` against the reference judge's rate (error in
percentage points), with cluster-bootstrap intervals over questions. Where the organisms
carry coherence verdicts and constructed incoherent answers, also the share of the held-out
organism's constructed incoherent answers the judge calls EM and the coherence head's AUC
(its coherent answers against its incoherent ones, real and constructed).
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
from emlens.eval.probe.fit import Coherence, fit_probe_judge
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
    coherent: np.ndarray | None = None  # the reference judge's coherence verdicts (> 50)
    x_incoherent: Float[Tensor, "m n_layers d_model"] | None = None  # constructed answers


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
    if org.x_incoherent is not None:
        bad = judge.proba(select_layers(org.x_incoherent, org.layers, judge.layers)).numpy()
        out["incoherent_judged_em"] = float((bad > judge.threshold).mean())
        if judge.has_coherent and org.coherent is not None:
            x = torch.cat([org.x, org.x_incoherent])
            pc = judge.coherent_proba(select_layers(x, org.layers, judge.layers)).numpy()
            yc = np.concatenate([org.coherent, np.zeros(len(bad), bool)])
            out["coherence_auc"] = float(roc_auc_score(yc, pc))
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
    if all(o.coherent is not None and o.x_incoherent is not None for o in organisms):
        kw.setdefault("coherent", coherence_data(organisms, by))
    judge = fit_probe_judge(x, y, groups, organisms[0].layers, model, **kw)
    judge.meta["training_organisms"] = [o.name for o in organisms]
    judge.meta["validation"]["by"] = by
    return judge


def coherence_data(organisms: Sequence[LabelledOrganism], by: str) -> Coherence:
    """The coherence head's training data: every answer's verdict and the constructed
    incoherent answers, grouped by ``by`` like the answers they were made from."""
    coherent, bad, groups = [], [], []
    for o in organisms:
        if o.coherent is None or o.x_incoherent is None:
            raise ValueError(f"{o.name} has no coherence verdicts or constructed answers")
        coherent.append(o.coherent)
        bad.append(o.x_incoherent)
        groups += [str(getattr(o, by))] * len(o.x_incoherent)
    return Coherence(np.concatenate(coherent), torch.cat(bad), groups)


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


def held_out_error(judge: ProbeJudge) -> tuple[str, float, float] | None:
    """(left out by, median, worst) error in points of ``judge``'s EM rate under its
    ``method`` against GPT-4o's, on organisms it was not fitted on; None when its file
    records none.

    Reads both records: ``emlens judge fit --validate`` (one summary, for pcc) and the shipped
    judge's (a summary per grouping and method; leaving one base model out)."""
    held = judge.meta.get("held_out") or {}
    s, by = held.get("summary") or {}, held.get("by")
    if "base_model" in s:
        s, by = s["base_model"].get(judge.method, {}), "base_model"
    if "rate_error_median" not in s:
        return None
    return str(by), float(s["rate_error_median"]), float(s["rate_error_max"])
