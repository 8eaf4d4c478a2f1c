"""``emlens screen DATA.jsonl``: how far a training set pulls the model along the EM direction,
before training (`emlens.eval.screen`)."""

from __future__ import annotations

import argparse
from typing import Any

from emlens.cli._checks import (
    REFERENCE,
    count,
    direction_file,
    fail,
    input_file,
    out_file,
    positive,
)
from emlens.cli._models import load, model_args
from emlens.core import data


def _short(text: str, n: int = 70) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 3] + "..."


def cmd_screen(a: argparse.Namespace) -> None:
    from emlens.eval.judge_spec import make_judge
    from emlens.eval.screen import screen

    input_file(a.data, "DATA")
    out_file(a.out)
    rows = data.read_chat_jsonl(a.data)[: a.limit]
    direction = direction_file(a.direction)
    if a.layer not in direction.layers:  # checked before the model loads
        ly = direction.layers
        has = f"{ly[0]}..{ly[-1]}" if ly == list(range(ly[0], ly[-1] + 1)) else f"{ly}"
        fail(f"--layer {a.layer}", f"a layer the direction has ({has})")
    model = load(a)
    direction.check_model(model)
    judge = make_judge("probe:default", model=model) if a.probe else None
    s = screen(model, rows, direction, a.layer, a.max_new_tokens, judge=judge, progress=True)
    if a.out:
        s.write_csv(a.out)
    print(f"{a.data}: {len(s.rows)} rows, layer {s.layer}, {s.n_empty} with an empty base answer")
    print(f"  score (projection difference on the EM direction): {s.score}")
    print(f"  answer length (tokens): {s.length}; minus the base answer's: {s.length_gap}")
    print(f"  cross-entropy gap (nats/token, dataset minus base answer): {s.cross_entropy_gap}")
    if s.p_em is not None:
        print(f"  probe P(EM) of the dataset answers: {s.p_em}")
    print(f"top {a.top} rows by score:")
    for r in s.top(a.top):
        print(f"  {r.score:+.3f}  Q: {_short(r.question)}\n          A: {_short(r.answer)}")


def add_parsers(sub: Any) -> None:
    """Register ``emlens screen``."""
    s = sub.add_parser("screen", help="score training data for EM before training")
    s.add_argument("data", metavar="DATA", help="chat JSONL (.gz too): the training rows")
    model_args(s)
    s.add_argument(
        "--direction",
        default=REFERENCE,
        help="a direction file (default reference: the shipped judged EM direction, SmolLM2's)",
    )
    s.add_argument("--layer", type=count, default=15, help="the layer read (default 15)")
    s.add_argument("--limit", type=positive, help="screen only the first N rows")
    s.add_argument("--max-new-tokens", type=positive, default=48, help="base answers' length")
    s.add_argument("--probe", action="store_true", help="add the probe judge's P(EM) baseline")
    s.add_argument("--top", type=count, default=5, help="rows printed (default 5)")
    s.add_argument("--out", help="write every row's scores to this CSV file")
    s.set_defaults(fn=cmd_screen)
