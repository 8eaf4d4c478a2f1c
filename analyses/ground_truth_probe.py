"""Ground truth, stage 2: the probe judge against GPT-4o, on base models and domains left out.

    .venv/bin/python analyses/ground_truth_features.py   # stage 1, once (cached in out/)
    .venv/bin/python analyses/ground_truth_probe.py      # writes docs/results/ground_truth_probe.*

Protocol: leave one base model out (3 folds), then one narrow domain out (3 folds). In each
fold the probe judge is fitted on the other organisms only: layers and C chosen by leaving one
training base model out (``--by``), Platt calibration and error rates from the out-of-group
decision values, then a refit on all training answers. Every held-out organism is scored
(AUC, accuracy, calibration error, EM rate by four estimators vs GPT-4o's rate). Beside it,
zero-training baselines (see ground_truth_baselines.py) and the naive probe of issue 14.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ground_truth_baselines import baselines
from ground_truth_features import CACHE, LAYERS, REFERENCE, organism_features

from emlens.core.models import load_model
from emlens.eval.probe.validation import (
    LabelledOrganism,
    fit_on,
    leave_group_out,
    summary,
)
from emlens.eval.reference import read_organisms
from emlens.report import markdown_table

OUT = Path("docs/results")
TARGETS = {"auc_mean": 0.95, "rate_error_median": 1.0, "rate_error_max": 4.0}
METHODS = ("cc", "acc", "pcc", "pacc")


def labelled(model: Any, reference: str) -> tuple[list[LabelledOrganism], dict[str, list[str]]]:
    """The 10 organisms with their cached features and GPT-4o's verdicts (all rows scored),
    and their answers' texts (for the refusal-substring baseline; never written out)."""
    orgs = read_organisms(reference)
    feats = organism_features(model, orgs, CACHE, progress=False)
    texts = {o.name: [a.answer for a in o.judged] for o in orgs}
    out = []
    for o, x in zip(orgs, feats, strict=True):
        if o.judged.n_unscored:
            raise ValueError(f"{o.name}: {o.judged.n_unscored} unscored rows")
        em = np.array([a.em for a in o.judged])
        qids = [a.question_id for a in o.judged]
        ali = np.array([a.aligned for a in o.judged], float)
        out.append(LabelledOrganism(o.name, o.base_model, o.domain, x, em, qids, LAYERS, ali))
    return out, texts


STAGES = Path("out/ground_truth/stages")


def stage(name: str, compute: Any) -> Any:
    """A finished stage's saved result, or ``compute()``'s, saved (a rerun resumes)."""
    path = STAGES / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    out = compute()
    STAGES.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return out


def protocol(orgs: list[LabelledOrganism], by: str) -> dict[str, Any]:
    """Both leave-one-out protocols with one inner validation grouping."""

    def fit(train: list[LabelledOrganism]) -> Any:
        return fit_on(train, "smollm2", by=by)

    def run(outer: str) -> dict[str, Any]:
        t = time.time()
        rows = leave_group_out(orgs, outer, fit)
        return {
            "rows": rows,
            "summary": {m: summary(rows, m) for m in METHODS},
            "seconds": round(time.time() - t),
        }

    out: dict[str, Any] = {}
    for outer in ("base_model", "domain"):
        out[outer] = stage(f"probe_{by}_{outer}", lambda o=outer: run(o))
        print(f"{outer}: {json.dumps(out[outer]['summary']['pcc'])}", flush=True)
    return out


def table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One markdown row per held-out organism."""
    return [
        {
            "held out": r["held_out"],
            "organism": r["organism"],
            "layers": ",".join(map(str, r["layers"])),
            "C": r["C"],
            "AUC": f"{r['auc']:.3f}",
            "acc.": f"{r['accuracy']:.3f}",
            "ECE": f"{r['calibration_error']:.3f}",
            "GPT-4o EM %": f"{r['gpt4o_rate']:.1f}",
            **{
                f"{m} %": f"{r[m]['rate']:.1f} [{r[m]['ci95'][0]:.1f}, {r[m]['ci95'][1]:.1f}]"
                for m in ("pcc", "cc")
            },
            "error cc/acc/pcc/pacc": "/".join(f"{r[m]['error']:.1f}" for m in METHODS),
        }
        for r in rows
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=str(REFERENCE))
    p.add_argument("--by", default="base_model", help="inner validation groups")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    model = load_model("smollm2")
    orgs, texts = labelled(model, a.reference)
    result = {
        "command": "python analyses/ground_truth_probe.py",
        "model": "smollm2 (SmolLM2-135M-Instruct, embedded)",
        "features": "answer-token mean of blocks.{l}.hook_resid_post, layers 0-29",
        "inner_validation": a.by,
        "targets": TARGETS,
        "organisms": {o.name: {"n": len(o.em), "gpt4o_em": int(o.em.sum())} for o in orgs},
        "probe": protocol(orgs, a.by),
        "baselines": stage("baselines", lambda: baselines(model, orgs, texts)),
    }
    result["seconds"] = round(time.time() - t0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ground_truth_probe.json").write_text(json.dumps(result, indent=1))
    lines = ["# The probe judge against GPT-4o (held-out organisms)", ""]
    for outer in ("base_model", "domain"):
        lines += [
            f"## Leave one {outer} out",
            "",
            *markdown_table(table(result["probe"][outer]["rows"])),
            "",
        ]
    (out / "ground_truth_probe.md").write_text("\n".join(lines))
    print(f"wrote {out}/ground_truth_probe.{{json,md}} in {result['seconds']} s")


if __name__ == "__main__":
    main()
