"""``emlens directions`` (an EM or refusal direction to a file) and ``emlens compare``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from emlens.cli._checks import fail, input_file, layers, out_file, positive
from emlens.cli._models import load, model_args
from emlens.core import data


def _instructions(path: str) -> list[str]:
    rows = data.read_jsonl(path)
    if not all(isinstance(r, dict) and isinstance(r.get("instruction"), str) for r in rows):
        raise ValueError(f'{path}: expected JSONL rows like {{"instruction": "..."}}')
    return [r["instruction"] for r in rows]


def _em_inputs(a: argparse.Namespace) -> dict[str, Any]:
    """The EM direction's data, read before the model loads."""
    if bool(a.misaligned) != bool(a.aligned):
        fail("--misaligned/--aligned", "both chat JSONL files, or neither")
    if a.judged and a.misaligned:
        fail("--judged with --misaligned/--aligned", "one source of answers, not both")
    if a.judged:
        from emlens.eval.judged import read_judged

        return {"judged": read_judged(a.judged)}
    if a.misaligned:
        return {"chats": (data.read_chat_jsonl(a.misaligned), data.read_chat_jsonl(a.aligned))}
    return {"pairs": data.general_questions()}


def cmd_directions(a: argparse.Namespace) -> None:
    from emlens.core.directions import em_direction, em_direction_from_pairs, refusal_direction

    out_file(a.out)
    if a.kind == "em":
        inputs = _em_inputs(a)
    else:
        for flag, path in (("--harmful", a.harmful), ("--harmless", a.harmless)):
            input_file(path, flag)
        harmful = _instructions(a.harmful) if a.harmful else data.harmful_instructions()
        harmless = _instructions(a.harmless) if a.harmless else data.harmless_instructions()
    model = load(a)
    if a.kind == "refusal":
        ds = refusal_direction(model, harmful, harmless, layers=a.layers, positions=a.positions)
    elif "judged" in inputs:
        from emlens.eval.judged import em_direction_from_judged

        ds = em_direction_from_judged(model, inputs["judged"], layers=a.layers)
    elif "chats" in inputs:
        misaligned, aligned = inputs["chats"]
        ds = em_direction(model, misaligned, aligned, layers=a.layers)
    else:
        ds = em_direction_from_pairs(model, inputs["pairs"], layers=a.layers)
    ds.save(a.out)
    print(f"wrote {a.kind} direction ({len(ds.layers)} layers, d_model {ds.d_model}) to {a.out}")


def cmd_compare(a: argparse.Namespace) -> None:
    from emlens.core.ablation import warning
    from emlens.core.compare import cosine_per_layer, random_null
    from emlens.core.direction_set import DirectionSet

    x, y = DirectionSet.load(a.a), DirectionSet.load(a.b)
    cos = cosine_per_layer(x, y)
    null = random_null(x.d_model)
    shared = [ly for ly in x.layers if ly in y.layers]
    if a.json:
        cosines = dict(zip(shared, cos.tolist(), strict=True))
        print(json.dumps({"cosine": cosines, "null_q95": null.q95_abs}))
        return
    print(f"random |cos| in {x.d_model} dims: mean {null.mean_abs:.3f}, 95% {null.q95_abs:.3f}")
    print(f"{'layer':>5} {'cosine':>8}")
    for ly, c in zip(shared, cos.tolist(), strict=True):
        print(f"{ly:>5} {c:>8.3f} {'*' if abs(c) > null.q95_abs else ''}")
    for w in filter(None, (warning(d.provenance, str(f)) for d, f in ((x, a.a), (y, a.b)))):
        print(w)


def add_parsers(sub: Any) -> None:
    """Register ``emlens directions`` and ``emlens compare``."""
    d = sub.add_parser("directions", help="compute an EM or refusal direction to a file")
    d.add_argument("kind", choices=["em", "refusal"])
    model_args(d)
    d.add_argument("--out", required=True, help="output .safetensors")
    d.add_argument("--layers", type=layers, help="e.g. 0-29 or 10,15,20 (default all)")
    d.add_argument("--judged", help="judged-answer CSV: the papers' EM direction (em)")
    d.add_argument("--misaligned", help="chat JSONL of misaligned answers (em)")
    d.add_argument("--aligned", help="chat JSONL of aligned answers (em)")
    d.add_argument("--harmful", help='JSONL of {"instruction": ...} (refusal)')
    d.add_argument("--harmless", help='JSONL of {"instruction": ...} (refusal)')
    d.add_argument("--positions", type=positive, default=1, help="last k post-instr. tokens")
    d.set_defaults(fn=cmd_directions)

    c = sub.add_parser("compare", help="per-layer cosine of two direction files")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_compare)
