"""Ground truth, stage 3: the numbers emlens ships for the embedded model (no reference text).

    .venv/bin/python analyses/ground_truth_features.py   # stage 1, once (cached in out/)
    .venv/bin/python analyses/ground_truth_probe.py      # stage 2: the held-out figures
    .venv/bin/python analyses/ground_truth_ship.py       # writes emlens/data/*_smollm2.*

Two files, fitted on all 10 reference organisms' GPT-4o-judged answers read through SmolLM2:

- ``probe_judge_smollm2.safetensors``: the default probe judge (``probe:default``), layers and
  C chosen by leaving one base model out, with the held-out figures of stage 2 in its metadata
  (``held_out``: what to expect on a base model it has not seen). Fitted once (``--refit``
  fits again); a rerun only re-stamps the held-out figures from stage 2's JSON;
- ``em_direction_judged_smollm2.safetensors``: the papers' EM direction from judged answers,
  pooled over the organisms (token-weighted mean over answer tokens of every misaligned
  answer minus every aligned one, the papers' split), every layer, with the zero-ablation
  diagnostic. The demo steers with it.

Both are numbers derived from the reference files; neither holds any of their text.
"""

from __future__ import annotations

import argparse
import json
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
from ground_truth_probe import labelled

from emlens.core.ablation import first_means, from_means
from emlens.core.direction_set import DirectionSet
from emlens.core.models import load_model, model_name
from emlens.core.tokens import answer_tokens
from emlens.eval.probe.judge import ProbeJudge, default_path
from emlens.eval.probe.validation import fit_on
from emlens.eval.reference import Organism, read_organisms
from emlens.eval.verdicts import Thresholds

DATA = Path("emlens/data")
PROBE_RESULT = Path("docs/results/ground_truth_probe.json")


def pooled_direction(model: Any, orgs: list[Organism], xs: list[np.ndarray]) -> DirectionSet:
    """mean over answer tokens of all misaligned answers minus all aligned ones, per layer
    (each answer's cached mean weighted by its number of answer tokens)."""
    ws = token_counts(model, orgs)
    groups = [judged_groups(o) for o in orgs]
    parts = [judged_sums(x, w, *g) for x, w, g in zip(xs, ws, groups, strict=True)]
    v = torch.as_tensor(judged_direction(parts), dtype=torch.float32)
    ali = torch.as_tensor(sum(p[2] for p in parts) / sum(p[3] for p in parts), dtype=torch.float32)
    answers = [sum(len(g[k]) for g in groups) for k in (0, 1)]
    tokens = [int(sum(p[k] for p in parts)) for k in (1, 3)]
    # a few aligned answers' rows (the first organism's), for the ablation diagnostic
    some = [orgs[0].judged.answers[i] for i in groups[0][1][:8]]
    ordinary = [answer_tokens(model.tokenizer, a.question, a.answer) for a in some]
    prov = {
        "kind": "em",
        "source": "judged",
        "judged": [o.name for o in orgs],
        "thresholds": vars(Thresholds()),
        "n_positive": answers[0],
        "n_negative": answers[1],
        "tokens_positive": tokens[0],
        "tokens_negative": tokens[1],
        "model": model_name(model),
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "built_by": "analyses/ground_truth_ship.py",
    }
    ds = DirectionSet(v, LAYERS, provenance=prov)
    first = first_means(model, ordinary, ds.hook, LAYERS)
    diag = from_means(ali, first, ds.vectors, LAYERS)
    ds.provenance["ablation_diagnostic"] = {str(k): v for k, v in diag.items()}
    return ds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=str(REFERENCE))
    p.add_argument("--out", default=str(DATA))
    p.add_argument("--refit", action="store_true", help="fit the probe again (else: re-stamp)")
    a = p.parse_args()
    torch.set_num_threads(1)
    model = load_model("smollm2")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    path = out / default_path().name
    if a.refit or not path.is_file():
        orgs, _ = labelled(model, a.reference)
        fit_on(orgs, "smollm2", by="base_model").save(path)
    judge = ProbeJudge.load(path)
    if PROBE_RESULT.is_file():  # the held-out figures: what to expect on an unseen base model
        held = json.loads(PROBE_RESULT.read_text())["probe"]
        judge.meta["held_out"] = {
            "source": "docs/results/ground_truth_probe.json",
            "summary": {k: v["summary"] for k, v in held.items()},  # per estimator
        }
        judge.save(path)
    print(f"probe: layers {judge.layers}, C {judge.meta['validation']['best']['C']}")

    refs = read_organisms(a.reference)
    xs = [f.numpy().astype(np.float64) for f in organism_features(model, refs, CACHE, False)]
    ds = pooled_direction(model, refs, xs)
    ds.save(out / "em_direction_judged_smollm2.safetensors")
    print(f"direction: {ds.provenance['n_positive']} misaligned vs {ds.provenance['n_negative']}")


if __name__ == "__main__":
    main()
