"""The probe judge: a planted direction is found, shuffled labels are not; files round-trip."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from emlens.core.interventions import Steer, applied
from emlens.eval.probe.features import answer_features, cached_features
from emlens.eval.probe.fit import fit_probe_judge
from emlens.eval.probe.judge import ProbeJudge
from emlens.eval.probe.validation import (
    LabelledOrganism,
    calibration_error,
    fit_on,
    leave_group_out,
    summary,
)

WORDS = "the a cat dog runs sleeps money health fast slow river stone blue green".split()
FIT = {"layer_sets": [[1], [2], [1, 2]], "cs": [0.3, 30.0]}


def answers(n, seed):
    rng = np.random.default_rng(seed)
    return [
        (f"Question {i % 4}?", " ".join(rng.choice(WORDS, size=rng.integers(3, 9))))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def planted(tiny):
    """Three 'organisms' of tiny-llama answers; the EM ones (30%, at random) are read with a
    direction planted in the residual stream at layer 0 (a steering vector of norm 3)."""
    model = tiny("llama")
    torch.manual_seed(0)
    u = torch.nn.functional.normalize(torch.randn(1, 64), dim=-1) * 3
    rng = np.random.default_rng(0)
    orgs = []
    for k in range(3):
        pairs = answers(60, k)
        em = rng.random(len(pairs)) < 0.3
        x = answer_features(model, pairs, [0, 1, 2], batch_size=16)
        with applied(model, [Steer(u, (0,), 1.0)]):
            x[em] = answer_features(model, [pairs[i] for i in np.flatnonzero(em)], [0, 1, 2])
        noise = np.random.default_rng(k).normal(0, 3, len(em))
        aligned = np.where(em, 10.0, 85.0) + noise  # the judge's score
        qids = [q for q, _ in pairs]
        orgs.append(
            LabelledOrganism(f"base{k}_dom", f"base{k}", "dom", x, em, qids, [0, 1, 2], aligned)
        )
    return model, orgs


def test_probe_recovers_a_planted_direction_on_held_out_organisms(planted):
    _, orgs = planted
    judge = fit_on(orgs[:2], "tiny-llama", **FIT)
    held = orgs[2]
    assert roc_auc_score(held.em, judge.proba(held.x[:, judge.layers]).numpy()) > 0.97
    assert judge.errors.tpr - judge.errors.fpr > 0.4
    assert judge.meta["training_organisms"] == ["base0_dom", "base1_dom"]
    pred = judge.aligned_score(held.x[:, judge.layers]).numpy()  # the aligned-score head
    assert np.corrcoef(pred, held.aligned)[0, 1] > 0.8 and ((pred >= 0) & (pred <= 100)).all()


def test_probe_on_shuffled_labels_is_at_chance(planted):
    _, orgs = planted
    rng = np.random.default_rng(0)
    shuffled = [
        LabelledOrganism(
            o.name, o.base_model, o.domain, o.x, rng.permutation(o.em), o.question_ids, o.layers
        )  # no aligned scores: no aligned head
        for o in orgs
    ]
    x = torch.cat([o.x for o in shuffled])
    y = np.concatenate([o.em for o in shuffled])
    groups = [o.name for o in shuffled for _ in o.em]
    judge = fit_probe_judge(x[:120], y[:120], groups[:120], [0, 1, 2], "tiny-llama", **FIT)
    held = shuffled[2]
    auc = roc_auc_score(held.em, judge.proba(held.x[:, judge.layers]).numpy())
    assert abs(auc - 0.5) < 0.15
    assert judge.meta["validation"]["best"]["auc"] < 0.7


def test_leave_group_out_scores_every_held_out_organism(planted):
    _, orgs = planted

    def fit(train):
        return fit_on(train, "tiny-llama", **FIT)

    rows = leave_group_out(orgs, "base_model", fit, n_boot=100)
    assert [r["held_out"] for r in rows] == ["base0", "base1", "base2"]
    for r in rows:
        assert r["auc"] > 0.9 and 0 < r["gpt4o_rate"] < 100
        for m in ("cc", "acc", "pcc", "pacc"):
            lo, hi = r[m]["ci95"]
            assert lo <= r[m]["rate"] <= hi and r[m]["error"] >= 0
    s = summary(rows)
    assert s["auc_min"] > 0.9 and s["rate_error_max"] >= s["rate_error_median"]


def test_calibration_error():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    assert calibration_error(p, rng.random(len(p)) < p) < 0.01
    assert calibration_error(np.full(100, 0.9), np.zeros(100, bool)) == pytest.approx(0.9)


def test_probe_file_round_trip_and_checks(planted, tmp_path):
    model, orgs = planted
    judge = fit_on(orgs, "tiny-llama", **FIT)
    judge.save(tmp_path / "p.safetensors")
    again = ProbeJudge.load(tmp_path / "p.safetensors")
    x = orgs[0].x[:, judge.layers]
    assert torch.equal(again.proba(x), judge.proba(x))
    assert again.meta == judge.meta and again.errors == judge.errors
    assert again.layers == judge.layers and again.model == "tiny-llama"
    assert torch.equal(again.aligned_score(x), judge.aligned_score(x))
    with pytest.raises(ValueError, match="features must be"):
        judge.proba(orgs[0].x[:, :1].repeat(1, 4, 1))
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an emlens probe"):
        ProbeJudge.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        ProbeJudge.load(tmp_path / "missing.safetensors")
    p = judge.proba_answers(model, [("Why?", "the cat runs"), ("Why?", "  ")])
    assert p[1] == 0 and 0 < p[0] < 1


def test_cached_features_are_reused_only_for_the_same_texts(tiny, tmp_path):
    model = tiny("llama")
    pairs = answers(6, 0)
    path = tmp_path / "f.safetensors"
    x = cached_features(model, pairs, [1, 2], path)
    stamp = path.stat().st_mtime_ns
    assert torch.equal(cached_features(model, pairs, [1, 2], path), x)
    assert path.stat().st_mtime_ns == stamp
    y = cached_features(model, pairs[:5], [2], path)  # other texts and layers: recomputed
    assert path.stat().st_mtime_ns != stamp
    assert y.shape == (5, 1, 64) and torch.allclose(y[:, 0], x[:5, 1], atol=1e-5)


def test_template_features_equal_collect_means_on_their_masks(tiny, one_thread):  # noqa: ARG001
    from emlens.core.activations import collect_means
    from emlens.eval.probe.features import template_features, template_tokens

    model = tiny("qwen2")
    pairs = answers(5, 1)
    got = template_features(model, pairs, [0, 2], batch_size=2)  # padded batches
    rows = [template_tokens(model.tokenizer, q, a) for q, a in pairs]
    last = [(ids, [i == len(ids) - 1 for i in range(len(ids))]) for ids, _ in rows]
    for key, rs in (("mean", rows), ("last", last)):
        want = collect_means(model, rs, layers=[0, 2], per_sample=True, progress=False)
        assert torch.allclose(got[key], want.per_sample, atol=1e-4), key
    ids, mask = rows[0]
    assert model.tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m]) == pairs[0][1]


def test_answer_token_states_average_to_the_answer_means(tiny, one_thread):  # noqa: ARG001
    from emlens.eval.probe.features import answer_token_states

    model = tiny("llama")
    pairs = answers(5, 2)
    states, counts = answer_token_states(model, pairs, [1, 2], batch_size=2)
    means = answer_features(model, pairs, [1, 2])
    starts = np.cumsum([0, *counts])
    for i in range(len(pairs)):
        got = states[starts[i] : starts[i + 1]].float().mean(0)
        assert torch.allclose(got, means[i], atol=2e-2 * means[i].abs().max())


def test_evaluate_em_with_the_probe_judge_resumes_from_its_journal(planted, tmp_path):
    """make_judge("probe:FILE") is a judge evaluate_em runs with its journal: a run killed while
    reading question 2 resumes without re-reading question 1, and gives the whole run's P(EM)."""
    from emlens.core import data
    from emlens.eval.em_rate import evaluate_em
    from emlens.eval.judge_spec import make_judge

    model, orgs = planted
    fit_on(orgs, "tiny-llama", **FIT).save(tmp_path / "p.safetensors")
    judge = make_judge(f"probe:{tmp_path / 'p.safetensors'}", model=model)
    assert isinstance(judge, ProbeJudge) and judge.reader is not None
    read, rows = [], judge._rows

    def counting_rows(pairs, fail_at=None):
        if len(read) == fail_at:
            raise RuntimeError("killed")
        read.append(len(pairs))
        return rows(pairs)

    qs = list(data.em_questions())[:3]
    kw = {"n": 2, "max_new_tokens": 4, "progress": False}
    whole = evaluate_em(model, qs, judge, **kw)
    assert all(s.p_em is not None and 0 <= s.p_em <= 1 for s in whole.samples)
    assert whole.em_rate.n == len(whole.samples) == 3 * 2 * len(qs[0].paraphrases)
    kw["journal"] = tmp_path / "run.jsonl"
    judge._rows = lambda pairs: counting_rows(pairs, fail_at=1)  # killed reading question 2
    with pytest.raises(RuntimeError, match="killed"):
        evaluate_em(model, qs, judge, **kw)
    assert len(read) == 1
    judge._rows = counting_rows
    resumed = evaluate_em(model, qs, judge, **kw)
    assert len(read) == 3  # questions 2 and 3 read, question 1 from the journal
    assert [s.p_em for s in resumed.samples] == pytest.approx([s.p_em for s in whole.samples])
    assert [s.answer for s in resumed.samples] == [s.answer for s in whole.samples]
    assert str(resumed.em_rate) == str(whole.em_rate)
