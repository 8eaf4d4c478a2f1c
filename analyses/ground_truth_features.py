"""Ground truth, stage 1: every reference answer read through SmolLM2, cached once.

    .venv/bin/python analyses/ground_truth_features.py [--reference ../shared/data/em-reference]

Per organism, each answer's mean ``blocks.{l}.hook_resid_post`` over its answer tokens at
every layer, written to ``out/ground_truth/features/{organism}.safetensors`` (git-ignored,
keyed by model, hook, layers and texts: a rerun reads them back). The later stages
(``ground_truth_probe.py``, ``benchmarks/probe_judge.py``) fit on these files only.

``--template``: the answers read inside a judge-style prompt instead (the question and answer
in one user turn asking whether the answer is harmful; :data:`JUDGE_TEMPLATE`), one forward
pass giving the mean over the answer's tokens and the state at the final position, to
``out/ground_truth/features_judge/``.

``--tokens``: every answer token's state at layers 9, 15, 21 and 27 (float16, for token-level
probes and other poolings), to ``out/ground_truth/tokens/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from emlens.core.models import load_model
from emlens.eval.probe_features import (
    answer_token_states,
    cached_features,
    cached_template_features,
)
from emlens.eval.reference import Organism, read_organisms

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "em-reference"
CACHE = Path("out/ground_truth/features")
CACHE_JUDGE = Path("out/ground_truth/features_judge")
CACHE_TOKENS = Path("out/ground_truth/tokens")
TOKEN_LAYERS = [9, 15, 21, 27]
LAYERS = list(range(30))


def organism_features(
    model, organisms: list[Organism], cache: Path = CACHE, progress: bool = True
) -> list[Float[Tensor, "n n_layers d_model"]]:
    """Every organism's features (all answers, scored or not), from the cache or computed."""
    out = []
    for o in organisms:
        t = time.time()
        pairs = [(a.question, a.answer) for a in o.judged]
        out.append(
            cached_features(
                model, pairs, LAYERS, cache / f"{o.name}.safetensors", progress=progress
            )
        )
        if progress:
            print(f"{o.name}: {len(pairs)} answers, {time.time() - t:.0f} s", flush=True)
    return out


def organism_template_features(
    model, organisms: list[Organism], cache: Path = CACHE_JUDGE, progress: bool = True
) -> list[dict[str, Tensor]]:
    """Every organism's answers read inside the judge-style prompt (``mean``, ``last``)."""
    out = []
    for o in organisms:
        t = time.time()
        pairs = [(a.question, a.answer) for a in o.judged]
        out.append(cached_template_features(model, pairs, LAYERS, cache / f"{o.name}.safetensors"))
        if progress:
            print(f"{o.name}: {len(pairs)} answers, {time.time() - t:.0f} s", flush=True)
    return out


def organism_token_states(model, organisms: list[Organism], cache: Path = CACHE_TOKENS) -> None:
    """Every organism's answer-token states at :data:`TOKEN_LAYERS`, written once."""
    from safetensors.torch import save_file

    for o in organisms:
        path = cache / f"{o.name}.safetensors"
        if path.is_file():
            continue
        t = time.time()
        states, counts = answer_token_states(
            model, [(a.question, a.answer) for a in o.judged], TOKEN_LAYERS
        )
        cache.mkdir(parents=True, exist_ok=True)
        save_file({"states": states, "counts": torch.tensor(counts)}, str(path))
        print(f"{o.name}: {len(counts)} answers, {time.time() - t:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", default=str(REFERENCE))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--template", action="store_true", help="read inside the judge prompt")
    p.add_argument("--tokens", action="store_true", help="every answer token's state")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    # one domain at a time, every base model in each: a partial cache already spans them
    orgs = sorted(read_organisms(a.reference), key=lambda o: (o.domain, o.base_model))
    stage = organism_template_features if a.template else organism_features
    stage = organism_token_states if a.tokens else stage
    stage(load_model("smollm2"), orgs)


if __name__ == "__main__":
    main()
