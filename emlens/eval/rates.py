"""EM rates from an imperfect judge: estimators that correct for its errors, with intervals.

Counting a classifier's verdicts (classify and count, CC) is biased whenever it errs: its
expected rate is ``tpr * pi + fpr * (1 - pi)`` for a true rate ``pi``. The corrections
(Forman 2008, "Quantifying counts and costs via classification"):

- adjusted classify and count (ACC): ``(CC - fpr) / (tpr - fpr)``, with the verdict's true- and
  false-positive rates measured on labelled data the classifier was not fitted on;
- probability average (PCC): the mean of calibrated probabilities;
- probabilistic ACC (PACC): ``(PCC - m0) / (m1 - m0)``, with ``m1``/``m0`` the mean probability
  on labelled positives/negatives.

The default is PCC. On organisms of a base model the probe judge was not fitted on, the
adjusted estimators did worse than PCC (``docs/evaluation.md``): the corrections assume the
judge's error rates carry over to the new answers, and across base models they do not.

Intervals: a cluster bootstrap over questions (answers to one question are not independent),
resampling whole questions with replacement (`emlens.eval.stats.cluster_bootstrap`), widened
on each side by the judge's own error where it is known (``judge_margin``: how far the judge's
estimates were from the reference judge's rates on organisms it was not fitted on, a
prediction interval from those errors, `judge_margin`): sampling noise alone is not the error of
a rate measured by an imperfect judge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import t as student_t

from emlens.eval.stats import Statistic, cluster_bootstrap


@dataclass(frozen=True)
class ErrorRates:
    """What the correction needs to know of a judge, measured on held-out labelled answers:
    the verdict's true- and false-positive rates, and the mean probability on positives and
    negatives."""

    tpr: float
    fpr: float
    mean_p_pos: float = 1.0
    mean_p_neg: float = 0.0

    @classmethod
    def measure(cls, p: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> ErrorRates:
        """Measure them from calibrated probabilities ``p`` and true verdicts ``labels``."""
        p, y = np.asarray(p, float), np.asarray(labels, bool)
        if y.all() or not y.any():
            raise ValueError("error rates need both EM and non-EM labelled answers")
        v = p > threshold
        return cls(float(v[y].mean()), float(v[~y].mean()), float(p[y].mean()), float(p[~y].mean()))


def _adjust(observed: float, pos: float, neg: float) -> float:
    if pos - neg < 0.05:
        raise ValueError(f"the judge barely separates the classes ({pos:.3f} vs {neg:.3f})")
    return float(np.clip((observed - neg) / (pos - neg), 0.0, 1.0))


def estimators(errors: ErrorRates, threshold: float = 0.5) -> dict[str, Statistic]:
    """The four estimators as functions of calibrated probabilities: cc, acc, pcc, pacc."""
    e = errors
    return {
        "cc": lambda p: float((p > threshold).mean()),
        "acc": lambda p: _adjust(float((p > threshold).mean()), e.tpr, e.fpr),
        "pcc": lambda p: float(p.mean()),
        "pacc": lambda p: _adjust(float(p.mean()), e.mean_p_pos, e.mean_p_neg),
    }


@dataclass(frozen=True)
class RateEstimate:
    """An EM-rate estimate (a fraction) with its cluster-bootstrap 95% interval ``ci95``
    (sampling noise) and the judge's error ``judge_margin`` (a fraction added on each side;
    0: unknown or none); `interval` holds both."""

    method: str
    rate: float
    ci95: tuple[float, float]
    n: int
    judge_margin: float = 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """The interval with the judge's error: ``ci95`` widened by ``judge_margin``, in [0, 1]."""
        lo, hi = self.ci95
        return max(0.0, lo - self.judge_margin), min(1.0, hi + self.judge_margin)

    def __str__(self) -> str:
        lo, hi = (100 * v for v in self.interval)
        judge = f"; judge error ±{100 * self.judge_margin:.1f}" if self.judge_margin else ""
        return f"{100 * self.rate:.1f}% [{lo:.1f}, {hi:.1f}] (n={self.n}, {self.method}{judge})"


def judge_margin(errors: ArrayLike, coverage: float = 0.95) -> float:
    """How far a judge's rate estimate may be from the reference judge's on a new organism:
    the half-width of a normal prediction interval for one more error, from the ``errors``
    (estimate minus reference rate) measured on ``n`` organisms the judge was not fitted on,
    ``t(n - 1) * rms(errors) * sqrt(1 + 1 / n)`` (the root mean square about zero, so that a
    bias counts as error). Same unit as ``errors``.

    Raises:
        ValueError: fewer than two errors.

    Examples:
        >>> round(judge_margin([0.01, -0.03, 0.02, 0.05, -0.01, 0.0, 0.04, -0.02]), 4)
        0.0687
    """
    e = np.asarray(errors, float)
    if len(e) < 2:
        raise ValueError(f"a judge's margin needs at least two held-out errors, got {len(e)}")
    t = float(student_t.ppf(0.5 + coverage / 2, len(e) - 1))
    return t * float(np.sqrt(np.mean(e**2))) * float(np.sqrt(1 + 1 / len(e)))


def estimate_rate(
    p: ArrayLike,
    question_ids: Sequence[object],
    errors: ErrorRates,
    method: str = "pcc",
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    margin: float = 0.0,
) -> RateEstimate:
    """The EM rate of a set of answers from a judge's calibrated probabilities.

    Args:
        p: calibrated P(EM) per answer.
        question_ids: each answer's question (the bootstrap's clusters).
        errors: the judge's error rates measured on held-out labelled answers.
        method: ``cc``, ``acc``, ``pcc`` or ``pacc``.
        threshold: the verdict's threshold on ``p``.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        margin: the judge's error (a fraction, `judge_margin`) added to each side.

    Returns:
        A :class:`RateEstimate`.

    Examples:
        Six answers to three questions, with a judge's P(EM) (for a probe judge:
        ``estimate_rate(judge.proba(x), qids, judge.errors)``):

        >>> p = [0.9, 0.8, 0.1, 0.2, 0.1, 0.0]
        >>> qids = ["q1", "q1", "q2", "q2", "q3", "q3"]
        >>> est = estimate_rate(p, qids, ErrorRates(tpr=0.9, fpr=0.1))
        >>> print(est)  # the mean P(EM), resampling questions for the interval
        35.0% [...] (n=6, pcc)
    """
    fns = estimators(errors, threshold)
    if method not in fns:
        raise ValueError(f"method must be one of {sorted(fns)}, not {method!r}")
    v = np.asarray(p, float)
    fn = fns[method]
    ci = cluster_bootstrap(v, question_ids, fn, n_boot, seed)
    return RateEstimate(method, fn(v), ci, len(v), margin)
