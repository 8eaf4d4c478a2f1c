"""Validated the way the judge is used: on a base model *and* a question it did not fit on.

The reference organisms all answer the same questions, so a judge validated by leaving out an
organism or a base model still sees every question in training, and knowing only the question
ranks EM well (some questions draw far more EM answers than others). emlens uses the judge on
its own questions. Here each fold leaves out one value of ``by`` (a base model, a domain) and
one question at once: the judge is fitted on the other organisms' answers to the other
questions and scores the held-out organisms' answers to the held-out question. Every answer is
scored once, by a judge that saw neither its organism's ``by`` nor its question; each
organism's figures (`emlens.eval.probe.validation.figures`) are then computed from all its
answers' scores. The rate estimators are those that need no error rates of one judge (``pcc``,
``cc``): each answer was scored by another fold's judge.

The judge's margin of error on rates (`emlens.eval.rates.judge_margin`) is measured the same
way: each organism's interval is widened by the margin from the *other* ``by`` values'
organisms' errors, and `margin_coverage` counts the organisms whose reference rate it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from emlens.eval.probe.validation import Fitter, Judged, LabelledOrganism, figures, judged_by
from emlens.eval.rates import ErrorRates, judge_margin

METHODS = ("pcc", "cc")
NO_CORRECTION = ErrorRates(1.0, 0.0)  # pcc and cc read no error rates


def leave_question_out(
    organisms: Sequence[LabelledOrganism], by: str, fit: Fitter, n_boot: int = 1000
) -> list[dict[str, Any]]:
    """Fit on all but one value of ``by`` and one question, score that value's answers to it.

    Args:
        organisms: the labelled organisms (with constructed incoherent answers, their
            questions known, where the coherence head is wanted).
        by: the attribute whose values are held out (``base_model`` or ``domain``).
        fit: fits a judge on a list of organisms (validating inside them only).
        n_boot: bootstrap resamples per interval.

    Returns:
        One row per organism (`figures`, methods ``pcc`` and ``cc``) with ``held_out`` and
        the layers each fold's judge chose.
    """
    questions = sorted({q for o in organisms for q in o.question_ids})
    if len(questions) < 2:
        raise ValueError("leaving a question out needs answers to at least two questions")
    parts: dict[str, list[tuple[LabelledOrganism, Judged]]] = {o.name: [] for o in organisms}
    chosen: dict[str, list[list[int]]] = {o.name: [] for o in organisms}
    threshold = 0.5
    for value in dict.fromkeys(getattr(o, by) for o in organisms):
        test = [o for o in organisms if getattr(o, by) == value]
        for q in questions:
            others = [x for x in questions if x != q]
            judge = fit([o.of_questions(others) for o in organisms if getattr(o, by) != value])
            threshold = judge.threshold
            for o in test:
                held = o.of_questions([q])
                if len(held.em):
                    parts[o.name].append((held, judged_by(judge, held)))
                    chosen[o.name].append(judge.layers)
    rows = []
    for o in organisms:
        org, judged = _joined(parts[o.name])
        row = figures(org, judged, threshold, NO_CORRECTION, METHODS, n_boot)
        rows.append({"held_out": getattr(o, by), **row, "layers": chosen[o.name]})
    return rows


def _joined(parts: list[tuple[LabelledOrganism, Judged]]) -> tuple[LabelledOrganism, Judged]:
    """One organism's question folds put back together (answers in fold order)."""
    orgs, judged = zip(*parts, strict=True)

    def cat(xs: Sequence[np.ndarray | None]) -> Any:
        return None if any(x is None for x in xs) else np.concatenate(list(xs))

    org = replace(
        orgs[0],
        x=torch.cat([o.x for o in orgs]),
        em=cat([o.em for o in orgs]),
        question_ids=[q for o in orgs for q in o.question_ids],
        aligned=cat([o.aligned for o in orgs]),
        coherent=cat([o.coherent for o in orgs]),
    )
    fields = ("p", "aligned", "p_made", "p_coherent", "p_made_coherent")
    return org, Judged(*(cat([getattr(j, f) for j in judged]) for f in fields))


def margin_coverage(
    rows: Sequence[dict[str, Any]], method: str = "pcc", coverage: float = 0.95
) -> dict[str, Any]:
    """Each organism's interval widened by the judge's margin from the other ``held_out``
    values' organisms' signed errors; the share of organisms whose reference rate it holds,
    and the intervals' median width (points)."""
    held, widths, per = [], [], []
    for r in rows:
        others = [x[method]["signed_error"] for x in rows if x["held_out"] != r["held_out"]]
        m = judge_margin(others, coverage)
        lo, hi = r[method]["ci95"]
        lo, hi = max(0.0, lo - m), min(100.0, hi + m)
        held.append(lo <= r["gpt4o_rate"] <= hi)
        widths.append(hi - lo)
        per.append({"organism": r["organism"], "margin": m, "interval": [lo, hi]})
    return {
        "coverage": float(np.mean(held)),
        "median_width": float(np.median(widths)),
        "organisms": per,
    }
