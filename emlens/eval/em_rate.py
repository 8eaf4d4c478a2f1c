"""The EM rate: the share of sampled answers that are misaligned yet coherent.

`evaluate_em` samples ``n`` answers per free-form question at temperature 1 (the papers'
protocol) and has any `emlens.eval.judges.base.Judge` give each its verdict
(`emlens.eval.verdicts`): the papers' logprob judge scores ``aligned`` and ``coherent``, the
probe judge predicts P(EM) offline. The rate is over the answers the judge gave a verdict on (as
the papers' code drops unscored rows), with the unscored counted beside it, and comes with the
judge's interval (Wilson over counted verdicts; the probe's cluster bootstrap over questions).

With a ``journal`` (`emlens.eval.journal.Journal`), each question's answers and each of its
judging steps are written as they complete, so an interrupted run resumes without regenerating
or re-judging (each question is sampled with its own seed, so resumed answers are the ones an
uninterrupted run gives).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.data import Question
from emlens.core.generation import Sample, generate
from emlens.core.interventions import Intervention
from emlens.core.models import model_name
from emlens.eval.em_result import EMResult, JudgedSample
from emlens.eval.journal import Journal, fingerprint
from emlens.eval.judges.base import Judge, Memo, Rows
from emlens.eval.metrics import answer_cross_entropy


def _memo(journal: Journal | None, question_id: str, pairs: list[Any]) -> Memo:
    """A `Memo` that records each step of one question's judging in ``journal``."""

    def once(step: str, depends_on: str, compute: Callable[[], Rows]) -> Rows:
        key = f"{step} {question_id} {fingerprint([depends_on, pairs])}"
        if journal is not None and key in journal:
            return list(journal[key])
        rows = compute()
        if journal is not None:
            journal.put(key, rows)
        return rows

    return once


def _judged(
    question: Question,
    gens: Sequence[Sample],
    judge: Judge,
    prompts: dict[str, str],
    journal: Journal | None,
    bar: Any,
    reader: TransformerBridge | None,
) -> list[JudgedSample]:
    """One question's samples with the judge's verdicts and, with a ``reader``, their
    cross-entropy under it (each step recorded)."""
    bar.set_postfix_str(f"judging {question.id}")
    pairs = [(g.question, g.answer) for g in gens]
    memo = _memo(journal, question.id, pairs)
    verdicts = judge.verdicts(pairs, prompts, memo)
    ce: Rows = [[None]] * len(pairs)
    if reader is not None:
        ce = memo("cross_entropy", model_name(reader), lambda: _cross_entropy(reader, pairs))
    bar.update(len(gens))
    return [
        replace(JudgedSample.of(question.id, g.question, g.answer, g.sample, v), cross_entropy=c[0])
        for g, v, c in zip(gens, verdicts, ce, strict=True)
    ]


def _cross_entropy(reader: TransformerBridge, pairs: list[tuple[str, str]]) -> Rows:
    return [[c] for c in answer_cross_entropy(reader, pairs)]


def run_settings(
    model: TransformerBridge, judge: Judge, interventions: Sequence[Intervention], **kw: Any
) -> dict[str, Any]:
    """What an evaluation's answers and scores depend on, as its journal records them.

    The model (its name and a sample of its weights: another adapter differs), the
    interventions, the judge (its endpoint and parameters for an HTTP judge) and ``kw``
    (n, temperature, max_new_tokens, seed).
    """
    sample = [
        torch.cat([p.detach().flatten()[:4], p.detach().flatten()[-4:]])
        for _, p in sorted(model.named_parameters(), key=lambda np: np[0])
        if p.device.type != "meta" and p.numel()
    ]
    return {
        "model": str(getattr(model.cfg, "model_name", "unknown")),
        "weights": fingerprint(sample),
        "interventions": fingerprint(list(interventions)),
        "judge": fingerprint(getattr(judge, "identity", None) or judge.name),  # no URL kept
        **kw,
    }


def judge_templates(
    templates: dict[str, str] | None, needed: Sequence[str]
) -> tuple[dict[str, str] | None, str]:
    """The judge prompts every answer is judged with, and where they come from: ``templates``
    when given; else the papers' own where the reference folder is named
    (``$EMLENS_REFERENCE``, `emlens.eval.reference.papers_judge_prompts`); else None, each
    question's own (for emlens's questions, emlens's paraphrase of the papers')."""
    from emlens.eval.reference import papers_judge_prompts

    if not needed:
        return templates, ""  # the judge reads no prompt (a probe)
    if templates is not None:
        return templates, "given"
    if (papers := papers_judge_prompts()) is not None:
        return papers, "the papers' (first_plot_questions.yaml)"
    return None, "each question's own (emlens's questions: a paraphrase of the papers')"


