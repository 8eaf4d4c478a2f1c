import pytest
import torch

from emlens.eval.stats import Estimate, Rate, bootstrap, wilson


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
