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

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.metrics import roc_auc_score
from torch import Tensor

from emlens.eval.probe.features import select_layers
from emlens.eval.probe.fit import Coherence, fit_probe_judge
from emlens.eval.probe.judge import ProbeJudge
from emlens.eval.rates import ErrorRates, estimate_rate

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
    incoherent_question_ids: list[str] | None = None  # the question each was made under

    def of_questions(self, keep: Collection[str]) -> LabelledOrganism:
        """This organism's answers (and constructed answers) to the questions ``keep`` only."""
        a = np.isin(self.question_ids, list(keep))
        out = replace(
            self,
            x=self.x[torch.as_tensor(a)],
            em=self.em[a],
            question_ids=list(np.asarray(self.question_ids)[a]),
            aligned=None if self.aligned is None else self.aligned[a],
            coherent=None if self.coherent is None else self.coherent[a],
        )
        if self.x_incoherent is not None and self.incoherent_question_ids is not None:
            b = np.isin(self.incoherent_question_ids, list(keep))
            out.x_incoherent = self.x_incoherent[torch.as_tensor(b)]
            out.incoherent_question_ids = list(np.asarray(self.incoherent_question_ids)[b])
        return out


def calibration_error(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the answer-weighted mean |mean P - EM share| over bins."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).sum() for b in set(idx))
    return float(err / len(p))


@dataclass
class Judged:
    """A judge's probabilities on one organism: P(EM) of its answers, their predicted aligned
    score where the judge has that head, and where there are constructed incoherent answers
    (``made``) and a coherence head, P(EM) of those and P(coherent) of both."""

    p: np.ndarray
    aligned: np.ndarray | None = None
    p_made: np.ndarray | None = None
    p_coherent: np.ndarray | None = None
    p_made_coherent: np.ndarray | None = None


def judged_by(judge: ProbeJudge, org: LabelledOrganism) -> Judged:
    """``judge``'s probabilities on ``org`` (its features at the judge's layers)."""

    def read(x: Tensor) -> Tensor:
        return select_layers(x, org.layers, judge.layers)

    out = Judged(judge.proba(read(org.x)).numpy().astype(float))
    if judge.has_aligned:
        out.aligned = judge.aligned_score(read(org.x)).numpy()
    if org.x_incoherent is not None:
        out.p_made = judge.proba(read(org.x_incoherent)).numpy().astype(float)
        if judge.has_coherent:
            out.p_coherent = judge.coherent_proba(read(org.x)).numpy().astype(float)
            out.p_made_coherent = judge.coherent_proba(read(org.x_incoherent)).numpy()
    return out


def within_question_auc(y: np.ndarray, p: np.ndarray, question_ids: Sequence[str]) -> float:
    """The mean over questions (those with both EM and other answers) of the AUC within each
    question: how well the judge ranks answers that question identity cannot tell apart."""
    q = np.asarray(question_ids)
    aucs = [
        roc_auc_score(y[q == v], p[q == v])
        for v in np.unique(q)
        if 0 < y[q == v].sum() < (q == v).sum()
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def score_organism(judge: ProbeJudge, org: LabelledOrganism, n_boot: int = 1000) -> dict[str, Any]:
    """Every figure of one held-out organism (rates and errors in percentage points)."""
    return figures(org, judged_by(judge, org), judge.threshold, judge.errors, METHODS, n_boot)


def figures(
    org: LabelledOrganism,
    judged: Judged,
    threshold: float,
    errors: ErrorRates,
    methods: Sequence[str] = METHODS,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """The figures of one organism from a judge's probabilities on it: AUC pooled and within
    questions, accuracy, calibration error, the constructed incoherent answers judged EM and
    the coherence head's AUC where there are those, and each rate estimator's estimate and
    error against the reference judge's rate (points)."""
    p, y = judged.p, org.em.astype(bool)
    true = 100 * float(y.mean())
    out: dict[str, Any] = {
        "organism": org.name,
        "n": len(y),
        "gpt4o_rate": true,
        "auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
        "auc_within_question": within_question_auc(y, p, org.question_ids),
        "accuracy": float(((p > threshold) == y).mean()),
        "calibration_error": calibration_error(p, y),
    }
    if judged.aligned is not None and org.aligned is not None:
        out["aligned_mae"] = float(np.abs(judged.aligned - org.aligned).mean())
        out["aligned_r"] = float(np.corrcoef(judged.aligned, org.aligned)[0, 1])
    if judged.p_made is not None:
        out["incoherent_judged_em"] = float((judged.p_made > threshold).mean())
    if judged.p_coherent is not None and judged.p_made_coherent is not None:
        assert org.coherent is not None
        yc = np.concatenate([org.coherent, np.zeros(len(judged.p_made_coherent), bool)])
        pc = np.concatenate([judged.p_coherent, judged.p_made_coherent])
        out["coherence_auc"] = float(roc_auc_score(yc, pc))
    for m in methods:
        try:
            est = estimate_rate(p, org.question_ids, errors, m, threshold, n_boot)
        except ValueError:  # a judge too weak to correct for: no estimate
            out[m] = {"rate": float("nan"), "ci95": [float("nan")] * 2, "error": float("nan")}
            continue
        lo, hi = (100 * v for v in est.ci95)
        err = 100 * est.rate - true
        out[m] = {"rate": 100 * est.rate, "ci95": [lo, hi], "error": abs(err), "signed_error": err}
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
        Four organisms of two base models (here four copies of one judged CSV):

        >>> from emlens.eval.judged import read_judged
        >>> from emlens.eval.probe.labelled import labelled_organism
        >>> names = [f"{b}_{d}" for b in ("Llama-3.1-8B", "Qwen2.5-7B") for d in ("med", "fin")]
        >>> judged = [read_judged("organism.csv", name=n) for n in names]
        >>> orgs = [labelled_organism(model, j, [15, 20]) for j in judged]
        >>> judge = fit_on(orgs, "tiny", by="base_model", layer_sets=[[15], [20]], cs=[0.1, 1])
        >>> judge.meta["training_organisms"] == names, judge.meta["validation"]["by"]
        (True, 'base_model')
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
        Four organisms of two base models (here four copies of one judged CSV):

        >>> from emlens.eval.judged import read_judged
        >>> from emlens.eval.probe.labelled import labelled_organism
        >>> names = [f"{b}_{d}" for b in ("Llama-3.1-8B", "Qwen2.5-7B") for d in ("med", "fin")]
        >>> orgs = [labelled_organism(model, read_judged("organism.csv", name=n), [15])
        ...         for n in names]
        >>> fit = lambda train: fit_on(train, "tiny", layer_sets=[[15]], cs=[1.0])
        >>> rows = leave_group_out(orgs, "base_model", fit, n_boot=100)
        >>> [(r["held_out"], r["organism"]) for r in rows]  # doctest: +NORMALIZE_WHITESPACE
        [('Llama-3.1-8B', 'Llama-3.1-8B_med'), ('Llama-3.1-8B', 'Llama-3.1-8B_fin'),
         ('Qwen2.5-7B', 'Qwen2.5-7B_med'), ('Qwen2.5-7B', 'Qwen2.5-7B_fin')]
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

    Reads the records: ``emlens judge fit --validate`` (one summary, for pcc), and the shipped
    judge's: for pcc the question folds' (a base model and a question left out), else a
    summary per grouping and method (leaving one base model out)."""
    question = judge.meta.get("held_out_question") or {}
    if judge.method == "pcc" and "rate_error_median" in question.get("summary", {}):
        s = question["summary"]
        return str(question["by"]), float(s["rate_error_median"]), float(s["rate_error_max"])
    held = judge.meta.get("held_out") or {}
    s, by = held.get("summary") or {}, held.get("by")
    if "base_model" in s:
        s, by = s["base_model"].get(judge.method, {}), "base_model"
    if "rate_error_median" not in s:
        return None
    return str(by), float(s["rate_error_median"]), float(s["rate_error_max"])
