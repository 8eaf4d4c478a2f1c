"""``emlens generate`` (answers, optionally steered or ablated) and ``emlens demo``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from emlens.cli._checks import (
    count,
    finite,
    input_file,
    interventions,
    non_negative,
    out_folder,
    positive,
)
from emlens.cli._models import intervention_args, load, model_args
from emlens.core import data


def questions_of(a: argparse.Namespace) -> list[data.Question]:
    """``--questions`` (or emlens's EM questions), read before any model loads."""
    input_file(a.questions, "--questions")
    return data.read_questions(a.questions) if a.questions else data.em_questions()


def cmd_generate(a: argparse.Namespace) -> None:
    from emlens.core.generation import generate

    if a.question:
        questions = a.question
    else:
        qs = questions_of(a)
        questions = [q.paraphrases[0] for q in qs if q.free_form or a.all_questions]
    model = load(a)
    samples = generate(
        model,
        questions,
        interventions(a, model),
        n=a.n,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        seed=a.seed,
        progress=True,
    )
    for s in samples:
        print(json.dumps({"question": s.question, "sample": s.sample, "answer": s.answer}))


def cmd_demo(a: argparse.Namespace) -> None:
    from emlens.demo import run_demo

    out_folder(a.out)
    run_demo(a.out, a.model, a.steer_layer, a.steer_scale)


def sampling_args(s: argparse.ArgumentParser, n: int, max_new_tokens: int, t: float) -> None:
    """Add ``--n``, ``--max-new-tokens``, ``--temperature`` and ``--seed``, range-checked."""
    s.add_argument("--n", type=positive, default=n, help="samples per question")
    s.add_argument("--max-new-tokens", type=positive, default=max_new_tokens)
    s.add_argument("--temperature", type=non_negative, default=t)
    s.add_argument("--seed", type=int, default=0)


def add_parsers(sub: Any) -> None:
    """Register ``emlens generate`` and ``emlens demo``."""
    g = sub.add_parser("generate", help="answer questions, optionally steered or ablated")
    model_args(g)
    g.add_argument("--question", action="append", help="a question (repeatable)")
    g.add_argument("--questions", help="a question YAML file (default: emlens's EM questions)")
    g.add_argument("--all-questions", action="store_true", help="include _json/_template ids")
    intervention_args(g)
    sampling_args(g, 1, 64, 0.0)
    g.set_defaults(fn=cmd_generate)

    m = sub.add_parser("demo", help="the main job on the embedded model")
    m.add_argument("--out", default="out/demo")
    m.add_argument("--model", default="smollm2")
    m.add_argument("--steer-layer", type=count)
    m.add_argument("--steer-scale", type=finite, default=4.0)
    m.set_defaults(fn=cmd_demo)
