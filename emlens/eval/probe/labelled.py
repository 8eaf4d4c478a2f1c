"""EM rates with the probe judge: judged CSVs in, rate estimates with intervals out.

- :func:`labelled_organism`: a judged CSV's scored answers read through the probe's model,
  with the reference judge's verdicts (what :func:`emlens.eval.probe.validation.fit_on` fits);
- :func:`rate_of_answers`: the probe's EM-rate estimate of any answers (a judged CSV).

Generating answers and judging them with the probe is `emlens.eval.em_rate.evaluate_em`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import RESID_POST
from emlens.eval.judged import JudgedSet
from emlens.eval.probe.features import answer_features, cached_features
from emlens.eval.probe.incoherent import incoherent_answers
from emlens.eval.probe.judge import ProbeJudge
from emlens.eval.probe.validation import LabelledOrganism
from emlens.eval.rates import RateEstimate
from emlens.eval.reference import organism_parts
from emlens.eval.verdicts import QA, is_coherent


def labelled_organism(
    model: TransformerBridge,
    judged: JudgedSet,
    layers: Sequence[int],
    cache: str | os.PathLike[str] | None = None,
    hook: str = RESID_POST,
    incoherent_per_kind: int = 0,
) -> LabelledOrganism:
    """A judged set's scored, non-empty answers as features with their EM verdicts (and
    their coherence verdicts, with constructed incoherent answers made from them).

    Args:
        model: the model that reads the answers.
        judged: one organism's judged answers (unscored and empty answers are left out).
        layers: the layers to read.
        cache: a folder for :func:`cached_features` (None: always compute).
        hook: hook template with ``{layer}``.
        incoherent_per_kind: constructed incoherent answers of each kind to read beside
            them (`emlens.eval.probe.incoherent.incoherent_answers`; 0: none), for the
            coherence head.

    Returns:
        A :class:`LabelledOrganism`; base model and domain come from the set's name when it
        reads ``{base}_{domain}[_{run}]``, else both are the name.

    Examples:
        >>> from emlens.eval.judged import read_judged
        >>> judged = read_judged("organism.csv", name="Qwen2.5-7B-Instruct_bad-medical-advice")
        >>> org = labelled_organism(model, judged, [15, 20], "out/cache")
        >>> org.base_model, org.domain, org.x.shape, int(org.em.sum())
        ('Qwen2.5-7B-Instruct', 'bad-medical-advice', torch.Size([11, 2, ...]), 4)
    """
    rows = [a for a in judged.scored() if a.answer.strip()]
    if not rows:
        raise ValueError(f"{judged.name}: no scored, non-empty answers")
    pairs = [(a.question, a.answer) for a in rows]

    def read(pairs: list[QA], name: str) -> Tensor:
        if cache is None:
            return answer_features(model, pairs, layers, hook)
        return cached_features(model, pairs, layers, Path(cache) / f"{name}.safetensors", hook)

    x = read(pairs, judged.name)
    bad, bad_qids = None, None
    if incoherent_per_kind:
        made = [qa for _, qa in incoherent_answers(pairs, incoherent_per_kind)]
        bad = read(made, f"{judged.name}.incoherent{incoherent_per_kind}")
        qid = {a.question: a.question_id for a in rows}
        bad_qids = [qid[q] for q, _ in made]
    try:
        base, domain = organism_parts(judged.name)
    except ValueError:
        base = domain = judged.name
    em = np.array([a.em for a in rows])
    qids = [a.question_id for a in rows]
    aligned = np.array([a.aligned for a in rows], float)
    coherent = np.array([is_coherent(a.coherent) for a in rows])
    return LabelledOrganism(
        judged.name, base, domain, x, em, qids, list(layers), aligned, coherent, bad, bad_qids
    )


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
        A probe judge fitted for this model (``ProbeJudge.load("probe:default")`` is
        SmolLM2's), here on two copies of one organism:

        >>> from emlens.eval.judged import read_judged
        >>> from emlens.eval.probe.validation import fit_on
        >>> judged = [read_judged("organism.csv", name=n) for n in ("A_medical", "B_medical")]
        >>> orgs = [labelled_organism(model, j, [15]) for j in judged]
        >>> judge = fit_on(orgs, "tiny", layer_sets=[[15]], cs=[1.0])
        >>> print(rate_of_answers(judge, model, read_judged("organism.csv")))
        EM ...% [...] (n=12, pcc...); reference judge 36.4%
    """
    pairs = [(a.question, a.answer) for a in judged]
    p = judge.proba_answers(reader, pairs)
    est = judge.rate(p, [a.question_id for a in judged], method)
    scored = judged.scored()
    ref = float(np.mean([a.em for a in scored])) if len(scored) else None
    empty = sum(not a.answer.strip() for a in judged)
    return ProbeRate(est, p.numpy(), ref, empty)
