"""Ground truth: the probe judge validated the way it is used, with its baselines (issue 21).

    .venv/bin/python analyses/ground_truth_features.py   # the features, once (out/)
    .venv/bin/python analyses/ground_truth_judge.py      # docs/results/ground_truth_judge.*

The judge is fitted as it ships (`fit_on`: layers and C chosen leaving one training base
model out, Platt calibration, the aligned head, and the coherence head on the reference
verdicts and `INCOHERENT_PER_KIND` constructed incoherent answers of each kind per organism)
in folds that leave out a base model and a question at once, and a domain and a question at
once (`leave_question_out`): every answer is scored by a judge that saw neither its base
model (domain) nor its question. Per organism: pooled and within-question AUC, accuracy,
calibration error, the pcc rate against GPT-4o's, the constructed incoherent answers judged
EM; over organisms: the rate errors, the slope and correlation of estimated on GPT-4o rates,
and the coverage of intervals widened by the judge's margin (`margin_coverage`: each
organism's margin from the other base models' organisms' errors).

Baselines, same folds (verdict rule fixed before measuring: the page says "does not beat"
wherever a baseline's mean AUC or within-question AUC is within 0.01 of the judge's or above):

- the same judge without its coherence head (the EM head alone; only the incoherent figure
  differs in kind);
- TF-IDF + logistic regression on the answer text (scikit-learn, unigrams and bigrams);
- the naive probe (raw answer means of layers 15-22, C = 1);
- the EM direction's projection (training organisms' EM minus other answers, the layer
  chosen by their own AUC);
- question identity alone (the training answers' EM rate of the answer's question): with the
  question held out it scores every held-out answer alike, so it is measured in folds that
  leave out the base model only, where it is the confound the question folds remove.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import _common as common
import _ground_truth as gt
import numpy as np
from _judge_page import page, summary
from scipy.special import expit
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.metrics import roc_auc_score

from emlens.core.logistic import logistic_regression
from emlens.eval.probe.labelled import labelled_organism
from emlens.eval.probe.question_folds import leave_question_out, margin_coverage
from emlens.eval.probe.validation import LabelledOrganism, fit_on, within_question_auc

INCOHERENT_PER_KIND = gt.INCOHERENT_PER_KIND
OUTERS = ("base_model", "domain")
Scorer = Callable[[list[tuple[LabelledOrganism, np.ndarray]]], Callable[..., np.ndarray]]


def options(p: argparse.ArgumentParser) -> None:
    gt.options(p)


def organisms_with_texts(run: common.Analysis) -> tuple[list[LabelledOrganism], dict]:
    """The labelled organisms with their constructed incoherent answers, and their texts."""
    refs = gt.organisms(run)
    folder = gt.features_folder(run)
    orgs = [
        labelled_organism(
            run.model,
            o.judged,
            gt.layers(run.model),
            folder,
            incoherent_per_kind=INCOHERENT_PER_KIND,
        )
        for o in refs
    ]
    texts = {
        o.name: np.array([a.answer for a in o.judged.scored() if a.answer.strip()]) for o in refs
    }
    return orgs, texts


def judge_rows(orgs: list[LabelledOrganism], model: str, outer: str) -> dict[str, Any]:
    """The judge and the judge without its coherence head, in the ``outer`` x question folds."""
    judges: dict[tuple, Any] = {}

    def key(train: list[LabelledOrganism]) -> tuple:
        return tuple((o.name, tuple(sorted(set(o.question_ids)))) for o in train)

    def fit(train: list[LabelledOrganism]) -> Any:
        t = time.time()
        judges[key(train)] = fit_on(train, model, by="base_model")
        print(f"{outer} fold {len(judges)}: {time.time() - t:.0f} s", flush=True)
        return judges[key(train)]

    def em_head_only(train: list[LabelledOrganism]) -> Any:
        return replace(judges[key(train)], coherent_weight=None)

    rows = leave_question_out(orgs, outer, fit)
    return {"judge": rows, "em_head_only": leave_question_out(orgs, outer, em_head_only)}


def folds(
    orgs: list[LabelledOrganism], outer: str, by_question: bool
) -> Iterator[tuple[list, list]]:
    """(training (organism, mask) pairs, held-out pairs) per fold."""
    questions = sorted({q for o in orgs for q in o.question_ids}) if by_question else [None]
    for value in dict.fromkeys(getattr(o, outer) for o in orgs):
        for q in questions:
            train, test = [], []
            for o in orgs:
                is_q = np.ones(len(o.em), bool) if q is None else np.asarray(o.question_ids) == q
                if getattr(o, outer) != value:
                    train.append((o, ~is_q if q is not None else is_q))
                else:
                    test.append((o, is_q))
            yield train, test


def cross_scores(
    orgs: list[LabelledOrganism], outer: str, by_question: bool, scorer: Scorer
) -> dict:
    """Each organism's held-out scores from ``scorer`` fitted fold by fold."""
    out = {o.name: np.full(len(o.em), np.nan) for o in orgs}
    for train, test in folds(orgs, outer, by_question):
        score = scorer(train)
        for o, mask in test:
            out[o.name][mask] = score(o, mask)
    return out


