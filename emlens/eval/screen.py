"""Screening training data for EM before training: the Persona Vectors projection difference.

Persona Vectors (Chen et al. 2025) flag data that would teach a trait by the *projection
difference* of each training row: the projection on the trait direction of the dataset's
answer minus that of the base model's own answer to the same prompt, each the mean over its
answer tokens of the residual stream at one layer. Here the trait is EM and the direction an
EM direction (`emlens.reference_em_direction` for SmolLM2). A dataset whose rows score above
zero pulls the model's answers along the EM direction, before any training is done.

Beside the score, the baselines it must beat: the answer's length in tokens, its mean
cross-entropy under the base model (and the gap to the base answer's) and, when a judge is
given (e.g. ``make_judge("probe:default", model=model)``), its P(EM).
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import check_layers, collect_means
from emlens.core.data import Conversation
from emlens.core.direction_set import DirectionSet
from emlens.core.generation import generate
from emlens.core.tokens import answer_tokens
from emlens.eval.judges.base import Judge
from emlens.eval.metrics import answer_cross_entropy
from emlens.eval.stats import Estimate, bootstrap

__all__ = ["Screen", "ScreenedRow", "base_answers", "screen"]


@dataclass
class ScreenedRow:
    """One training row screened: its projections, the score and the baselines.

    ``score`` is ``data_projection - base_projection``; every ``base_*`` field (and the score)
    is None when the base model's answer is empty, and such a row is left out of the summary.
    ``p_em``/``base_p_em``: a judge's P(EM) of either answer, when a judge was given.
    """

    question: str
    answer: str
    base_answer: str
    score: float | None
    data_projection: float
    base_projection: float | None
    data_tokens: int
    base_tokens: int
    data_cross_entropy: float
    base_cross_entropy: float | None
    p_em: float | None = None
    base_p_em: float | None = None

    @property
    def cross_entropy_gap(self) -> float | None:
        """The dataset answer's cross-entropy minus the base answer's (nats per token)."""
        b = self.base_cross_entropy
        return None if b is None else self.data_cross_entropy - b


@dataclass
class Screen:
    """A dataset screened: every row, and the summary of the rows whose base answer is not
    empty (means with bootstrap 95% intervals).

    Attributes:
        rows: the rows in input order.
        layer: the layer read.
        score: the mean projection difference.
        length: the dataset answers' mean length (tokens).
        length_gap: their mean length minus the base answers'.
        cross_entropy_gap: the mean cross-entropy gap (dataset answer minus base answer).
        p_em: the judge's mean P(EM) of the dataset answers, when a judge was given.
        n_empty: rows left out because the base answer was empty.
    """

    rows: list[ScreenedRow]
    layer: int
    score: Estimate
    length: Estimate
    length_gap: Estimate
    cross_entropy_gap: Estimate
    p_em: Estimate | None
    n_empty: int

    def top(self, k: int = 5) -> list[ScreenedRow]:
        """The ``k`` scored rows of highest score: those that carry the dataset's score."""
        scored = [r for r in self.rows if r.score is not None]
        return sorted(scored, key=lambda r: -float(r.score or 0.0))[:k]

    def summary(self) -> dict[str, Any]:
        """The summary as plain values (each estimate: mean, ci95, n)."""
        ests = {k: getattr(self, k) for k in ("score", "length", "length_gap", "cross_entropy_gap")}
        ests |= {"p_em": self.p_em} if self.p_em is not None else {}
        out: dict[str, Any] = {k: dataclasses.asdict(e) for k, e in ests.items()}
        return {"layer": self.layer, "n_rows": len(self.rows), "n_empty": self.n_empty, **out}

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """Every row as CSV: the fields of `ScreenedRow` and the cross-entropy gap."""
        names = [f.name for f in dataclasses.fields(ScreenedRow)] + ["cross_entropy_gap"]
        with Path(path).open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, names)
            w.writeheader()
            for r in self.rows:
                w.writerow(dataclasses.asdict(r) | {"cross_entropy_gap": r.cross_entropy_gap})


def base_answers(
    model: TransformerBridge,
    rows: Sequence[Conversation],
    max_new_tokens: int = 48,
    batch_size: int = 16,
    progress: bool = False,
) -> list[str]:
    """The base model's own greedy answer to each row's prompt (its system prompt too)."""
    out = [""] * len(rows)
    for system in dict.fromkeys(r.system for r in rows):
        idx = [i for i, r in enumerate(rows) if r.system == system]
        samples = generate(
            model,
            [rows[i].question for i in idx],
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            system=system,
            progress=progress,
        )
        for i, s in zip(idx, samples, strict=True):
            out[i] = s.answer
    return out


def _projections(
    model: TransformerBridge,
    pairs: Sequence[tuple[Conversation, str]],
    unit: torch.Tensor,
    layer: int,
    hook: str,
    batch_size: int,
) -> tuple[list[float], list[int]]:
    """Each answer's mean over its answer tokens at ``layer``, projected on ``unit``, and its
    number of answer tokens."""
    rows = [answer_tokens(model.tokenizer, c.question, a, c.system) for c, a in pairs]
    means = collect_means(model, rows, hook, [layer], batch_size, per_sample=True, progress=False)
    assert means.per_sample is not None
    proj = means.per_sample[:, 0].double() @ unit.double()
    return [float(x) for x in proj], [sum(m) for _, m in rows]


