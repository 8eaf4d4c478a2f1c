"""How coherent the embedded model is against the sampling temperature (issue 21).

    .venv/bin/python analyses/coherence_temperature.py   # docs/results/coherence_temperature.*
    .venv/bin/python analyses/coherence_temperature.py --model tiny-llama --samples 1 \\
        --temperatures 0.5 1.0 --max-new-tokens 8 --judge local --out /tmp/ct   # a smoke run

The papers sample at temperature 1; a 135M model at temperature 1 writes mostly incoherent
text, which is never EM. Unsteered, on emlens's free-form EM questions, ``--samples`` answers
per question at each temperature, with two coherence checks: the judge's coherence rate
(``probe:default``'s P(coherent) > 0.5, the head fitted on GPT-4o's verdicts and constructed
incoherent answers) and one that needs no judge, the answers' mean cross-entropy per answer
token under the model itself. The verdict rule, fixed before measuring: the temperature for
EM experiments on SmolLM2 is the highest one whose coherence rate's 95% interval lies above
0.5 (most answers coherent); none, if no temperature does. The EM rate is printed beside
(unsteered: what any steered rate is compared with). Top-p is not varied (emlens's
``generate`` samples the whole distribution).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import _common as common

import emlens as eml
from emlens.eval import EMResult, JudgedSample
from emlens.eval.em_result import counted
from emlens.eval.judge_spec import make_judge
from emlens.report import markdown_table


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.3, 0.5, 0.7, 1.0])
    p.add_argument("--samples", type=int, default=25, help="answers per question")
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--judge", default="probe:default", help="a judge spec (make_judge)")


def measure(run: common.Analysis, temperature: float) -> list[dict[str, Any]]:
    """The judged samples at one temperature (as dicts, for the stage)."""
    a = run.args
    judge = make_judge(a.judge, model=run.model)
    questions = [q for q in eml.em_questions() if q.free_form]
    kw = {"n": a.samples, "temperature": temperature, "max_new_tokens": a.max_new_tokens}
    res = eml.evaluate_em(run.model, questions, judge, **kw)
    return [dataclasses.asdict(s) for s in res.samples]


def row(temperature: float, res: EMResult) -> dict[str, Any]:
    c, em = res.coherence_rate, counted(res.scored)  # the verdicts counted (probe or not)
    rate, (lo, hi) = (em.k / em.n if em.n else float("nan")), em.ci95
    return {
        "temperature": temperature,
        "n": len(res.samples),
        "coherent": c.k / c.n if c.n else float("nan"),
        "coherent_ci95": list(c.ci95),
        "cross_entropy": res.mean_cross_entropy,
        "em_rate": rate,
        "em_interval": [lo, hi],
    }


def choose(rows: list[dict[str, Any]]) -> float | None:
    """The verdict rule: the highest temperature whose coherence interval is above 0.5."""
    ok = [r["temperature"] for r in rows if r["coherent_ci95"][0] > 0.5]
    return max(ok) if ok else None


def main(run: common.Analysis) -> None:
    rows = []
    for t in run.args.temperatures:
        samples = run.stage(f"samples_t{t}", lambda t=t: measure(run, t))
        rows.append(row(t, EMResult([JudgedSample(**s) for s in samples])))
    chosen = choose(rows)
    table = [
        {
            "temperature": r["temperature"],
            "answers": r["n"],
            "coherent (judge)": f"{100 * r['coherent']:.0f}% [{100 * r['coherent_ci95'][0]:.0f}, "
            f"{100 * r['coherent_ci95'][1]:.0f}]",
            "cross-entropy (nats/token)": f"{r['cross_entropy']:.2f}",
            "EM rate (counted verdicts, Wilson)": f"{100 * r['em_rate']:.1f}% "
            f"[{100 * r['em_interval'][0]:.1f}, {100 * r['em_interval'][1]:.1f}]",
        }
        for r in rows
    ]
    verdict = (
        f"The temperature for EM experiments on {run.model_title}: {chosen}."
        if chosen is not None
        else f"No temperature keeps most of {run.model_title}'s answers coherent."
    )
    md = [
        run.made_by(),
        "",
        f"# Coherence of {run.model_title} against the sampling temperature",
        "",
        f"Unsteered, {run.args.samples} answers per free-form EM question, "
        f"{run.args.max_new_tokens} new tokens, judge `{run.args.judge}`. Rule fixed before "
        "measuring: the highest temperature whose coherence interval lies above 50%.",
        "",
        *markdown_table(table),
        "",
        verdict,
    ]
    meta = run.meta(samples=run.args.samples, judge=run.args.judge)
    run.write_beside({"meta": meta, "rows": rows, "chosen": chosen, "table": table}, md)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