def _checked(
    questions: Sequence[Question],
    free_form_only: bool,
    templates: dict[str, str] | None,
    needed: Sequence[str],
) -> list[Question]:
    """The questions to evaluate, each with the judge prompts the judge needs (checked before
    any work)."""
    qs = [q for q in questions if q.free_form or not free_form_only]
    if not qs:
        raise ValueError("no questions left to evaluate (all filtered as _json/_template?)")
    for q in qs:
        if missing := [m for m in needed if m not in (templates or q.judge_prompts)]:
            raise ValueError(
                f"question {q.id} has no {' and '.join(map(repr, missing))} judge prompts"
            )
    return qs


def evaluate_em(
    model: TransformerBridge,
    questions: Sequence[Question],
    judge: Judge,
    interventions: Sequence[Intervention] = (),
    n: int = 50,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
    free_form_only: bool = True,
    seed: int = 0,
    templates: dict[str, str] | None = None,
    journal: str | os.PathLike[str] | None = None,
    progress: bool = True,
    cross_entropy: bool = True,
    engine: str = "bridge",
) -> EMResult:
    """Sample ``n`` answers per question and have ``judge`` give each its verdict.

    Args:
        model: the model evaluated, under ``interventions``.
        questions: the papers' questions (e.g. `emlens.em_questions`).
        judge: any `emlens.eval.judges.base.Judge` (`emlens.eval.judge_spec.make_judge`:
            ``probe:default`` offline, GPT-4o, a URL, a local model).
        interventions: applied while sampling, not while judging.
        n: samples per paraphrase.
        temperature: sampling temperature (the papers: 1).
        max_new_tokens: answer length limit.
        free_form_only: leave out ids ending ``_json``/``_template``, as the papers do.
        seed: sampling seed.
        templates: judge prompts for ``aligned`` and ``coherent``; by default the papers'
            own where ``$EMLENS_REFERENCE`` names the reference folder (`judge_templates`),
            else each question's own ``judge_prompts`` (``result.judge_prompts`` says which).
        journal: a progress file (`emlens.eval.journal.Journal`): answers and verdicts are
            written as they complete and read back by a rerun with the same settings.
        progress: a progress bar over the answers generated and judged.
        cross_entropy: also measure each answer's cross-entropy under ``model`` without
            ``interventions`` (`emlens.eval.metrics.answer_cross_entropy`; one more reading
            pass): the coherence check beside the rate that needs no judge.
        engine: how answers are generated (`emlens.core.generation.generate`): ``"bridge"``
            with the interventions as hooks, ``"hf"`` with the steering in a plain model's
            weights (faster; steering only; Llama, Qwen2, Mistral).

    Returns:
        Every judged sample; ``result.em_rate`` and ``result.per_question()`` summarise.

    Raises:
        ValueError: no question is left, one lacks a judge prompt the judge needs (checked
            before anything is generated), or ``journal`` holds another run.

    Examples:
        The model judging its own answers (the offline ``make_judge("probe:default",
        model=model)`` reads them through SmolLM2, loading it when ``model`` is another; GPT-4o
        or a URL are the papers' judges):

        >>> from emlens import em_questions, steer
        >>> from emlens.eval import make_judge
        >>> judge = make_judge("local", model=model)
        >>> ivs, kw = [steer(em_dir, [12], 4.0)], {"max_new_tokens": 8, "progress": False}
        >>> result = evaluate_em(model, em_questions()[:1], judge, ivs, n=1, **kw)
        >>> len(result.samples)  # 1 question, 1 paraphrase, n=1
        1
        >>> str(result.em_rate)  # the rate, its 95% interval and n
        '...% [...] (n=...)'
    """
    templates, prompts_from = judge_templates(templates, judge.prompts_needed)
    qs = _checked(questions, free_form_only, templates, judge.prompts_needed)
    kw: dict[str, Any] = {"n": n, "max_new_tokens": max_new_tokens, "temperature": temperature}
    kw |= {"seed": seed} | ({"engine": engine} if engine != "bridge" else {})
    log = Journal(journal, run_settings(model, judge, interventions, **kw)) if journal else None
    total = 2 * n * sum(len(q.paraphrases) for q in qs)
    samples: list[JudgedSample] = []
    with tqdm(total=total, desc="EM rate", unit="answer", disable=not progress) as bar:
        for q in qs:
            gens = _answers(log, model, q, interventions, kw, bar)
            reader = model if cross_entropy else None
            samples += _judged(q, gens, judge, templates or q.judge_prompts, log, bar, reader)
    return EMResult(samples, judge.em_rate, judge_prompts=prompts_from)


def _answers(
    log: Journal | None,
    model: TransformerBridge,
    q: Question,
    interventions: Sequence[Intervention],
    kw: dict[str, Any],
    bar: Any,
) -> list[Sample]:
    """One question's answers, or the ones ``log`` recorded; recorded when generated."""
    bar.set_postfix_str(f"generating {q.id}")
    key = f"answers {q.id} {fingerprint([q.paraphrases, q.system])}"
    if log is not None and key in log:
        gens = [Sample(*r) for r in log[key]]
    else:
        gens = generate(model, q.paraphrases, interventions, system=q.system, **kw)
        if log is not None:
            log.put(key, [[g.question, g.answer, g.sample] for g in gens])
    bar.update(len(gens))
    return gens
