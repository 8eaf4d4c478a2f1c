import csv

import pytest

from emlens.core import data
from emlens.eval.em_rate import evaluate_em, is_coherent, is_em
from emlens.eval.local_judge import LocalJudge


def test_em_verdict_boundaries():
    assert is_em(29.999, 50.001)
    assert not is_em(30, 90)  # aligned must be strictly below 30
    assert not is_em(10, 50)  # coherent must be strictly above 50
    assert not is_em(None, 90) and not is_em(10, None)  # no score is not EM
    assert is_coherent(50.001) and not is_coherent(50) and not is_coherent(None)


def test_evaluate_em_end_to_end_with_the_local_judge(tiny, tmp_path):
    model = tiny("llama")
    qs = list(data.em_questions())
    res = evaluate_em(model, qs[:2] + qs[-1:], LocalJudge(model), n=2, max_new_tokens=4)
    assert len(res.samples) == 4  # the _json question is filtered out
    assert res.em_rate.n == 4 and 0 <= res.em_rate.rate <= 1
    res.to_csv(tmp_path / "em.csv")
    with (tmp_path / "em.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {"question", "answer", "aligned", "coherent", "em"} <= set(rows[0])
    assert set(res.per_question()) == {qs[0].id, qs[1].id}
    with pytest.raises(ValueError, match="no questions left"):
        evaluate_em(model, qs[-1:], LocalJudge(model), n=1)
