"""Does the EM screen tell bad medical advice from good before training? (issue 23, item 2)

    .venv/bin/python analyses/screen_medical.py     # docs/results/screen_medical.*
    .venv/bin/python analyses/screen_medical.py --model tiny-llama --n 4 --max-new-tokens 8 \\
        --layer 1 --direction random --no-probe --out /tmp/sm          # a smoke run

`emlens.eval.screen` on the papers' ``bad_medical_advice`` and ``good_medical_advice`` training
sets (the reference folder, ``_reference.py``; the two files pair row by row on the same
questions): ``--n`` questions drawn at random (seeded), each screened once with its bad answer
and once with its good one, against the same base answer (SmolLM2's own, greedy,
``--max-new-tokens``). A row's score is its projection difference on the shipped judged EM
direction (`emlens.reference_em_direction`) at ``--layer``: the dataset answer's mean over its
answer tokens of resid_post, projected on the unit direction, minus the base answer's.

The verdict rule, fixed before measuring: the score *separates bad from good rows* when the
lower end of its AUC's 95% interval (bad rows positive, bootstrap over questions, both rows of
a question together) lies above 0.5 and above the AUC of each baseline that needs no
direction, the answer's length in tokens and its cross-entropy gap to the base answer, each
baseline taken in its better orientation (max(AUC, 1 - AUC)), as their sign is not predicted.
The probe judge's P(EM) of the answer is printed beside as a reference, outside the rule (a
judge fitted on EM answers, not a screen of training data). The numbers are reported
whichever way they fall. Only numbers are written: no text of the data.
"""

from __future__ import annotations

import argparse
from typing import Any

import _common as common
import numpy as np
from _reference import reference_folder
from sklearn.metrics import roc_auc_score

import emlens as eml
from emlens.eval.judge_spec import make_judge
from emlens.eval.screen import base_answers, screen
from emlens.eval.stats import cluster_bootstrap
from emlens.report import markdown_table

FILES = {"bad": "bad_medical_advice.jsonl.gz", "good": "good_medical_advice.jsonl.gz"}
MEASURES = {  # column: what it is
    "score": "EM screen score (projection difference)",
    "data_tokens": "answer length (tokens)",
    "cross_entropy_gap": "cross-entropy gap to the base answer (nats/token)",
    "p_em": "probe judge P(EM) of the answer (reference, outside the rule)",
}


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", help="the EM papers' reference folder (see _reference.py)")
    p.add_argument("--n", type=int, default=50, help="questions (each: a bad and a good row)")
    p.add_argument("--layer", type=int, default=15)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--direction", default="reference", help="reference, or random (smoke runs)")
    p.add_argument("--no-probe", action="store_true", help="leave the P(EM) reference out")
    p.add_argument("--seed", type=int, default=0)


def rows_of(run: common.Analysis) -> dict[str, Any]:
    """The same ``--n`` randomly drawn rows of both files (they pair row by row)."""
    folder = reference_folder(run.args.reference)
    sets = {k: eml.read_chat_jsonl(folder / f) for k, f in FILES.items()}
    n = len(sets["bad"])
    if len(sets["good"]) != n or any(
        b.question != g.question for b, g in zip(sets["bad"], sets["good"], strict=True)
    ):
        raise SystemExit("the bad and good medical files no longer pair row by row")
    pick = sorted(np.random.default_rng(run.args.seed).choice(n, run.args.n, replace=False))
    return {k: [rows[int(i)] for i in pick] for k, rows in sets.items()} | {"index": pick}


def measure(run: common.Analysis, rows: dict[str, Any], base: list[str]) -> dict[str, Any]:
    """Each row's numbers (no text), per file."""
    a, model = run.args, run.model
    if a.direction == "random":
        n, width = model.cfg.n_layers, model.cfg.d_model
        d = eml.random_like(eml.DirectionSet(np.ones((n, width)), list(range(n))), a.seed)
    else:
        d = eml.reference_em_direction(model)
    judge = None if a.no_probe else make_judge("probe:default", model=model)
    out: dict[str, Any] = {"index": [int(i) for i in rows["index"]]}
    for k in FILES:
        s = screen(model, rows[k], d, a.layer, base=base, judge=judge)
        out[k] = {
            "summary": s.summary(),
            **{m: [getattr(r, m) for r in s.rows] for m in MEASURES},
        }
    return out


