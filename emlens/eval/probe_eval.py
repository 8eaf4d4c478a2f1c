"""EM rates with the probe judge: judged CSVs in, rate estimates with intervals out.

- :func:`labelled_organism`: a judged CSV's scored answers read through the probe's model,
  with the reference judge's verdicts (what :func:`emlens.eval.judge_validation.fit_on` fits);
- :func:`rate_of_answers`: the probe's EM-rate estimate of any answers (a CSV, generations);
- :func:`evaluate_probe`: generate answers to the EM questions and estimate their EM rate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import RESID_POST
from emlens.core.data import Question
from emlens.core.generation import generate
from emlens.core.interventions import Intervention
from emlens.eval.judge_validation import LabelledOrganism
from emlens.eval.judged import JudgedSet
from emlens.eval.probe_features import cached_features
from emlens.eval.probe_judge import ProbeJudge
from emlens.eval.quantify import RateEstimate
from emlens.eval.reference import organism_parts


def labelled_organism(
    model: TransformerBridge,
    judged: JudgedSet,
    layers: Sequence[int],
    cache: str | os.PathLike[str] | None = None,
    hook: str = RESID_POST,
) -> LabelledOrganism:
    """A judged set's scored, non-empty answers as features with their EM verdicts.

    Args:
        model: the model that reads the answers.
        judged: one organism's judged answers (unscored and empty answers are left out).
        layers: the layers to read.
        cache: a folder for :func:`cached_features` (None: always compute).
        hook: hook template with ``{layer}``.

    Returns:
        A :class:`LabelledOrganism`; base model and domain come from the set's name when it
        reads ``{base}_{domain}[_{run}]``, else both are the name.

    Examples:
        >>> org = labelled_organism(model, read_judged("org.csv.gz"), range(30), "out/cache")
    """
    rows = [a for a in judged.scored() if a.answer.strip()]
    if not rows:
        raise ValueError(f"{judged.name}: no scored, non-empty answers")
    pairs = [(a.question, a.answer) for a in rows]
    if cache is None:
        from emlens.eval.probe_features import answer_features

        x = answer_features(model, pairs, layers, hook)
    else:
        x = cached_features(model, pairs, layers, Path(cache) / f"{judged.name}.safetensors", hook)
    try:
        base, domain = organism_parts(judged.name)
    except ValueError:
        base = domain = judged.name
    em = np.array([a.em for a in rows])
    qids = [a.question_id for a in rows]
    aligned = np.array([a.aligned for a in rows], float)
    return LabelledOrganism(judged.name, base, domain, x, em, qids, list(layers), aligned)


@dataclass
class ProbeRate:
    """The probe's EM-rate estimate of a set of answers, beside the reference judge's rate
    when the answers carry its scores."""

    estimate: RateEstimate
    p: np.ndarray
    reference_rate: float | None = None
    n_empty: int = 0

    def __str__(self) -> str:
        ref = (
            ""
            if self.reference_rate is None
            else f"; reference judge {100 * self.reference_rate:.1f}%"
        )
        return f"EM {self.estimate}{ref}"


def rate_of_answers(
    judge: ProbeJudge,
    reader: TransformerBridge,
    judged: JudgedSet,
    method: str = "pcc",
) -> ProbeRate:
    """The probe's EM-rate estimate of every answer of ``judged`` (scored or not).

    Examples:
        >>> print(rate_of_answers(ProbeJudge.load("probe:default"), model, read_judged(path)))
    """
    pairs = [(a.question, a.answer) for a in judged]
    p = judge.proba_answers(reader, pairs)
    est = judge.rate(p, [a.question_id for a in judged], method)
    scored = judged.scored()
    ref = float(np.mean([a.em for a in scored])) if len(scored) else None
    empty = sum(not a.answer.strip() for a in judged)
    return ProbeRate(est, p.numpy(), ref, empty)


def evaluate_probe(
    model: TransformerBridge,
    reader: TransformerBridge,
    questions: Sequence[Question],
    judge: ProbeJudge,
    interventions: Sequence[Intervention] = (),
    n: int = 50,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
    seed: int = 0,
    method: str = "pcc",
) -> tuple[ProbeRate, JudgedSet]:
    """Sample ``n`` answers per free-form question from ``model`` (under ``interventions``),
    read them with ``reader`` (the probe's model, without interventions), estimate the EM rate.

    Returns:
        The estimate and the answers (unscored, with P(EM) in ``extra["p_em"]``).

    Examples:
        >>> est, answers = evaluate_probe(model, model, em_questions(), ProbeJudge.load(path))
    """
    from emlens.eval.judged import JudgedAnswer

    answers = []
    for q in (q for q in questions if q.free_form):
        gens = generate(
            model,
            q.paraphrases,
            interventions,
            n=n,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
            system=q.system,
        )
        answers += [JudgedAnswer(q.id, g.question, g.answer, None, None) for g in gens]
    if not answers:
        raise ValueError("no free-form questions to evaluate")
    judged = JudgedSet(answers, "generated")
    res = rate_of_answers(judge, reader, judged, method)
    for a, p in zip(answers, res.p, strict=True):
        a.extra["p_em"] = f"{p:.4f}"
    return res, judged
