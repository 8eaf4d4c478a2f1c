"""Ground truth: the numbers emlens ships for the embedded model (no reference text).

    .venv/bin/python analyses/ground_truth_features.py   # the features, once (out/)
    .venv/bin/python analyses/ground_truth_probe.py      # the held-out figures
    .venv/bin/python analyses/ground_truth_ship.py       # writes emlens/data/*_smollm2.*

Makes no results page: two files in ``--out`` (default ``emlens/data``), fitted on all 10
reference organisms' GPT-4o-judged answers read through SmolLM2 (the reference folder:
``--reference``, else ``$EMLENS_REFERENCE``, else ``../shared/data/em-reference``):

- ``probe_judge_smollm2.safetensors``: the default probe judge (``probe:default``), layers and
  C chosen by leaving one base model out, with its coherence head (fitted on GPT-4o's
  coherence verdicts and `_ground_truth.INCOHERENT_PER_KIND` constructed incoherent answers
  of each kind per organism) and the held-out figures of
  ``docs/results/ground_truth_probe.json`` in its metadata (``held_out``: what to expect on a
  base model it has not seen); its ``rate_margin`` (the judge's error added to every rate
  interval) is `judge_margin` of the rate errors of ``docs/results/ground_truth_judge.json``
  (each organism's rate from judges that saw neither its base model nor the question).
  Fitted once (``--refit`` fits again); a rerun only re-stamps the held-out figures;
- ``em_direction_judged_smollm2.safetensors``: the papers' EM direction from judged answers,
  pooled over the organisms (token-weighted mean over answer tokens of every misaligned
  answer minus every aligned one, the papers' split), every layer, with the zero-ablation
  diagnostic. The demo steers with it.

Both are numbers derived from the reference files; neither holds any of their text. No stages:
the two files are the saved output (the probe is refitted only when asked).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import _common as common
import _ground_truth as gt
import numpy as np
import torch

from emlens.core.ablation import first_means, from_means
from emlens.core.direction_set import DirectionSet
from emlens.core.models import model_name
from emlens.core.tokens import answer_tokens
from emlens.eval.probe.judge import ProbeJudge, default_path
from emlens.eval.probe.validation import fit_on
from emlens.eval.rates import judge_margin
from emlens.eval.reference import Organism
from emlens.eval.verdicts import Thresholds

DATA = common.ROOT / "emlens/data"
PROBE_RESULT = common.RESULTS / "ground_truth_probe.json"
JUDGE_RESULT = common.RESULTS / "ground_truth_judge.json"


def options(p: argparse.ArgumentParser) -> None:
    gt.options(p)
    p.set_defaults(out=str(DATA))  # the package's data folder, not a results folder
    p.add_argument("--refit", action="store_true", help="fit the probe again (else: re-stamp)")
    p.add_argument("--held-out", default=str(PROBE_RESULT), help="ground_truth_probe.py's JSON")
    p.add_argument("--judge-result", default=str(JUDGE_RESULT), help="ground_truth_judge.py's")


def pooled_direction(
    model: Any, orgs: list[Organism], xs: list[np.ndarray], cache: Path
) -> DirectionSet:
    """mean over answer tokens of all misaligned answers minus all aligned ones, per layer
    (each answer's cached mean weighted by its number of answer tokens)."""
    ws = gt.token_counts(model, orgs, cache)
    groups = [gt.judged_groups(o) for o in orgs]
    parts = [gt.judged_sums(x, w, *g) for x, w, g in zip(xs, ws, groups, strict=True)]
    v = torch.as_tensor(gt.judged_direction(parts), dtype=torch.float32)
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
    layers = gt.layers(model)
    ds = DirectionSet(v, layers, provenance=prov)
    first = first_means(model, ordinary, ds.hook, layers)
    diag = from_means(ali, first, ds.vectors, layers)
    ds.provenance["ablation_diagnostic"] = {str(k): v for k, v in diag.items()}
    return ds


def stamp_margin(judge: ProbeJudge, result: Path) -> None:
    """The judge's ``rate_margin`` from the question folds' rate errors (leaving out a base
    model and a question), and their summary in ``meta["held_out_question"]``."""
    if not result.is_file():
        print(f"no {result}: the probe ships without a rate margin")
        return
    r = json.loads(result.read_text())["base_model"]
    errors = [row["pcc"]["signed_error"] / 100 for row in r["judge"]["rows"]]
    judge.rate_margin = judge_margin(errors)
    judge.meta["held_out_question"] = {
        "source": common.recorded(argparse.Namespace(judge_result=str(result)))["judge_result"],
        "by": "base_model x question",
        "summary": r["judge"]["summary"],
        "coverage": r["margin"]["coverage"],
    }


def main(run: common.Analysis) -> None:
    model, cache = run.model, gt.features_folder(run)
    refs = gt.organisms(run)
    run.out.mkdir(parents=True, exist_ok=True)

    path = run.out / default_path().name
    if run.args.refit or not path.is_file():
        orgs, _ = gt.labelled(model, refs, cache, gt.INCOHERENT_PER_KIND)
        fit_on(orgs, run.args.model, by="base_model").save(path)
    judge = ProbeJudge.load(path)
    result = Path(run.args.held_out).resolve()
    if result.is_file():  # the held-out figures: what to expect on an unseen base model
        held = json.loads(result.read_text())["probe"]
        judge.meta["held_out"] = {
            "source": common.recorded(argparse.Namespace(held_out=str(result)))["held_out"],
            "summary": {k: v["summary"] for k, v in held.items()},  # per estimator
        }
    stamp_margin(judge, Path(run.args.judge_result).resolve())
    judge.save(path)
    print(f"probe: layers {judge.layers}, C {judge.meta['validation']['best']['C']}")

    xs = [f.numpy().astype(np.float64) for f in gt.organism_features(model, refs, cache, False)]
    ds = pooled_direction(model, refs, xs, cache)
    ds.save(run.out / "em_direction_judged_smollm2.safetensors")
    print(f"direction: {ds.provenance['n_positive']} misaligned vs {ds.provenance['n_negative']}")


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