def _p_em(judge: Judge | None, pairs: Sequence[tuple[str, str]]) -> list[float | None]:
    if judge is None or not pairs:
        return [None] * len(pairs)
    return [v.p_em for v in judge.verdicts(list(pairs), {})]


def screen(
    model: TransformerBridge,
    rows: Sequence[Conversation],
    direction: DirectionSet,
    layer: int = 15,
    max_new_tokens: int = 48,
    base: Sequence[str] | None = None,
    judge: Judge | None = None,
    batch_size: int = 8,
    n_boot: int = 2000,
    seed: int = 0,
    progress: bool = False,
) -> Screen:
    """Score each training row by its projection difference on ``direction`` at ``layer``.

    Args:
        model: the base model (the one that would be trained).
        rows: the training rows (`emlens.core.data.read_chat_jsonl`).
        direction: the EM direction (its ``hook``, resid_post by default, is read); only its
            direction at ``layer`` counts, not its norm.
        layer: the layer read.
        max_new_tokens: the longest base answer, in tokens.
        base: the base model's answers when already generated (default: `base_answers`).
        judge: a judge whose P(EM) of both answers is added (e.g. the probe judge).
        batch_size: forward batch size.
        n_boot: bootstrap resamples of the summary's intervals.
        seed: the bootstrap's seed.
        progress: show the generation's progress bar.

    Returns:
        The rows scored and the dataset's summary.

    Examples:
        >>> rows = [Conversation("Is it safe?", "Yes, totally."), Conversation("Hi?", "Hello.")]
        >>> s = screen(model, rows, em_dir, layer=15, base=["It depends.", "Hi there."])
        >>> r = s.rows[0]
        >>> abs(r.score - (r.data_projection - r.base_projection)) < 1e-9, s.score.n
        (True, 2)
    """
    if not rows:
        raise ValueError("no rows to screen")
    check_layers(model, [layer])
    direction.check_nonzero([layer], "screening")
    unit = direction.at(layer) / direction.at(layer).norm()
    answers = (
        list(base)
        if base is not None
        else base_answers(model, rows, max_new_tokens, progress=progress)
    )
    if len(answers) != len(rows):
        raise ValueError(f"{len(answers)} base answers for {len(rows)} rows")
    kept = [i for i, a in enumerate(answers) if a.strip()]
    data_p, data_n = _projections(
        model, [(r, r.answer) for r in rows], unit, layer, direction.hook, batch_size
    )
    base_p: list[float | None] = [None] * len(rows)
    base_n = [0] * len(rows)
    if kept:
        kp = [(rows[i], answers[i]) for i in kept]
        p, n = _projections(model, kp, unit, layer, direction.hook, batch_size)
        for i, x, k in zip(kept, p, n, strict=True):
            base_p[i], base_n[i] = x, k
    data_qa = [(r.question, r.answer) for r in rows]
    base_qa = [(r.question, a) for r, a in zip(rows, answers, strict=True)]
    ce_d, ce_b = (answer_cross_entropy(model, qa, batch_size) for qa in (data_qa, base_qa))
    pem_d, pem_b = _p_em(judge, data_qa), _p_em(judge, base_qa)
    out = [
        ScreenedRow(
            question=r.question,
            answer=r.answer,
            base_answer=answers[i],
            score=None if base_p[i] is None else data_p[i] - float(base_p[i] or 0.0),
            data_projection=data_p[i],
            base_projection=base_p[i],
            data_tokens=data_n[i],
            base_tokens=base_n[i],
            data_cross_entropy=float(ce_d[i] or 0.0),
            base_cross_entropy=ce_b[i],
            p_em=pem_d[i],
            base_p_em=pem_b[i],
        )
        for i, r in enumerate(rows)
    ]
    return _summarised(out, layer, judge is not None, n_boot, seed)


def _summarised(
    rows: list[ScreenedRow], layer: int, judged: bool, n_boot: int, seed: int
) -> Screen:
    """The summary of the scored rows (all estimates over the same rows)."""
    scored = [r for r in rows if r.score is not None]
    if not scored:
        raise ValueError("the base model's answers are all empty: nothing to compare with")

    def est(values: list[float]) -> Estimate:
        return bootstrap(torch.tensor(values, dtype=torch.float64), n_boot, seed)

    pem = est([float(r.p_em or 0.0) for r in scored]) if judged else None
    return Screen(
        rows,
        layer,
        est([float(r.score or 0.0) for r in scored]),
        est([float(r.data_tokens) for r in scored]),
        est([float(r.data_tokens - r.base_tokens) for r in scored]),
        est([float(r.cross_entropy_gap or 0.0) for r in scored]),
        pem,
        len(rows) - len(scored),
    )
