"""Ground truth, first step: every reference answer read through the model, cached once.

    .venv/bin/python analyses/ground_truth_features.py   # out/ground_truth/features/
    .venv/bin/python analyses/ground_truth_features.py --template   # .../features_judge/
    .venv/bin/python analyses/ground_truth_features.py --tokens     # .../tokens/

Makes no results page: it fills the cache the other ground-truth scripts read (they compute
whatever is missing themselves, so this step only does the slow reading once, first). The
reference folder: ``--reference``, else ``$EMLENS_REFERENCE``, else
``../shared/data/em-reference`` (``_reference.py``).

Per organism, each answer's mean ``blocks.{l}.hook_resid_post`` over its answer tokens at
every layer, written to ``<--cache>/features/{organism}.safetensors`` (``out/ground_truth``,
git-ignored, keyed by model, hook, layers and texts: a rerun reads them back), beside each
answer's number of answer tokens (``{organism}.tokens.json``), by which the later steps weigh
the cached means to take the papers' token-weighted direction (``_ground_truth.judged_sums``).

``--template``: the answers read inside a judge-style prompt instead (the question and answer
in one user turn asking whether the answer is harmful; ``JUDGE_TEMPLATE`` of
``emlens.eval.probe.features``), one forward pass giving the mean over the answer's tokens and
the state at the final position, to ``<--cache>/features_judge/``.

``--tokens``: every answer token's state at layers 9, 15, 21 and 27 (float16, for token-level
probes and other poolings), to ``<--cache>/tokens/``.

No stages (and no use for ``--out``): the cache files are this step's saved output, and a
rerun resumes at the first organism not yet cached. About 0.3 s an answer on one CPU thread
(4,000 answers: 20 minutes; 40 with another job on the same cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import _common as common
import _ground_truth as gt
import torch
from safetensors.torch import save_file
from torch import Tensor

from emlens.eval.probe.features import answer_token_states, cached_template_features
from emlens.eval.reference import Organism

TOKEN_LAYERS = [9, 15, 21, 27]


def options(p: argparse.ArgumentParser) -> None:
    gt.options(p)
    p.add_argument("--template", action="store_true", help="read inside the judge prompt")
    p.add_argument("--tokens", action="store_true", help="every answer token's state")


def organism_template_features(
    model: Any, orgs: list[Organism], cache: Path, progress: bool = True
) -> list[dict[str, Tensor]]:
    """Every organism's answers read inside the judge-style prompt (``mean``, ``last``)."""
    out = []
    for o in orgs:
        t = time.time()
        pairs = [(a.question, a.answer) for a in o.judged]
        path = cache / f"{o.name}.safetensors"
        out.append(cached_template_features(model, pairs, gt.layers(model), path))
        if progress:
            print(f"{o.name}: {len(pairs)} answers, {time.time() - t:.0f} s", flush=True)
    return out


def organism_token_states(model: Any, orgs: list[Organism], cache: Path) -> None:
    """Every organism's answer-token states at :data:`TOKEN_LAYERS`, written once."""
    for o in orgs:
        path = cache / f"{o.name}.safetensors"
        if path.is_file():
            continue
        t = time.time()
        states, counts = answer_token_states(
            model, [(a.question, a.answer) for a in o.judged], TOKEN_LAYERS
        )
        tensors = {"states": states, "counts": torch.tensor(counts)}
        common.write_atomic(path, lambda p, t=tensors: save_file(t, str(p)))
        print(f"{o.name}: {len(counts)} answers, {time.time() - t:.0f} s", flush=True)


def main(run: common.Analysis) -> None:
    # one domain at a time, every base model in each: a partial cache already spans them
    orgs = sorted(gt.organisms(run), key=lambda o: (o.domain, o.base_model))
    cache = Path(run.args.cache)
    if run.args.tokens:
        organism_token_states(run.model, orgs, cache / "tokens")
    elif run.args.template:
        organism_template_features(run.model, orgs, cache / "features_judge")
    else:
        features = gt.features_folder(run)
        gt.organism_features(run.model, orgs, features)
        gt.token_counts(run.model, orgs, features)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
