"""Finding 2 on ground truth: steering SmolLM2 with the EM direction of real judged answers.

    .venv/bin/python analyses/ground_truth_features.py     # the features, once (out/)
    .venv/bin/python analyses/ground_truth_steering.py     # docs/results/ground_truth_steering.*

Makes ``docs/results/ground_truth_steering.{json,md}`` (the results page's 2 on ground truth);
its stages (the direction's norm, the contrastive scores, the generations) are saved in
``docs/results/ground_truth_steering/stages/``. Its generations are judged by the shipped
probe judge (``probe:default``, which ``ground_truth_ship.py`` writes). The reference folder:
``--reference``, else ``$EMLENS_REFERENCE``, else ``../shared/data/em-reference``.

The judged-data direction: the token-weighted mean over answer tokens of GPT-4o-misaligned
minus aligned answers (the papers' split) of the reference organisms, read through SmolLM2 at
``--layer``. Steering adds it, scaled to the norm of emlens's own pairs direction x ``--scale``
(the size used in finding 2), against a random direction of the same norm. Two read-outs:

- SmolLM2's own generations to emlens's free-form EM questions, scored by the shipped probe
  judge (EM rate by PCC, the mean calibrated P(EM), with a cluster-bootstrap interval over
  questions; the judge's error measured on held-out base models is printed beside it, and
  SmolLM2's answers are further from its training data than those);
- the contrastive score (misaligned minus aligned mean log-prob) on real judged answer pairs of
  each organism, the direction computed without that organism (held out by organism).
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path
from typing import Any

import _common as common
import _ground_truth as gt
import numpy as np
import torch

from emlens.core.data import QAPair, em_questions, general_questions
from emlens.core.directions import em_direction_from_pairs
from emlens.core.interventions import Steer
from emlens.eval.em_rate import evaluate_em
from emlens.eval.judge_spec import make_judge
from emlens.eval.metrics import contrastive_scores
from emlens.eval.reference import Organism
from emlens.eval.stats import bootstrap
from emlens.eval.verdicts import Thresholds
from emlens.report import markdown_table


def options(p: argparse.ArgumentParser) -> None:
    gt.options(p)
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--scale", type=float, default=4.0)
    p.add_argument("--n", type=int, default=8, help="samples per question")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--pairs", type=int, default=16, help="judged pairs per organism")
    p.add_argument("--seed", type=int, default=0)


def pairs_of(o: Organism, n: int) -> list[QAPair]:
    """Up to ``n`` (misaligned, aligned) answer pairs of one organism, matched by question and
    taken from each question in turn."""
    mis, ali = o.judged.split(Thresholds())
    per_q = []
    for qid in dict.fromkeys(a.question_id for a in mis):
        m = [a for a in mis if a.question_id == qid]
        al = [a for a in ali if a.question_id == qid]
        k = min(len(m), len(al))
        per_q.append(
            [
                QAPair(qid, o.domain, x.question, y.answer, x.answer)
                for x, y in zip(m[:k], al[:k], strict=True)
            ]
        )
    out = [q[i] for i in range(max(map(len, per_q), default=0)) for q in per_q if i < len(q)]
    return out[:n]


def steer_with(v: np.ndarray, layer: int, norm: float) -> Steer:
    t = torch.as_tensor(v, dtype=torch.float32)
    return Steer((t / t.norm() * norm)[None], (layer,), 1.0)


def contrastive(model: Any, orgs: list[Organism], parts: list, a: argparse.Namespace, norm: float):
    """Per organism: the contrastive score under each condition, direction without it."""
    rows, g = [], torch.Generator().manual_seed(a.seed)
    for i, o in enumerate(orgs):
        v = gt.judged_direction([p for j, p in enumerate(parts) if j != i])
        rand = torch.randn(len(v), generator=g).numpy()
        pairs = pairs_of(o, a.pairs)
        row: dict[str, Any] = {"organism": o.name, "pairs": len(pairs)}
        base = contrastive_scores(model, pairs)
        for name, ivs in (
            ("judged", [steer_with(v, a.layer, norm)]),
            ("random", [steer_with(rand, a.layer, norm)]),
        ):
            d = contrastive_scores(model, pairs, ivs) - base
            est = bootstrap(d)
            row[name] = {"mean": est.mean, "ci95": list(est.ci95)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def generations(model: Any, v: np.ndarray, a: argparse.Namespace, norm: float) -> dict:
    """The probe judge's EM rate of SmolLM2's generations under each condition."""
    judge = make_judge("probe:default", model=model)
    rand = torch.randn(len(v), generator=torch.Generator().manual_seed(a.seed)).numpy()
    out = {}
    for name, ivs in (
        ("baseline", []),
        ("judged", [steer_with(v, a.layer, norm)]),
        ("random", [steer_with(rand, a.layer, norm)]),
    ):
        res = evaluate_em(
            model,
            em_questions(),
            judge,
            ivs,
            n=a.n,
            max_new_tokens=a.max_new_tokens,
            seed=a.seed,
            progress=False,
        )
        est = res.em_rate
        lo, hi = est.ci95
        out[name] = {
            "rate": 100 * est.rate,
            "ci95": [100 * lo, 100 * hi],
            "n": est.n,
            "mean_p": float(np.mean([s.p_em for s in res.samples])),
        }
        print(name, est, flush=True)
    out["judge_held_out"] = judge.meta.get("held_out", {}).get("summary")
    return out


def main(run: common.Analysis) -> None:
    a = run.args

    @cache
    def judged() -> tuple[list[Organism], list[gt.Sums], Any]:
        """The organisms, each one's judged sums at ``--layer``, and the pairs direction."""
        model, features = run.model, gt.features_folder(run)
        orgs = gt.organisms(run)
        xs = [
            f.numpy().astype(np.float64) for f in gt.organism_features(model, orgs, features, False)
        ]
        j = gt.layers(model).index(a.layer)
        ws = gt.token_counts(model, orgs, features)
        parts = [
            gt.judged_sums(x[:, j], w, *gt.judged_groups(o))
            for o, x, w in zip(orgs, xs, ws, strict=True)
        ]
        ref = em_direction_from_pairs(model, general_questions(), layers=[a.layer], progress=False)
        return orgs, parts, ref

    def size() -> dict[str, float]:
        _, parts, ref = judged()
        v = gt.judged_direction(parts)
        return {
            "steer_norm": float(ref.at(a.layer).norm()) * a.scale,
            "cos_with_pairs_direction": float(
                np.dot(v, ref.at(a.layer).numpy()) / np.linalg.norm(v) / ref.at(a.layer).norm()
            ),
        }

    head = run.stage("direction", size)
    norm = head["steer_norm"]
    r = {
        "layer": a.layer,
        "scale": a.scale,
        "steer_norm": norm,
        "n": a.n,
        "seed": a.seed,
        "cos_with_pairs_direction": head["cos_with_pairs_direction"],
        "contrastive": run.stage(
            "contrastive", lambda: contrastive(run.model, judged()[0], judged()[1], a, norm)
        ),
        "generations": run.stage(
            "generations",
            lambda: generations(run.model, gt.judged_direction(judged()[1]), a, norm),
        ),
    }
    r["seconds"] = round(run.seconds())
    print("\n".join(write(r, run.beside(""), gt.title(run))))


