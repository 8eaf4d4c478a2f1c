"""Rate estimators against synthetic data with known rates and known classifier errors."""

import numpy as np
import pytest

from emlens.eval.rates import ErrorRates, estimate_rate, estimators
from emlens.eval.stats import cluster_bootstrap


def simulate(rng, n, rate, tpr, fpr):
    """Answers with a known EM share and a judge with known verdict error rates; the judge's
    'probability' is its verdict blurred, with mean 0.8 on positives and 0.3 on negatives."""
    y = rng.random(n) < rate
    verdict = np.where(y, rng.random(n) < tpr, rng.random(n) < fpr)
    p = np.clip(np.where(y, 0.8, 0.3) + rng.normal(0, 0.05, n), 0, 1)
    p = np.where(verdict, np.maximum(p, 0.51), np.minimum(p, 0.49))
    return y, p


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.6])
def test_adjusted_count_is_unbiased_where_counting_is_not(rate):
    rng = np.random.default_rng(0)
    tpr, fpr = 0.7, 0.1
    # the error rates measured on a large labelled sample, as a fitted judge would have them
    y_cal, p_cal = simulate(rng, 200_000, 0.3, tpr, fpr)
    errors = ErrorRates.measure(p_cal, y_cal)
    assert errors.tpr == pytest.approx(tpr, abs=0.01) and errors.fpr == pytest.approx(fpr, abs=0.01)
    fns = estimators(errors)
    est = {m: [] for m in fns}
    for _ in range(400):
        _, p = simulate(rng, 400, rate, tpr, fpr)
        for m, fn in fns.items():
            est[m].append(fn(p))
    mean = {m: float(np.mean(v)) for m, v in est.items()}
    assert mean["acc"] == pytest.approx(rate, abs=0.006)
    expected_cc = tpr * rate + fpr * (1 - rate)
    assert mean["cc"] == pytest.approx(expected_cc, abs=0.006)  # biased as predicted
    # probabilities: the PACC correction recovers the rate too (clipping at 0 biases up a bit)
    assert mean["pacc"] == pytest.approx(rate, abs=0.01)


def test_mean_of_calibrated_probabilities_is_unbiased():
    rng = np.random.default_rng(1)
    for rate in (0.1, 0.3):
        # calibrated by construction: each answer is EM with exactly its probability
        a = rate * 4 / (1 - rate)
        p = rng.beta(a, 4, size=(300, 400))
        y = rng.random(p.shape) < p
        assert p.mean() == pytest.approx(rate, abs=0.005)
        assert abs(p.mean(1) - y.mean(1)).mean() < 0.03


def test_cluster_bootstrap_resamples_whole_questions():
    # two questions: every answer of one is EM, none of the other; a bootstrap over answers
    # would give a narrow interval around 0.5, over questions it spans 0 to 1
    p = np.array([1.0] * 50 + [0.0] * 50)
    qids = ["a"] * 50 + ["b"] * 50
    lo, hi = cluster_bootstrap(p, qids, lambda v: float(v.mean()), n_boot=500)
    assert (lo, hi) == (0.0, 1.0)
    same = cluster_bootstrap(np.full(100, 0.3), qids, lambda v: float(v.mean()))
    assert same == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError):
        cluster_bootstrap(p, qids[:3], np.mean)


def test_estimate_rate_reports_an_interval_and_refuses_a_useless_judge():
    rng = np.random.default_rng(2)
    y, p = simulate(rng, 800, 0.25, 0.8, 0.05)
    qids = [f"q{i % 8}" for i in range(800)]
    errors = ErrorRates.measure(p, y)
    est = estimate_rate(p, qids, errors, "acc", n_boot=300)
    assert est.ci95[0] <= est.rate <= est.ci95[1] and est.n == 800
    assert "acc" in str(est) and "%" in str(est)
    with pytest.raises(ValueError, match="method"):
        estimate_rate(p, qids, errors, "median")
    with pytest.raises(ValueError, match="barely separates"):
        estimate_rate(p, qids, ErrorRates(0.5, 0.49), "acc")
    with pytest.raises(ValueError, match="both"):
        ErrorRates.measure(p, np.ones(800, bool))
