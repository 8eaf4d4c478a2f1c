"""Ground truth: the probe judge against GPT-4o, on base models and domains left out.

    .venv/bin/python analyses/ground_truth_features.py   # the features, once (out/)
    .venv/bin/python analyses/ground_truth_probe.py      # docs/results/ground_truth_probe.*

Makes ``docs/results/ground_truth_probe.{json,md}``, which ``ground_truth_ship.py`` stamps
into the shipped judge and ``ground_truth_docs.py`` renders into ``docs/evaluation.md``. Its
stages (each protocol, the baselines) are saved in ``docs/results/ground_truth_probe/stages/``,
so a rerun resumes. The reference folder: ``--reference``, else ``$EMLENS_REFERENCE``, else
``../shared/data/em-reference`` (``_reference.py``).

Protocol: leave one base model out (3 folds), then one narrow domain out (3 folds). In each
fold the probe judge is fitted on the other organisms only: layers and C chosen by leaving one
training base model out (``--by``), Platt calibration and error rates from the out-of-group
decision values, then a refit on all training answers. Every held-out organism is scored
(AUC, accuracy, calibration error, EM rate by four estimators vs GPT-4o's rate). Beside it,
zero-training baselines and the naive probe of issue 14 (``_ground_truth.baselines``).
"""

from __future__ import annotations

import argparse
import json
import time
from functools import cache
from pathlib import Path
from typing import Any

import _common as common
import _ground_truth as gt

from emlens.eval.probe.validation import LabelledOrganism, fit_on, leave_group_out, summary
from emlens.report import markdown_table

TARGETS = {"auc_mean": 0.95, "rate_error_median": 1.0, "rate_error_max": 4.0}
METHODS = ("cc", "acc", "pcc", "pacc")
MODELS = {"smollm2": "smollm2 (SmolLM2-135M-Instruct, embedded)"}  # the JSON's "model"


def options(p: argparse.ArgumentParser) -> None:
    gt.options(p)
    p.add_argument("--by", default="base_model", help="inner validation groups")


def protocol(run: common.Analysis, orgs: Any) -> dict[str, Any]:
    """Both leave-one-out protocols with one inner validation grouping (``--by``), each a
    stage; ``orgs()`` gives the labelled organisms when a stage is computed."""
    by = run.args.by

    def fit(train: list[LabelledOrganism]) -> Any:
        return fit_on(train, run.args.model, by=by)

    def measure(outer: str) -> dict[str, Any]:
        t = time.time()
        rows = leave_group_out(orgs(), outer, fit)
        return {
            "rows": rows,
            "summary": {m: summary(rows, m) for m in METHODS},
            "seconds": round(time.time() - t),
        }

    out: dict[str, Any] = {}
    for outer in ("base_model", "domain"):
        out[outer] = run.stage(f"probe_{by}_{outer}", lambda o=outer: measure(o))
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


def write(result: dict[str, Any], stem: Path) -> None:
    """``<stem>.json`` and ``<stem>.md`` from the result."""
    common.write_json(Path(f"{stem}.json"), result, indent=1)
    lines = ["# The probe judge against GPT-4o (held-out organisms)", ""]
    for outer in ("base_model", "domain"):
        lines += [
            f"## Leave one {outer} out",
            "",
            *markdown_table(table(result["probe"][outer]["rows"])),
            "",
        ]
    Path(f"{stem}.md").write_text("\n".join(lines))


def main(run: common.Analysis) -> None:
    @cache
    def labelled() -> tuple[list[LabelledOrganism], dict[str, list[str]]]:
        return gt.labelled(run.model, gt.organisms(run), gt.features_folder(run))

    def organisms() -> dict[str, Any]:
        orgs = labelled()[0]
        counts = {o.name: {"n": len(o.em), "gpt4o_em": int(o.em.sum())} for o in orgs}
        return {"n_layers": len(orgs[0].layers), "organisms": counts}

    header = run.stage("organisms", organisms)
    result = {
        "command": run.short_command,
        "model": MODELS.get(run.args.model, run.args.model),
        "features": "answer-token mean of blocks.{l}.hook_resid_post, "
        f"layers 0-{header['n_layers'] - 1}",
        "inner_validation": run.args.by,
        "targets": TARGETS,
        "organisms": header["organisms"],
        "probe": protocol(run, lambda: labelled()[0]),
        "baselines": run.stage("baselines", lambda: gt.baselines(run.model, *labelled())),
    }
    result["seconds"] = round(run.seconds())
    write(result, run.beside(""))
    print(f"wrote {run.beside('')}.{{json,md}} in {result['seconds']} s")


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
