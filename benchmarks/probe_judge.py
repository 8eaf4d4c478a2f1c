"""The offline probe judge against GPT-4o, on base models and domains it was not fitted on.

    make bench            # or: .venv/bin/python benchmarks/probe_judge.py [--reference DIR]

Reads the EM papers' judged answers of 10 organisms (``--reference``, else
``$EMLENS_REFERENCE``, else ``../shared/data/em-reference``, as ``analyses/_reference.py`` finds
them; skipped with a message when absent) through SmolLM2 (answer-token means, cached in
``out/ground_truth/features``: the first run reads 4,000 answers, later runs only fit), fits
the probe judge leaving one base model out, then one domain out, and prints one line per
figure, ``name: value (target)``, beside the naive probe of issue 14 measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from emlens.core.models import load_model
from emlens.eval.probe.labelled import labelled_organism
from emlens.eval.probe.validation import fit_on, leave_group_out, summary
from emlens.eval.reference import read_organisms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analyses"))

TARGETS = {
    "auc_mean": ">= 0.95",
    "auc_min": "",
    "rate_error_median": "<= 1 point",
    "rate_error_max": "<= 4 points",
}
ISSUE_NAIVE = {"auc_mean": 0.88, "auc_min": 0.74, "rate_error_median": 1.5, "rate_error_max": 11}


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
    from _ground_truth import CACHE, naive_probe

    reference = reference_folder(a.reference)

    model = load_model("smollm2")
    layers = list(range(model.cfg.n_layers))
    features = CACHE / "features"
    orgs = [labelled_organism(model, o.judged, layers, features) for o in read_organisms(reference)]
    for by in ("base_model", "domain"):
        rows = leave_group_out(orgs, by, lambda tr: fit_on(tr, "smollm2", by="base_model"))
        s = summary(rows, a.method)
        naive = naive_probe(orgs, by)
        n = {
            "auc_mean": np.mean([r["auc"] for r in naive]),
            "auc_min": np.min([r["auc"] for r in naive]),
            "rate_error_median": np.median([r["error"] for r in naive]),
            "rate_error_max": np.max([r["error"] for r in naive]),
        }
        for k, target in TARGETS.items():
            note = f"target {target}; " if target and by == "base_model" else ""
            note += f"naive probe {n[k]:.3f}"
            if by == "base_model":
                note += f", issue 14: {ISSUE_NAIVE[k]}"
            line(f"probe judge, held-out {by}, {k} ({a.method})", s[k], note)


if __name__ == "__main__":
    main()
