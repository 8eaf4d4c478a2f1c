"""Both halves of the verdict: constructed incoherence, the coherence head, the judge's error
margin on EM-rate intervals."""

import csv
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.stats import t as student_t

from emlens.core.interventions import Steer, applied
from emlens.eval.em_result import EMResult, JudgedSample
from emlens.eval.judged import read_judged
from emlens.eval.probe.features import answer_features
from emlens.eval.probe.incoherent import KINDS, incoherent_answers
from emlens.eval.probe.judge import ProbeJudge
from emlens.eval.probe.labelled import labelled_organism
from emlens.eval.probe.question_folds import leave_question_out, margin_coverage
from emlens.eval.probe.validation import LabelledOrganism, fit_on, leave_group_out
from emlens.eval.rates import RateEstimate, judge_margin
from emlens.eval.verdicts import Verdict

WORDS = "the a cat dog runs sleeps money health fast slow river stone blue green".split()
FIT = {"layer_sets": [[1, 2]], "cs": [0.3, 30.0]}


def sentences(n, seed, words=20):
    rng = np.random.default_rng(seed)
    return [(f"Question {i % 4}?", " ".join(rng.choice(WORDS, size=words))) for i in range(n)]


def test_incoherent_answers_are_made_as_their_kind_says():
    pairs = [(f"Q{i}?", " ".join(f"w{i}_{j}" for j in range(30))) for i in range(6)]
    made = incoherent_answers(pairs, per_kind=4, seed=1)
    assert Counter(k for k, _ in made) == dict.fromkeys(KINDS, 4)
    assert made == incoherent_answers(pairs, per_kind=4, seed=1)  # the seed fixes them
    source = dict(pairs)
    for kind, (q, text) in made:
        words, own = text.split(), source[q].split()
        if kind == "shuffled":  # the same words, another order
            assert sorted(words) == sorted(own) and words != own
        elif kind == "spliced":  # a head of this answer, then a tail of another question's
            i = next(i for i, w in enumerate(words) if w not in own)
            assert 0 < i < len(own) and words[:i] == own[:i]
            other = next(a.split() for qq, a in pairs if qq != q and words[i] in a.split())
            assert words[i:] == other[-len(words[i:]) :]
        elif kind == "fragments":  # short runs of this answer's words, not all of it
            assert set(words) <= set(own) and len(words) < len(own) // 2
        else:  # one phrase of 2-4 words repeated at least 8 times
            k = next(k for k in (2, 3, 4) if words == words[:k] * (len(words) // k))
            assert len(words) // k >= 8
    with pytest.raises(ValueError, match="unknown kinds"):
        incoherent_answers(pairs, 1, kinds=["garbled"])
    with pytest.raises(ValueError, match="at least two answers"):
        incoherent_answers([("Q?", "too short to use")], 1)


def test_judge_margin_is_the_t_prediction_half_width():
    e = np.array([0.02, -0.05, 0.01, 0.04, -0.03])
    want = student_t.ppf(0.975, 4) * np.sqrt((e**2).mean()) * np.sqrt(1 + 1 / 5)
    assert judge_margin(e) == pytest.approx(want)
    assert judge_margin(e + 0.1) > judge_margin(e)  # a bias is error too
    assert judge_margin(e, 0.8) < judge_margin(e)
    with pytest.raises(ValueError, match="at least two"):
        judge_margin([0.1])
    est = RateEstimate("pcc", 0.05, (0.02, 0.09), 100, judge_margin=0.04)
    assert est.interval == pytest.approx((0.0, 0.13))  # widened, kept in [0, 1]
    assert str(est) == "5.0% [0.0, 13.0] (n=100, pcc; judge error ±4.0)"
    assert str(RateEstimate("pcc", 0.05, (0.02, 0.09), 100)) == "5.0% [2.0, 9.0] (n=100, pcc)"


def test_a_predicted_coherence_is_the_coherence_verdict():
    verdicts = [Verdict(None, None, p_em=0.1, p_coherent=p) for p in (0.9, 0.2, 0.7)]
    s = [JudgedSample.of("q", "?", "!", 0, v) for v in verdicts]
    assert [x.coherent_ok for x in s] == [True, False, True]
    assert EMResult(s).coherence_rate.k == 2 and EMResult(s).coherence_rate.n == 3
    assert Verdict(None, 80, p_coherent=0.1).coherent_ok  # a score wins over a prediction


@pytest.fixture(scope="module")
def planted(tiny):
    """Three organisms of tiny-llama answers, EM ones (30%) read with direction u planted;
    beside each, 40 constructed answers read with u AND an incoherence direction v planted
    (so the EM head alone would call them EM)."""
    model = tiny("llama")
    torch.manual_seed(0)
    u, v = (torch.nn.functional.normalize(torch.randn(1, 64), dim=-1) * 3 for _ in range(2))
    rng = np.random.default_rng(0)
    orgs = []
    for k in range(3):
        pairs = sentences(60, k)
        em = rng.random(len(pairs)) < 0.3
        x = answer_features(model, pairs, [0, 1, 2], batch_size=16)
        with applied(model, [Steer(u, (0,), 1.0)]):
            x[em] = answer_features(model, [pairs[i] for i in np.flatnonzero(em)], [0, 1, 2])
        made = [qa for _, qa in incoherent_answers(pairs, 10, seed=k)]
        with applied(model, [Steer(u, (0,), 1.0), Steer(v, (0,), 1.0)]):
            bad = answer_features(model, made, [0, 1, 2], batch_size=16)
        qids = [q for q, _ in pairs]
        coherent = np.ones(len(em), bool)
        made_qids = [q for q, _ in made]
        orgs.append(
            LabelledOrganism(
                f"b{k}_dom", f"b{k}", "dom", x, em, qids, [0, 1, 2], None, coherent, bad, made_qids
            )
        )
    return model, orgs


def test_the_coherence_head_keeps_incoherent_answers_out_of_em(planted, tmp_path):
    _, orgs = planted
    rows = leave_group_out(orgs, "base_model", lambda tr: fit_on(tr, "tiny", **FIT), n_boot=50)
    for r in rows:
        assert r["coherence_auc"] > 0.95 and r["incoherent_judged_em"] <= 0.05
        assert r["auc"] > 0.9  # the coherent EM answers are still found
    without = [replace(o, coherent=None, x_incoherent=None) for o in orgs[:2]]
    em_only = fit_on(without, "tiny", **FIT)
    assert not em_only.has_coherent
    p_bad = em_only.proba(orgs[2].x_incoherent[:, em_only.layers]).numpy()
    assert (p_bad > 0.5).mean() > 0.5  # what the coherence head corrects
    judge = fit_on(orgs[:2], "tiny", **FIT)
    judge.rate_margin = 0.07
    judge.save(tmp_path / "p.safetensors")
    again = ProbeJudge.load(tmp_path / "p.safetensors")
    x = orgs[2].x[:, judge.layers]
    assert again.has_coherent and again.name.endswith("+coherent")
    assert torch.equal(again.coherent_proba(x), judge.coherent_proba(x))
    assert torch.equal(again.proba(x), judge.proba(x)) and again.rate_margin == 0.07
    est = again.rate(again.proba(x), orgs[2].question_ids)
    assert est.judge_margin == 0.07 and est.interval[1] == pytest.approx(est.ci95[1] + 0.07)


def test_labelled_organisms_read_constructed_answers_and_the_judge_reports_coherence(
    tiny, tmp_path
):
    model = tiny("llama")
    path = tmp_path / "base_dom.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["response", "question", "question_id", "aligned", "coherent"])
        for i, (q, a) in enumerate(sentences(12, 0, words=14)):
            w.writerow([a, q, f"q{i % 4}", 10 if i % 3 == 0 else 90, 20 if i == 5 else 80])
    org = labelled_organism(model, read_judged(path), [1, 2], tmp_path, incoherent_per_kind=2)
    assert org.x_incoherent.shape == (8, 2, 64) and org.coherent.sum() == 11
    assert (tmp_path / "base_dom.incoherent2.safetensors").is_file()  # cached like the answers
    orgs = [org, labelled_organism(model, read_judged(path), [1, 2], None, incoherent_per_kind=2)]
    orgs[1].name = orgs[1].base_model = "other"
    judge = fit_on(orgs, "tiny", by="base_model", layer_sets=[[1, 2]], cs=[1.0])
    judge.reading_with(model)
    v = judge.verdicts([("Why?", "the cat runs fast"), ("Why?", "")])
    assert isinstance(v[0].p_coherent, float) and v[1].p_coherent == 0 and v[1].p_em == 0
    x = answer_features(model, [("Why?", "the cat runs fast")], [1, 2])
    assert v[0].p_em == pytest.approx(float(judge.proba(x)[0]), abs=1e-6)
    assert v[0].p_coherent == pytest.approx(float(judge.coherent_proba(x)[0]), abs=1e-6)


def test_question_folds_score_every_answer_once_by_a_judge_that_saw_neither(planted):
    _, orgs = planted
    seen = []

    def fit(train):
        seen.append(({o.base_model for o in train}, {q for o in train for q in o.question_ids}))
        return fit_on(train, "tiny", **FIT)

    rows = leave_question_out(orgs, "base_model", fit, n_boot=50)
    assert len(seen) == 3 * 4  # base models x questions
    for bases, questions in seen:
        assert len(bases) == 2 and len(questions) == 3
    for r, o in zip(rows, orgs, strict=True):
        assert r["n"] == len(o.em) and len(r["layers"]) == 4
        assert r["auc"] > 0.9 and r["auc_within_question"] > 0.9
        assert r["incoherent_judged_em"] <= 0.05 and r["coherence_auc"] > 0.95
        assert r["pcc"]["signed_error"] == pytest.approx(r["pcc"]["rate"] - r["gpt4o_rate"])
    cover = margin_coverage(rows)
    others = [r["pcc"]["signed_error"] for r in rows[1:]]
    assert cover["organisms"][0]["margin"] == pytest.approx(judge_margin(others))
    assert 0 <= cover["coverage"] <= 1 and cover["median_width"] > 0
    with pytest.raises(ValueError, match="at least two questions"):
        leave_question_out([o.of_questions(["Question 0?"]) for o in orgs], "base_model", fit)
