"""The ``emlens`` command: directions, compare, generate, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emlens import _cli_export, _cli_train
from emlens._cli_models import add_load_options
from emlens._cli_models import load as _load  # the model of --model/--adapter/--device/...
from emlens.core import data
from emlens.core.ablation import warning
from emlens.core.compare import cosine_per_layer, random_null
from emlens.core.directions import (
    DirectionSet,
    em_direction,
    em_direction_from_pairs,
    refusal_direction,
)


def _layers(s: str | None) -> list[int] | None:
    if s is None:
        return None
    out: list[int] = []
    for part in s.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def _instructions(path: str) -> list[str]:
    rows = data.read_jsonl(path)
    if not all(isinstance(r, dict) and isinstance(r.get("instruction"), str) for r in rows):
        raise ValueError(f'{path}: expected JSONL rows like {{"instruction": "..."}}')
    return [r["instruction"] for r in rows]


def cmd_directions(a: argparse.Namespace) -> None:
    model = _load(a)
    layers = _layers(a.layers)
    if a.kind == "em":
        if bool(a.misaligned) != bool(a.aligned):
            raise SystemExit("give both --misaligned and --aligned chat JSONL files, or neither")
        if a.judged:
            from emlens._cli_judge import judged_direction

            ds = judged_direction(a, model, layers)
        elif a.misaligned:
            ds = em_direction(
                model,
                data.read_chat_jsonl(a.misaligned),
                data.read_chat_jsonl(a.aligned),
                layers=layers,
            )
        else:
            ds = em_direction_from_pairs(model, data.general_questions(), layers=layers)
    else:
        harmful = _instructions(a.harmful) if a.harmful else data.harmful_instructions()
        harmless = _instructions(a.harmless) if a.harmless else data.harmless_instructions()
        ds = refusal_direction(model, harmful, harmless, layers=layers, positions=a.positions)
    ds.save(a.out)
    print(f"wrote {a.kind} direction ({len(ds.layers)} layers, d_model {ds.d_model}) to {a.out}")


def cmd_compare(a: argparse.Namespace) -> None:
    x, y = DirectionSet.load(a.a), DirectionSet.load(a.b)
    cos = cosine_per_layer(x, y)
    null = random_null(x.d_model)
    shared = [ly for ly in x.layers if ly in y.layers]
    if a.json:
        print(json.dumps({"cosine": dict(zip(shared, cos.tolist())), "null_q95": null.q95_abs}))
        return
    print(f"random |cos| in {x.d_model} dims: mean {null.mean_abs:.3f}, 95% {null.q95_abs:.3f}")
    print(f"{'layer':>5} {'cosine':>8}")
    for ly, c in zip(shared, cos.tolist()):
        print(f"{ly:>5} {c:>8.3f} {'*' if abs(c) > null.q95_abs else ''}")
    for w in filter(None, (warning(d.provenance, str(f)) for d, f in ((x, a.a), (y, a.b)))):
        print(w)


def _parse_steer(spec: str, model):
    from emlens.core.interventions import steer

    try:
        path, layers, scale = spec.rsplit(":", 2)
    except ValueError:
        raise SystemExit(
            f"--steer expects FILE:LAYERS:SCALE (e.g. em.safetensors:15:4), not {spec}"
        ) from None
    return steer(DirectionSet.load(path, model), _layers(layers), float(scale))


def _parse_ablate(spec: str, model):
    from emlens.core.interventions import ablate

    try:
        path, layer = spec.rsplit(":", 1)
    except ValueError:
        raise SystemExit(
            f"--ablate expects FILE:LAYER (e.g. em.safetensors:15), not {spec}"
        ) from None
    return ablate(DirectionSet.load(path, model), int(layer))


def cmd_generate(a: argparse.Namespace) -> None:
    from emlens.core.generation import generate

    model = _load(a)
    ivs = _interventions(a, model)
    if a.question:
        questions = a.question
    else:
        qs = data.read_questions(a.questions) if a.questions else data.em_questions()
        questions = [q.paraphrases[0] for q in qs if q.free_form or a.all_questions]
    samples = generate(
        model,
        questions,
        ivs,
        n=a.n,
        max_new_tokens=a.max_new_tokens,
        temperature=a.temperature,
        seed=a.seed,
        progress=True,
    )
    for s in samples:
        print(json.dumps({"question": s.question, "sample": s.sample, "answer": s.answer}))


def _interventions(a: argparse.Namespace, model) -> list:
    return [_parse_steer(s, model) for s in a.steer] + [_parse_ablate(s, model) for s in a.ablate]


def cmd_serve(a: argparse.Namespace) -> None:
    from emlens.eval.serve import make_server

    model = _load(a)
    server = make_server(model, _interventions(a, model), a.host, a.port, a.name or a.model)
    host, port = server.server_address[:2]
    print(f"serving {a.model} at http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.shutdown()


def cmd_evaluate(a: argparse.Namespace) -> None:
    from emlens.eval.em_rate import evaluate_em
    from emlens.eval.judge import make_judge

    model = _load(a)
    questions = data.read_questions(a.questions) if a.questions else data.em_questions()
    if a.judge.startswith("probe:"):
        from emlens._cli_judge import evaluate_with_probe

        evaluate_with_probe(a, model, questions, _interventions(a, model))
        return
    try:
        judge = make_judge(a.judge, a.judge_model, model)
    except ValueError as e:
        raise SystemExit(f"--judge/--judge-model: {e}") from e
    journal = Path(f"{a.out}.progress.jsonl") if a.out else None  # resumes a killed run
    if journal and journal.is_file():
        done = journal.read_bytes().count(b"\n") - 1
        print(f"resuming from {journal} ({done} finished steps)", file=sys.stderr)
    res = evaluate_em(
        model,
        questions,
        judge,
        _interventions(a, model),
        n=a.n,
        temperature=a.temperature,
        max_new_tokens=a.max_new_tokens,
        free_form_only=not a.all_questions,
        seed=a.seed,
        journal=journal,
    )
    if a.out and journal:
        res.to_csv(a.out)
        journal.unlink()  # the result is saved: nothing left to resume
    for qid, r in res.per_question().items():
        print(f"{qid:<28} EM {r['em']}  coherent {r['coherent']}")
    print(
        f"overall: EM {res.em_rate}, coherent {res.coherence_rate}, "
        f"unscored (excluded from EM) {res.n_unscored}/{len(res.samples)}"
    )
    if res.n_scored:
        print(f"EM over questions (cluster bootstrap): {res.em_rate_by_question()}")


def cmd_demo(a: argparse.Namespace) -> None:
    from emlens.demo import run_demo

    run_demo(a.out, a.model, a.steer_layer, a.steer_scale)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="emlens", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    def model_args(s):
        s.add_argument(
            "--model", default="smollm2", help="smollm2, tiny-llama, a folder, a hub name"
        )
        s.add_argument("--adapter", help="a peft LoRA adapter to merge: a folder or hub id")
        s.add_argument("--device", help="cpu (default), cuda, cuda:1, or auto (a device map)")
        s.add_argument(
            "--dtype", choices=["float32", "bfloat16", "float16"], help="default float32"
        )
        add_load_options(s)  # --revision, --adapter-revision, --quantize, ...

    def intervention_args(s):
        s.add_argument("--steer", action="append", default=[], help="FILE:LAYERS:SCALE")
        s.add_argument("--ablate", action="append", default=[], help="FILE:LAYER")

    d = sub.add_parser("directions", help="compute an EM or refusal direction to a file")
    d.add_argument("kind", choices=["em", "refusal"])
    model_args(d)
    d.add_argument("--out", required=True, help="output .safetensors")
    d.add_argument("--layers", help="e.g. 0-29 or 10,15,20 (default all)")
    d.add_argument("--judged", help="judged-answer CSV: the papers' EM direction (em)")
    d.add_argument("--misaligned", help="chat JSONL of misaligned answers (em)")
    d.add_argument("--aligned", help="chat JSONL of aligned answers (em)")
    d.add_argument("--harmful", help='JSONL of {"instruction": ...} (refusal)')
    d.add_argument("--harmless", help='JSONL of {"instruction": ...} (refusal)')
    d.add_argument("--positions", type=int, default=1, help="last k post-instr. tokens (refusal)")
    d.set_defaults(fn=cmd_directions)

    c = sub.add_parser("compare", help="per-layer cosine of two direction files")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_compare)

    g = sub.add_parser("generate", help="answer questions, optionally steered or ablated")
    model_args(g)
    g.add_argument("--question", action="append", help="a question (repeatable)")
    g.add_argument("--questions", help="a question YAML file (default: emlens's EM questions)")
    g.add_argument("--all-questions", action="store_true", help="include _json/_template ids")
    intervention_args(g)
    g.add_argument("--n", type=int, default=1)
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.0)
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(fn=cmd_generate)

    s = sub.add_parser("serve", help="OpenAI-compatible server for a (steered) local model")
    model_args(s)
    intervention_args(s)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--name", help="model name the server reports (default: --model)")
    s.set_defaults(fn=cmd_serve)

    e = sub.add_parser("evaluate", help="EM rate and coherence under the papers' judge")
    model_args(e)
    intervention_args(e)
    e.add_argument("--questions", help="question YAML (default: emlens's EM questions)")
    e.add_argument("--all-questions", action="store_true", help="include _json/_template ids")
    e.add_argument("--judge", default="local", help="local, local:SPEC, a URL, or probe:FILE")
    e.add_argument("--judge-model", help="judge model name at the URL")
    e.add_argument("--n", type=int, default=50, help="samples per question")
    e.add_argument("--temperature", type=float, default=1.0)
    e.add_argument("--max-new-tokens", type=int, default=128)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--out", help="CSV of every sample with its scores (progress kept in OUT.progress.jsonl)"
    )
    e.set_defaults(fn=cmd_evaluate)

    from emlens._cli_judge import add_parser as add_judge_parser

    add_judge_parser(sub, model_args)
    _cli_train.add_parser(sub, model_args)
    _cli_export.add_parser(sub, model_args)
    m = sub.add_parser("demo", help="the main job on the embedded model")
    m.add_argument("--out", default="out/demo")
    m.add_argument("--model", default="smollm2")
    m.add_argument("--steer-layer", type=int)
    m.add_argument("--steer-scale", type=float, default=4.0)
    m.set_defaults(fn=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    try:
        a.fn(a)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"emlens {a.cmd}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from e


if __name__ == "__main__":
    main()