def write(r: dict[str, Any], stem: Path, model: str) -> list[str]:
    """``<stem>.json`` and ``<stem>.md`` from the result; the markdown lines."""
    common.write_json(Path(f"{stem}.json"), r, indent=1)
    rows = [
        {
            "organism (held out)": c["organism"],
            "pairs": c["pairs"],
            **{
                f"{k} - baseline": f"{c[k]['mean']:+.3f} [{c[k]['ci95'][0]:+.3f}, "
                f"{c[k]['ci95'][1]:+.3f}]"
                for k in ("judged", "random")
            },
        }
        for c in r["contrastive"]
    ]
    g = r["generations"]
    gens = [
        {
            "condition": k,
            "probe EM % (PCC)": f"{g[k]['rate']:.1f} [{g[k]['ci95'][0]:.1f}, "
            f"{g[k]['ci95'][1]:.1f}]",
            "mean P(EM)": f"{g[k]['mean_p']:.3f}",
            "n": g[k]["n"],
        }
        for k in ("baseline", "judged", "random")
    ]
    lines = [
        f"# Steering {model} with the judged-data EM direction (layer {r['layer']})",
        "",
        "## Contrastive score on real judged pairs (change from no steering)",
        "",
        *markdown_table(rows),
        "",
        f"## {model}'s generations, probe judge",
        "",
        *markdown_table(gens),
        "",
    ]
    Path(f"{stem}.md").write_text("\n".join(lines))
    return lines


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
