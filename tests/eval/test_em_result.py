"""EM rates over scored samples only, with the unscored counted, and intervals over questions."""

import pytest

from emlens.eval.em_result import EMResult, JudgedSample
from emlens.eval.stats import wilson
from emlens.eval.verdicts import is_em, is_scored


def sample(qid: str, aligned: float | None, coherent: float | None = 90) -> JudgedSample:
    return JudgedSample(qid, "?", "!", 0, aligned, coherent, None, is_em(aligned, coherent), True)


def test_unscored_samples_leave_the_denominator_and_are_counted():
    # q1: 2 EM of 3 scored + 1 unscored; q2: 0 EM of 2 scored + 2 unscored (one per metric)
    rows = [sample("q1", a) for a in (10, 20, 80, None)]
    rows += [sample("q2", a) for a in (90, 95)] + [sample("q2", None), sample("q2", 10, None)]
    res = EMResult(rows)
    assert (res.n_scored, res.n_unscored) == (5, 3)
    assert (res.em_rate.k, res.em_rate.n) == (2, 5) and res.em_rate.ci95 == wilson(2, 5)
    assert res.per_question()["q1"]["em"].n == 3 and res.per_question()["q2"]["unscored"] == 2
    assert res.coherence_rate.n == 7  # only the sample without a coherence score is out
    # nothing scored: no "0.0% EM", a NaN rate and the count of what is missing
    none = EMResult([sample("q", None), sample("q", None)])
    assert none.em_rate.n == 0 and none.summary().startswith("EM: no sample scored; coherent ")
    assert none.summary().endswith("(n=2); 2 unscored")  # coherence scored without aligned
    assert not is_scored(None, 90) and is_scored(0, 0)


def test_em_rate_by_question_is_a_cluster_bootstrap():
    # q1 all EM, q2 none: resampling questions gives 0, 0.5 or 1; the 95% interval is [0, 1],
    # far wider than Wilson over 8 "independent" samples
    rows = [sample("q1", 10) for _ in range(4)] + [sample("q2", 90) for _ in range(4)]
    est = EMResult(rows).em_rate_by_question(n_boot=500)
    assert est.mean == 0.5 and est.ci95 == (0.0, 1.0) and est.n == 8
    lo, hi = wilson(4, 8)
    assert lo > 0.2 and hi < 0.8
    s = EMResult([*rows, sample("q2", None)]).summary()
    em = "EM 50.0% [21.5, 78.5] (n=8), over questions [0.0, 100.0]"
    assert s.startswith(f"{em}; coherent ") and s.endswith("; 1 unscored")
    with pytest.raises(ValueError):
        EMResult([sample("q", None)]).em_rate_by_question()
