"""The offline probe judge against GPT-4o, on base models and domains it was not fitted on.

    make bench            # or: .venv/bin/python benchmarks/probe_judge.py [--reference DIR]

Reads the EM papers' judged answers of 10 organisms (``--reference``, else
``$EMLENS_REFERENCE``, else ``../shared/data/em-reference``, as ``analyses/_reference.py`` finds
them; skipped with a message when absent) through SmolLM2 (answer-token means, cached in
``out/ground_truth/features``, with the constructed incoherent answers of the coherence head:
the first run reads 5,000 answers, later runs only fit). Prints one line per figure,
``name: value (target; met or missed)``: first issue 21's targets, the judge fitted as it
ships in folds that leave out a base model and a question at once (24 fits, about 20
minutes on 2 threads), then issue 14's protocol (one base model out, one domain out) beside
the naive probe measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from emlens.core.models import load_model
from emlens.eval.probe.labelled import labelled_organism
from emlens.eval.probe.question_folds import leave_question_out, margin_coverage
from emlens.eval.probe.validation import fit_on, leave_group_out
from emlens.eval.probe.validation import summary as validation_summary
from emlens.eval.reference import read_organisms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))

ISSUE_NAIVE = {"auc_mean": 0.88, "auc_min": 0.74, "rate_error_median": 1.5, "rate_error_max": 11}
OLD_TARGETS = {"auc_mean": ">= 0.95", "rate_error_median": "<= 1 point", "rate_error_max": "<= 4"}


def line(name: str, value: float, note: str) -> None:
    print(f"{name}: {value:.3f} ({note})", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", help="the EM papers' reference folder")
    p.add_argument("--method", default="pcc", choices=["cc", "acc", "pcc", "pacc"])
    a = p.parse_args()
    from _reference import reference_folder, reference_missing  # analyses/

    if reference_missing(a.reference):
        print(f"probe_judge: skipped, {reference_missing(a.reference)}")
        return
    torch.set_num_threads(2)
    from _ground_truth import CACHE, INCOHERENT_PER_KIND, naive_probe
    from _judge_page import TARGETS, met, summary, target_text

    reference = reference_folder(a.reference)
    model = load_model("smollm2")
    layers = list(range(model.cfg.n_layers))
    orgs = [
        labelled_organism(
            model, o.judged, layers, CACHE / "features", incoherent_per_kind=INCOHERENT_PER_KIND
        )
        for o in read_organisms(reference)
    ]

    def fit(train: list) -> object:
        return fit_on(train, "smollm2", by="base_model")

    # issue 21: a base model and a question held out at once, as the judge is used
    rows = leave_question_out(orgs, "base_model", fit)
    figures = {**summary(rows), "coverage": margin_coverage(rows)["coverage"]}
    for key, rule, bound in TARGETS:
        want = target_text(rule, bound)
        verdict = "met" if met(figures[key], rule, bound) else "missed"
        line(
            f"probe judge, held-out base model x question, {key}",
            figures[key],
            f"target {want}; {verdict}",
        )
    # issue 14's protocol, beside the naive probe measured in the same run
    for by in ("base_model", "domain"):
        s = validation_summary(leave_group_out(orgs, by, fit), a.method)
        naive = naive_probe(orgs, by)
        n = {
            "auc_mean": np.mean([r["auc"] for r in naive]),
            "rate_error_median": np.median([r["error"] for r in naive]),
            "rate_error_max": np.max([r["error"] for r in naive]),
        }
        for k, target in OLD_TARGETS.items():
            note = f"target {target}; " if by == "base_model" else ""
            note += f"naive probe {n[k]:.3f}"
            if by == "base_model":
                note += f", issue 14: {ISSUE_NAIVE[k]}"
            line(f"probe judge, held-out {by}, {k} ({a.method})", s[k], note)


if __name__ == "__main__":
    main()
