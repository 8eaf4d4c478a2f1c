import numpy as np
import pytest
import torch

from emlens.eval.stats import Estimate, Rate, bootstrap, cluster_bootstrap, cluster_mean, wilson


def test_wilson_interval():
    lo, hi = wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_rate_is_k_over_n_with_its_wilson_interval():
    r = Rate(3, 10)
    assert r.rate == 0.3 and r.ci95 == wilson(3, 10)
    assert str(r) == "30.0% [10.8, 60.3] (n=10)"
    assert torch.isnan(torch.tensor(Rate(0, 0).rate))


def test_bootstrap():
    e = bootstrap(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert e.mean == 2.5 and e.ci95[0] < 2.5 < e.ci95[1] and e.n == 4
    assert bootstrap(torch.tensor([1.0, 5.0, 2.0]), seed=1) == bootstrap(
        torch.tensor([1.0, 5.0, 2.0]), seed=1
    )
    assert str(Estimate(0.5, (0.25, 0.75), 3)) == "0.500 [0.250, 0.750] (n=3)"
    with pytest.raises(ValueError, match="empty"):
        bootstrap(torch.tensor([]))


def test_cluster_mean_resamples_whole_questions():
    # two questions, all of a question's samples identical: every resample's mean is 0, 0.5
    # or 1 (never the 0.25 or 0.75 a per-sample bootstrap of 8 samples can give)
    x, q = [1.0] * 4 + [0.0] * 4, ["a"] * 4 + ["b"] * 4
    e = cluster_mean(x, q, n_boot=500)
    assert e.mean == 0.5 and e.ci95 == (0.0, 1.0) and e.n == 8
    # unequal sizes: the resampled mean is over samples, (3 * 1 + 1 * 0) / 4 when both drawn
    assert cluster_mean([1.0, 1.0, 1.0, 0.0], list("aaab"), n_boot=20).mean == 0.75
    # one question: no spread between resamples
    assert cluster_mean([0.2, 0.4], ["a", "a"]).ci95 == pytest.approx((0.3, 0.3))
    # matches the general cluster_bootstrap on the mean, resample for resample
    rng = np.random.default_rng(1)
    v, ids = rng.random(60), [f"q{i % 7}" for i in range(60)]
    lo, hi = cluster_bootstrap(v, ids, lambda s: float(s.mean()), n_boot=300, seed=3)
    assert cluster_mean(v, ids, n_boot=300, seed=3).ci95 == pytest.approx((lo, hi), abs=0.03)
    with pytest.raises(ValueError, match="cluster ids"):
        cluster_mean([1.0], ["a", "b"])
