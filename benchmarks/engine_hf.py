"""Steered generation through the hooked bridge vs the plain HF engine (issue 25).

    .venv/bin/python benchmarks/engine_hf.py

On the embedded SmolLM2, 16 answers of 48 new tokens (greedy, one batch) steered with the
judged EM direction at layer 15, scale 4: ``generate(..., engine="bridge")`` (the steering as a
hook) against ``engine="hf"`` (the steering as a down_proj bias of a plain Llama model sharing
the weights), each timed in the same process, alternating, best of 3, and the answers compared.
Prints the ratio hf / bridge (target <= 0.9: a steered answer should cost what a plain model's
does) and whether the answers are the same.
"""

from __future__ import annotations

import time

import torch

import emlens as eml

QUESTIONS = [q.paraphrases[0] for q in eml.em_questions() if q.free_form][:8] * 2


def main() -> None:
    torch.manual_seed(0)
    model = eml.load_model()
    steer = [eml.steer(eml.reference_em_direction(model), [15], 4.0)]
    kw = {"max_new_tokens": 48, "batch_size": 16}
    eml.generate(model, QUESTIONS[:2], steer, max_new_tokens=4)  # warm-up
    times: dict[str, list[float]] = {"bridge": [], "hf": []}
    answers = {}
    for _ in range(3):
        for engine in times:
            t = time.perf_counter()
            out = eml.generate(model, QUESTIONS, steer, engine=engine, **kw)
            times[engine].append(time.perf_counter() - t)
            answers[engine] = [s.answer for s in out]
    best = {k: min(v) for k, v in times.items()}
    same = sum(a == b for a, b in zip(answers["bridge"], answers["hf"], strict=True))
    print(
        f"steered generation, 16 x 48 tokens: bridge {best['bridge']:.2f} s, hf {best['hf']:.2f} s"
    )
    print(f"engine_hf_over_bridge: {best['hf'] / best['bridge']:.3f} (target <= 0.9)")
    print(f"same greedy answers: {same} of {len(QUESTIONS)}")


if __name__ == "__main__":
    main()
