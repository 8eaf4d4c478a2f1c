"""The study's speed levers (issue 10), each against its baseline measured in the same run.

    .venv/bin/python benchmarks/study_levers.py               # make bench; SmolLM2
    .venv/bin/python benchmarks/study_levers.py --model tiny-llama --pairs 4   # a smoke run

- ablation variants (finding 2b): 8 ablations' contrastive scores and KL through
  ``pair_effects`` (shared passes) / one metric at a time (``contrastive_scores`` and
  ``kl_divergence`` per ablation);
- a steering-sweep cell: the contrastive score and the aligned conversations' cross-entropy
  through ``pair_effects(kl=False)`` / ``contrastive_scores`` and ``cross_entropy``;
- a steering sweep (the study's 9 layers, 2 scales, no KL) through ``pair_effects``: passes
  started at each steered block / every pass through every block (``share_prefix=False``);
- lanes (``make study``): two analysis-sized jobs (a process that loads the model and scores
  pairs under 4 steers) as two one-thread processes at once / one after the other with two
  threads each, wall clock.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of

import emlens as eml
from emlens.eval.effects import pair_effects


def line(name: str, value: float, target: str) -> None:
    print(f"{name}: {value:.3f} ({target})", flush=True)


def conversation(tok, question: str, answer: str) -> str:
    turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return tok.apply_chat_template(turns, tokenize=False)


def job(model_spec: str, n_pairs: int, threads: int) -> None:
    """The lanes benchmark's unit of work: load the model, score pairs under 4 steers."""
    torch.set_num_threads(threads)
    model = eml.load_model(model_spec)
    pairs = eml.general_questions()[:n_pairs]
    d = model.cfg.d_model
    layer = model.cfg.n_layers // 2
    steers = {f"s{k}": [eml.core.Steer(torch.randn(1, d), (layer,), 1.0)] for k in range(4)}
    pair_effects(model, pairs, steers, kl=False)


def lanes(model_spec: str, n_pairs: int) -> float:
    """Wall clock of two jobs at once with one thread each over two one after the other."""
    me = [sys.executable, __file__, "--model", model_spec, "--pairs", str(n_pairs), "--job"]

    def run(commands: list[list[str]]) -> float:
        t0 = time.perf_counter()
        for p in [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in commands]:
            if p.wait() != 0:
                raise SystemExit("a lanes job failed")
        return time.perf_counter() - t0

    sequential = sum(run([[*me, "2"]]) for _ in range(2))
    parallel = run([[*me, "1"], [*me, "1"]])
    print(f"# lanes: 2 jobs one after the other {sequential:.0f} s, at once {parallel:.0f} s")
    return parallel / sequential


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--job", type=int, help="(internal) run one lanes job with this many threads")
    a = p.parse_args()
    if a.job:
        job(a.model, a.pairs, a.job)
        return
    torch.set_num_threads(2)
    model = eml.load_model(a.model)
    pairs = eml.general_questions()[: a.pairs]
    texts = [conversation(model.tokenizer, q.question, q.aligned) for q in pairs]
    d, n = model.cfg.d_model, model.cfg.n_layers
    g = torch.Generator().manual_seed(0)
    ablations = {
        f"a{k}": [eml.ablate(torch.randn(d, generator=g), layers=list(range(n)))] for k in range(8)
    }

    def one_at_a_time() -> None:
        for ivs in ablations.values():
            eml.eval.contrastive_scores(model, pairs, ivs)
            eml.kl_divergence(model, texts, ivs)

    t_one = best_of(one_at_a_time, repeats=2)
    t_shared = best_of(lambda: pair_effects(model, pairs, ablations), repeats=2)
    line("ablation_variants_pair_effects_vs_one_metric_at_a_time", t_shared / t_one, "target < 0.6")

    steer = [eml.core.Steer(torch.randn(1, d), (n // 2,), 1.0)]

    def cell_one() -> None:
        eml.eval.contrastive_scores(model, pairs, steer)
        eml.eval.cross_entropy(model, texts, steer)

    t_cell = best_of(cell_one, repeats=2)
    t_cell_shared = best_of(lambda: pair_effects(model, pairs, {"": steer}, kl=False), repeats=2)
    line("sweep_cell_pair_effects_vs_one_metric_at_a_time", t_cell_shared / t_cell, "target < 0.8")

    layers = list(range(3, n, 3)) or [n - 1]  # the study's layers on SmolLM2 (3 .. 27)
    sweep = {
        f"{layer} {scale}": [eml.core.Steer(torch.randn(1, d, generator=g), (layer,), scale)]
        for layer in layers
        for scale in (4.0, 8.0)
    }
    every_block = {"kl": False, "share_prefix": False}
    t_full = best_of(lambda: pair_effects(model, pairs, sweep, **every_block), repeats=1)
    t_resumed = best_of(lambda: pair_effects(model, pairs, sweep, kl=False), repeats=1)
    line("steering_sweep_resumed_vs_every_block", t_resumed / t_full, "target < 0.75")

    line("study_lanes_two_one_thread_processes_vs_sequential", lanes(a.model, a.pairs), "< 1")


if __name__ == "__main__":
    main()