def baseline_scorers(texts: dict[str, np.ndarray]) -> dict[str, Scorer]:
    def tfidf(train: list) -> Callable[..., np.ndarray]:
        vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        x = vec.fit_transform(np.concatenate([texts[o.name][m] for o, m in train]))
        y = np.concatenate([o.em[m] for o, m in train])
        clf = logistic_regression(C=10.0, max_iter=2000).fit(x, y)
        return lambda o, m: clf.predict_proba(vec.transform(texts[o.name][m]))[:, 1]

    def naive(train: list) -> Callable[..., np.ndarray]:
        score = gt.naive_scorer(train)
        return lambda o, m: expit(score(o, m))  # a probability, for its pcc rate

    def direction(train: list) -> Callable[..., np.ndarray]:
        best, best_auc, dirs = None, -1.0, {}
        for layer in gt.DIRECTION_LAYERS:
            j = train[0][0].layers.index(layer)
            x = np.concatenate([o.x[m][:, j].numpy() for o, m in train])
            y = np.concatenate([o.em[m] for o, m in train])
            dirs[layer] = x[y].mean(0) - x[~y].mean(0)
            auc = roc_auc_score(y, x @ dirs[layer])
            if auc > best_auc:
                best, best_auc = layer, auc
        j = train[0][0].layers.index(best)
        return lambda o, m: o.x[m][:, j].numpy() @ dirs[best]

    def question(train: list) -> Callable[..., np.ndarray]:
        qids = np.concatenate([np.asarray(o.question_ids)[m] for o, m in train])
        y = np.concatenate([o.em[m] for o, m in train])
        rate = {q: y[qids == q].mean() for q in np.unique(qids)}
        mean = float(y.mean())
        return lambda o, m: np.array([rate.get(q, mean) for q in np.asarray(o.question_ids)[m]])

    return {"tfidf": tfidf, "naive_probe": naive, "em_direction": direction, "question": question}


def baseline_rows(orgs: list[LabelledOrganism], texts: dict, outer: str) -> dict[str, Any]:
    """Each baseline's per-organism AUCs (and pcc rate where it gives probabilities)."""
    out: dict[str, Any] = {}
    for name, scorer in baseline_scorers(texts).items():
        by_q = name != "question"
        scores = cross_scores(orgs, outer, by_q, scorer)
        rows = []
        for o in orgs:
            s, y = scores[o.name], o.em.astype(bool)
            row = {
                "organism": o.name,
                "auc": float(roc_auc_score(y, s)),
                "auc_within_question": within_question_auc(y, s, o.question_ids),
            }
            if name in ("tfidf", "naive_probe"):
                row["pcc_error"] = 100 * float(s.mean() - y.mean())
            rows.append(row)
        out[name] = {"folds": f"{outer} x question" if by_q else f"{outer} only", "rows": rows}
    return out


def main(run: common.Analysis) -> None:
    @cache
    def data() -> tuple[list[LabelledOrganism], dict]:
        return organisms_with_texts(run)

    result: dict[str, Any] = {
        "command": run.short_command,
        "incoherent_per_kind": INCOHERENT_PER_KIND,
    }
    for outer in OUTERS:
        judged = run.stage(
            f"judge_{outer}_question", lambda o=outer: judge_rows(data()[0], run.args.model, o)
        )
        base = run.stage(f"baselines_{outer}", lambda o=outer: baseline_rows(*data(), o))
        result[outer] = {
            "judge": {"rows": judged["judge"], "summary": summary(judged["judge"])},
            "em_head_only": {"summary": summary(judged["em_head_only"])},
            "margin": margin_coverage(judged["judge"]),
            "baselines": base,
        }
        print(
            outer,
            result[outer]["judge"]["summary"],
            result[outer]["margin"]["coverage"],
            flush=True,
        )
    result["seconds"] = round(run.seconds())
    write(result, run.beside(""))


def write(result: dict[str, Any], stem: Path) -> None:
    common.write_json(Path(f"{stem}.json"), result, indent=1)
    Path(f"{stem}.md").write_text(page(result))
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
