"""The probe judge's commands: ``emlens judge fit|rate`` (``emlens evaluate --judge probe:FILE``
evaluates with one).

From a judged CSV to a direction, a fitted judge and an EM-rate estimate::

    emlens directions em --judged organism.csv.gz --out em.safetensors
    emlens judge fit a.csv.gz b.csv.gz c.csv.gz --out probe.safetensors
    emlens evaluate --judge probe:probe.safetensors --n 50      # or probe:default
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from emlens.cli._checks import finite, input_file, layers, out_file
from emlens.cli._models import load, model_args
from emlens.eval.judged import read_judged


def _layer_sets(s: str) -> list[list[int]]:
    return [layers(part) for part in s.split(";")]


def _cs(s: str) -> list[float]:
    return [finite(c) for c in s.split(",")]


def cmd_fit(a: argparse.Namespace) -> None:
    from emlens.core.models import model_name
    from emlens.eval.probe.labelled import labelled_organism
    from emlens.eval.probe.question_folds import leave_question_out
    from emlens.eval.probe.validation import fit_on, summary
    from emlens.eval.rates import judge_margin

    out_file(a.out)
    for path in a.csv:
        input_file(path, "judge fit")
    judged = [read_judged(p) for p in a.csv]  # read (and checked) before the model loads
    kw = {k: v for k, v in (("layer_sets", a.layer_sets), ("cs", a.cs)) if v}
    model = load(a)
    have = list(range(model.cfg.n_layers))
    made = a.incoherent_per_kind
    orgs = [labelled_organism(model, j, have, a.cache, incoherent_per_kind=made) for j in judged]

    def fit(train: Any) -> Any:
        return fit_on(train, model_name(model), by=a.by, **kw)

    judge = fit(orgs)
    if a.validate:  # as the judge is used: a group and a question it never saw
        rows = leave_question_out(orgs, a.validate, fit)
        judge.rate_margin = judge_margin([r["pcc"]["signed_error"] / 100 for r in rows])
        by = f"{a.validate} x question"
        judge.meta["held_out"] = {"by": by, "summary": summary(rows), "rows": rows}
        print(json.dumps(judge.meta["held_out"]["summary"], indent=1))
        print(f"rate margin (the judge's error, added to its intervals): {judge.rate_margin:.3f}")
    judge.save(a.out)
    best = judge.meta["validation"]["best"]
    print(
        f"wrote probe judge to {a.out}: layers {judge.layers}, C {best['C']}, validation AUC "
        f"{best['auc']:.3f} (leave one {a.by} out over {len(orgs)} files)"
    )


def cmd_rate(a: argparse.Namespace) -> None:
    from emlens.eval.judge_spec import make_judge, parse
    from emlens.eval.probe.judge import ProbeJudge
    from emlens.eval.probe.labelled import rate_of_answers

    spec = a.probe if a.probe.startswith("probe:") else f"probe:{a.probe}"
    parse(spec)  # the file exists
    for path in a.csv:
        input_file(path, "judge rate")
    judge = make_judge(spec, device=a.device)
    assert (
        isinstance(judge, ProbeJudge) and judge.reader is not None
    )  # a probe: spec loads its reader
    for path in a.csv:
        judged = read_judged(path)
        print(f"{judged.name}: {rate_of_answers(judge, judge.reader, judged, a.method)}")


def cmd_fetch_reference(a: argparse.Namespace) -> None:
    from emlens.eval.reference import fetch_reference

    paths = fetch_reference(a.dest, a.local)
    print(f"{len(paths)} reference files in {a.dest}, each matching its pinned SHA-256")


def add_parsers(sub: Any) -> None:
    """Register ``emlens judge fit``, ``emlens judge rate`` and ``emlens fetch-reference``."""
    fr = sub.add_parser("fetch-reference", help="the EM papers' judged answers, SHA-256 checked")
    fr.add_argument("dest", help="folder to fill (responses/ and the papers' data files)")
    fr.add_argument("--local", help="copy from a local folder instead of GitHub")
    fr.set_defaults(fn=cmd_fetch_reference)
    j = sub.add_parser("judge", help="the offline probe judge: fit one, rate answers with one")
    jsub = j.add_subparsers(dest="judge_cmd", required=True)
    f = jsub.add_parser("fit", help="fit a probe judge on judged CSVs (one file = one organism)")
    model_args(f)
    f.add_argument("csv", nargs="+", help="judged CSVs (the papers' or emlens's format)")
    f.add_argument("--out", required=True, help="output probe .safetensors")
    f.add_argument(
        "--by",
        default="name",
        choices=["name", "base_model", "domain"],
        help="validation groups for the layers and C (default: one file)",
    )
    f.add_argument(
        "--layer-sets",
        type=_layer_sets,
        help="candidates, e.g. '15;18;15,18,21' (default: built in)",
    )
    f.add_argument("--cs", type=_cs, help="candidate C values, e.g. 0.001,0.01,0.1")
    f.add_argument("--cache", help="folder to cache the answers' features in")
    f.add_argument(
        "--validate",
        choices=["base_model", "domain"],
        help="also score each group and question held out at once, store the figures and "
        "the judge's rate margin (its error on rates, added to its intervals) in the file",
    )
    f.add_argument(
        "--incoherent-per-kind",
        type=int,
        default=25,
        help="constructed incoherent answers of each kind per file, for the coherence head "
        "(0: no coherence head)",
    )
    f.set_defaults(fn=cmd_fit)
    r = jsub.add_parser("rate", help="EM-rate estimates of judged or unjudged answer CSVs")
    r.add_argument("csv", nargs="+")
    r.add_argument("--probe", default="probe:default", help="a probe file or probe:default")
    r.add_argument(
        "--method",
        default="pcc",
        choices=["cc", "acc", "pcc", "pacc"],
        help="rate estimator (emlens.eval.rates); pcc: the mean calibrated P(EM)",
    )
    r.add_argument("--device", help="device of the probe's model")
    r.set_defaults(fn=cmd_rate, adapter=None)
