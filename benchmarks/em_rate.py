"""What one offline EM rate costs: `evaluate_em` with the probe judge against the bare work.

    make bench            # or: .venv/bin/python benchmarks/em_rate.py [--n 50] [--questions 1]

On the embedded model with ``probe:default``: the bare work is `generate` (the papers'
sampling: temperature 1, 128 new tokens) plus one reading pass of the probe over the same
answers (`ProbeJudge.proba_answers`); `evaluate_em` does the same and adds its checks, the
per-question journal keys, the verdicts and the rate's cluster bootstrap. Each is timed twice,
interleaved, best of two; the ratio is what to read (target <= 1.15). The minutes for the
papers' size (8 questions x 50 samples) are the measured seconds per question times 8.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from emlens.core.data import em_questions
from emlens.core.generation import generate
from emlens.core.models import load_model
from emlens.eval.em_rate import evaluate_em
from emlens.eval.judge_spec import make_judge
from emlens.eval.probe.judge import ProbeJudge

TOKENS = 128  # evaluate_em's default answer length


def seconds(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=50, help="samples per question (the papers: 50)")
    p.add_argument("--questions", type=int, default=1, help="questions timed")
    a = p.parse_args()
    torch.set_num_threads(2)
    model = load_model("smollm2")
    judge = make_judge("probe:default", model=model)
    assert isinstance(judge, ProbeJudge)
    qs = [q for q in em_questions() if q.free_form][: a.questions]

    def bare() -> None:
        for q in qs:
            kw = {"n": a.n, "max_new_tokens": TOKENS, "temperature": 1.0, "system": q.system}
            gens = generate(model, q.paraphrases, **kw)
            judge.proba_answers(model, [(g.question, g.answer) for g in gens])

    def pipeline() -> None:
        evaluate_em(model, qs, judge, n=a.n, max_new_tokens=TOKENS, progress=False)

    times: dict[str, list[float]] = {"bare": [], "evaluate_em": []}
    for _ in range(2):
        times["bare"].append(seconds(bare))
        times["evaluate_em"].append(seconds(pipeline))
    base, ours = min(times["bare"]), min(times["evaluate_em"])
    n_answers = a.n * sum(len(q.paraphrases) for q in qs)
    print(
        f"offline EM rate, evaluate_em with probe:default / bare generate + one reading pass "
        f"({n_answers} answers, {TOKENS} tokens): {ours / base:.3f} (target <= 1.15; "
        f"{ours:.1f} s vs {base:.1f} s)",
        flush=True,
    )
    per_question = ours / len(qs) * 50 / a.n
    print(
        f"offline EM rate at the papers' size (8 questions x 50 samples, embedded model): "
        f"{8 * per_question / 60:.1f} min (from {len(qs)} question(s) x {a.n} measured)",
        flush=True,
    )


if __name__ == "__main__":
    main()