def auc(bad: list[Any], good: list[Any], seed: int) -> dict[str, Any]:
    """AUC of bad (positive) vs good, with its interval resampling questions (pairs)."""
    keep = [i for i, (b, g) in enumerate(zip(bad, good, strict=True)) if None not in (b, g)]
    if not keep:
        return {"auc": None, "ci95": None, "n_pairs": 0}
    x = np.array([[1.0, bad[i]] for i in keep] + [[0.0, good[i]] for i in keep])
    clusters = keep + keep

    def stat(v: np.ndarray) -> float:
        return float(roc_auc_score(v[:, 0], v[:, 1]))

    lo, hi = cluster_bootstrap(x, clusters, stat, n_boot=2000, seed=seed)
    return {"auc": stat(x), "ci95": [lo, hi], "n_pairs": len(keep)}


def paired(bad: list[float], good: list[float], seed: int) -> dict[str, Any]:
    """The share of questions whose bad row scores above its good row, with its interval."""
    wins = np.array([float(b > g) for b, g in zip(bad, good, strict=True)])
    lo, hi = cluster_bootstrap(wins, list(range(len(wins))), np.mean, n_boot=2000, seed=seed)
    return {"share": float(wins.mean()), "ci95": [lo, hi], "n_pairs": len(wins)}


def verdict(aucs: dict[str, dict[str, Any]]) -> tuple[bool, float]:
    """The rule: the score's interval above 0.5 and above each baseline's better AUC."""
    best = [max(aucs[m]["auc"], 1 - aucs[m]["auc"]) for m in ("data_tokens", "cross_entropy_gap")]
    bar = max([0.5, *best])
    return aucs["score"]["ci95"][0] > bar, bar


def main(run: common.Analysis) -> None:
    a = run.args
    rows = rows_of(run)
    base = run.stage("base_answers", lambda: base_answers(run.model, rows["bad"], a.max_new_tokens))
    res = run.stage("rows", lambda: measure(run, rows, base))
    ms = [m for m in MEASURES if res["bad"][m][0] is not None]
    aucs = {m: auc(res["bad"][m], res["good"][m], a.seed) for m in ms}
    ok, bar = verdict(aucs)
    pair = paired(res["bad"]["score"], res["good"]["score"], a.seed)
    table = [
        {
            "measure": MEASURES[m],
            "mean, bad rows": f"{np.mean([x for x in res['bad'][m] if x is not None]):.3f}",
            "mean, good rows": f"{np.mean([x for x in res['good'][m] if x is not None]):.3f}",
            "AUC bad vs good [95%]": f"{aucs[m]['auc']:.3f} [{aucs[m]['ci95'][0]:.3f}, "
            f"{aucs[m]['ci95'][1]:.3f}]",
        }
        for m in ms
    ]
    sb, sg = res["bad"]["summary"]["score"], res["good"]["summary"]["score"]
    lo = aucs["score"]["ci95"][0]
    says = "separates" if ok else "does not separate"
    md = [
        run.made_by(),
        "",
        f"# The EM screen on bad vs good medical advice ({run.model_title}, layer {a.layer})",
        "",
        f"{a.n} questions drawn at random (seed {a.seed}) from the papers' paired medical "
        f"training sets, each screened with its bad and its good answer against the same base "
        f"answer ({a.max_new_tokens} new tokens, greedy). Rule fixed before measuring: the score "
        "separates bad from good rows when the lower end of its AUC's 95% interval (bootstrap "
        "over questions) lies above 0.5 and above the length and cross-entropy-gap baselines' "
        "AUCs, each in its better orientation.",
        "",
        *markdown_table(table),
        "",
        f"Dataset scores (mean projection difference, bootstrap 95%): bad {sb['mean']:.3f} "
        f"[{sb['ci95'][0]:.3f}, {sb['ci95'][1]:.3f}], good {sg['mean']:.3f} "
        f"[{sg['ci95'][0]:.3f}, {sg['ci95'][1]:.3f}].",
        "",
        f"Paired (outside the rule): the bad row scores above its own question's good row in "
        f"{100 * pair['share']:.0f}% [{100 * pair['ci95'][0]:.0f}, {100 * pair['ci95'][1]:.0f}] "
        f"of {pair['n_pairs']} questions.",
        "",
        f"Verdict: the screen {says} bad from good rows (its AUC's lower end {lo:.3f} against "
        f"the bar {bar:.3f}).",
    ]
    meta = run.meta(n=a.n, layer=a.layer, max_new_tokens=a.max_new_tokens, seed=a.seed)
    result = {"meta": meta, "auc": aucs, "paired": pair, "separates": ok, "bar": bar, "rows": res}
    run.write_beside(result, md)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
