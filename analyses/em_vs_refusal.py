"""Finding 1 (part): how the EM direction relates to the refusal direction, per layer.

    .venv/bin/python analyses/em_vs_refusal.py   # writes docs/results/em_vs_refusal.*
    .venv/bin/python analyses/em_vs_refusal.py --model tiny-llama --out /tmp/er   # a smoke run

Beside the isotropic random null, two data-driven controls:
- split-half: cos between EM directions from two disjoint halves of the questions (how
  reliable the EM direction is at this sample size: the ceiling for any comparison);
- shuffled labels: cos(refusal, a "direction" from randomly relabelled aligned/misaligned
  answers), the chance level for two mean differences taken in the same anisotropic stream.
"""

from __future__ import annotations

import argparse
import random

import _common as common

import emlens as eml
from emlens.report import markdown_table, write_report


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="the split halves and the shuffle")


def main(run: common.Analysis) -> None:
    pairs = eml.general_questions()
    # The random split and shuffle are fixed before any stage, so a resumed run draws the same.
    rng = random.Random(run.args.seed)
    idx = list(range(len(pairs)))
    rng.shuffle(idx)
    answers = [(p.question, p.aligned) for p in pairs] + [(p.question, p.misaligned) for p in pairs]
    rng.shuffle(answers)
    fake = [eml.Conversation(q, a) for q, a in answers]

    def em(subset):
        return lambda: eml.em_direction_from_pairs(run.model, subset, progress=False)

    def shuffled():
        half = len(pairs)
        return eml.em_direction(run.model, fake[:half], fake[half:], progress=False)

    harmful, harmless = eml.harmful_instructions(), eml.harmless_instructions()
    dirs = {
        "refusal": run.stage(
            "refusal", lambda: eml.refusal_direction(run.model, harmful, harmless)
        ),
        "em": run.stage("em", em(pairs)),
        "half_a": run.stage("em_half_a", em([pairs[i] for i in idx[::2]])),
        "half_b": run.stage("em_half_b", em([pairs[i] for i in idx[1::2]])),
        "shuffled": run.stage("shuffled", shuffled),
    }
    render(run, dirs, len(pairs))


def render(run: common.Analysis, dirs: dict[str, eml.DirectionSet], n_pairs: int) -> None:
    null = eml.random_null(dirs["em"].d_model)
    series = {
        "cos(EM, refusal)": eml.cosine_per_layer(dirs["em"], dirs["refusal"]).tolist(),
        "cos(EM half A, EM half B)": eml.cosine_per_layer(dirs["half_a"], dirs["half_b"]).tolist(),
        "cos(shuffled-label direction, refusal)": eml.cosine_per_layer(
            dirs["shuffled"], dirs["refusal"]
        ).tolist(),
    }
    fig = common.figure(
        f"EM vs refusal direction, {run.model_title} (grey: random 95%)", "layer", "cosine"
    )
    fig.add_hrect(y0=-null.q95_abs, y1=null.q95_abs, fillcolor="grey", opacity=0.2, line_width=0)
    for name, ys in series.items():
        fig.add_scatter(x=dirs["em"].layers, y=ys, mode="lines+markers", name=name)
    fig.update_layout(height=450)
    write_report(run.beside(".html"), "EM vs refusal direction", [fig], embed_plotlyjs=False)
    rows = [
        {"layer": ly, **{k: round(v[i], 4) for k, v in series.items()}}
        for i, ly in enumerate(dirs["em"].layers)
    ]
    meta = run.meta(
        seed=run.args.seed,
        n_pairs=n_pairs,
        n_harmful=dirs["refusal"].provenance["n_positive"],
        random_null_q95=null.q95_abs,
    )
    md = [f"{run.made_by()}. Random |cos| 95%: {null.q95_abs:.3f}.", "", *markdown_table(rows)]
    run.write_beside({"meta": meta, "rows": rows}, md)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
