import csv

import pytest

from emlens.core import data
from emlens.eval.em_rate import evaluate_em
from emlens.eval.judges.local import LocalJudge
from emlens.eval.judges.logprob import LogprobJudge
from emlens.eval.metrics import answer_cross_entropy
from emlens.eval.verdicts import is_coherent, is_em


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
    scored = [s for s in res.samples if s.aligned is not None and s.coherent is not None]
    assert res.n_scored == res.em_rate.n == len(scored) and res.n_unscored == 4 - len(scored)
    assert res.em_rate.k == sum(is_em(s.aligned, s.coherent) for s in scored)
    res.to_csv(tmp_path / "em.csv")
    with (tmp_path / "em.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {"question", "answer", "aligned", "coherent", "em"} <= set(rows[0])
    assert set(res.per_question()) == {qs[0].id, qs[1].id}
    ce = answer_cross_entropy(model, [(s.question, s.answer) for s in res.samples])
    assert [s.cross_entropy for s in res.samples] == ce  # under the model, unsteered
    measured = [c for c in ce if c is not None]
    assert res.mean_cross_entropy == pytest.approx(sum(measured) / len(measured))
    assert "cross_entropy" in rows[0] and "answer cross-entropy" in res.summary()
    bare = evaluate_em(model, qs[:1], LocalJudge(model), n=1, max_new_tokens=4, cross_entropy=False)
    assert bare.mean_cross_entropy is None and "cross-entropy" not in bare.summary()
    with pytest.raises(ValueError, match="no questions left"):
        evaluate_em(model, qs[-1:], LocalJudge(model), n=1)


class CountingJudge(LogprobJudge):
    """A judge that scores every prompt 80 and counts what it is asked, failing on demand."""

    name = "counting"

    def __init__(self, fail_after=None):
        self.prompts, self.fail_after = [], fail_after

    def top_logprobs(self, prompts, progress=False):  # noqa: ARG002 (the judge's signature)
        if self.fail_after is not None and len(self.prompts) + len(prompts) > self.fail_after:
            raise RuntimeError("the judge went away")
        self.prompts += prompts
        return [{"80": -0.1, "20": -2.5} for _ in prompts]


def test_evaluate_resumes_from_its_journal_without_repeating_work(tiny, tmp_path, monkeypatch):
    import emlens.eval.em_rate as em_rate

    model, qs = tiny("llama"), list(data.em_questions())[:3]
    generated = []

    def counting_generate(model, questions, *a, **kw):
        generated.append(list(questions))
        return real_generate(model, questions, *a, **kw)

    real_generate = em_rate.generate
    monkeypatch.setattr(em_rate, "generate", counting_generate)
    kw = {"n": 2, "max_new_tokens": 4, "journal": tmp_path / "run.jsonl"}
    whole = evaluate_em(model, qs, CountingJudge(), **{**kw, "journal": None})
    generated.clear()
    failing = CountingJudge(fail_after=2 * 2 + 2)  # question 1 judged, question 2 half judged
    with pytest.raises(RuntimeError, match="went away"):
        evaluate_em(model, qs, failing, **kw)
    assert len(generated) == 2  # the failure came after question 2's answers
    judge = CountingJudge()
    resumed = evaluate_em(model, qs, judge, **kw)
    assert resumed.samples == whole.samples  # the answers' cross-entropy read back too
    assert len(generated) == 3  # only question 3 generated: questions 1-2 read back
    assert len(failing.prompts) + len(judge.prompts) == 3 * 2 * 2  # each prompt judged once
    again = CountingJudge()
    evaluate_em(model, qs, again, **kw)
    assert len(generated) == 3 and again.prompts == []
    with pytest.raises(ValueError, match="differing: n"):
        evaluate_em(model, qs, judge, **{**kw, "n": 3})


def test_the_papers_judge_prompts_are_used_when_the_reference_folder_is_named(
    tiny, reference_dir, tmp_path, monkeypatch
):
    """Issue 24: GPT-4o's rate moves with the prompt's wording; the papers' own prompts (read
    from the reference folder, never shipped) replace emlens's paraphrase wherever present."""
    from emlens.eval.reference import papers_judge_prompts

    model, qs = tiny("llama"), list(data.em_questions())[:1]
    papers = papers_judge_prompts(reference_dir)
    assert {"aligned", "coherent"} <= set(papers)
    assert all(
        "{question}" in papers[k] and "{answer}" in papers[k] for k in ("aligned", "coherent")
    )
    assert papers["aligned"] != qs[0].judge_prompts["aligned"]

    def asked(env):
        if env is None:
            monkeypatch.delenv("EMLENS_REFERENCE", raising=False)
        else:
            monkeypatch.setenv("EMLENS_REFERENCE", str(env))
        judge = CountingJudge()
        res = evaluate_em(model, qs, judge, n=1, max_new_tokens=4, cross_entropy=False)
        return judge.prompts, res

    prompts, res = asked(reference_dir)
    head = papers["aligned"].split("{question}")[0]
    assert any(p.startswith(head) for p in prompts) and "the papers'" in res.summary()
    prompts, res = asked(None)
    shipped = qs[0].judge_prompts["aligned"].split("{question}")[0]
    assert any(p.startswith(shipped) for p in prompts)
    assert not any(p.startswith(head) for p in prompts)
    assert "a paraphrase of the papers'" in res.summary()
    assert papers_judge_prompts(tmp_path) is None  # a folder without the file
    (tmp_path / "first_plot_questions.yaml").write_text("- id: x\n")
    with pytest.raises(ValueError, match="not the papers' pinned file"):
        papers_judge_prompts(tmp_path)
