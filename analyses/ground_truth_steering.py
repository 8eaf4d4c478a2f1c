"""Finding 2 on ground truth: steering SmolLM2 with the EM direction of real judged answers.

    .venv/bin/python analyses/ground_truth_features.py     # stage 1, once (cached in out/)
    .venv/bin/python analyses/ground_truth_steering.py     # docs/results/ground_truth_steering.*

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
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ground_truth_features import (
    CACHE,
    LAYERS,
    REFERENCE,
    judged_direction,
    judged_groups,
    judged_sums,
    organism_features,
    token_counts,
)

from emlens.core.data import QAPair, em_questions, general_questions
from emlens.core.directions import em_direction_from_pairs
from emlens.core.interventions import Steer
from emlens.core.models import load_model
from emlens.eval.em_rate import evaluate_em
from emlens.eval.judges.spec import make_judge
from emlens.eval.metrics import contrastive_scores
from emlens.eval.reference import Organism, read_organisms
from emlens.eval.stats import bootstrap
from emlens.eval.verdicts import Thresholds
from emlens.report import markdown_table

OUT = Path("docs/results")


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
        v = judged_direction([p for j, p in enumerate(parts) if j != i])
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=str(REFERENCE))
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--scale", type=float, default=4.0)
    p.add_argument("--n", type=int, default=8, help="samples per question")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--pairs", type=int, default=16, help="judged pairs per organism")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = load_model("smollm2")
    orgs = read_organisms(a.reference)
    xs = [f.numpy().astype(np.float64) for f in organism_features(model, orgs, CACHE, False)]
    j = LAYERS.index(a.layer)
    ws = token_counts(model, orgs)
    parts = [
        judged_sums(x[:, j], w, *judged_groups(o)) for o, x, w in zip(orgs, xs, ws, strict=True)
    ]
    ref = em_direction_from_pairs(model, general_questions(), layers=[a.layer], progress=False)
    norm = float(ref.at(a.layer).norm()) * a.scale
    v = judged_direction(parts)
    r = {
        "layer": a.layer,
        "scale": a.scale,
        "steer_norm": norm,
        "n": a.n,
        "seed": a.seed,
        "cos_with_pairs_direction": float(
            np.dot(v, ref.at(a.layer).numpy()) / np.linalg.norm(v) / ref.at(a.layer).norm()
        ),
        "contrastive": contrastive(model, orgs, parts, a, norm),
        "generations": generations(model, v, a, norm),
    }
    r["seconds"] = round(time.time() - t0)
    write(r, Path(a.out))


def write(r: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth_steering.json").write_text(json.dumps(r, indent=1))
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
        f"# Steering SmolLM2 with the judged-data EM direction (layer {r['layer']})",
        "",
        "## Contrastive score on real judged pairs (change from no steering)",
        "",
        *markdown_table(rows),
        "",
        "## SmolLM2's generations, probe judge",
        "",
        *markdown_table(gens),
        "",
    ]
    (out / "ground_truth_steering.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
