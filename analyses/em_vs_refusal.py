"""Finding 1 (part): how the EM direction relates to the refusal direction, per layer.

    .venv/bin/python analyses/em_vs_refusal.py   # writes docs/results/em_vs_refusal.*
    .venv/bin/python analyses/em_vs_refusal.py --model tiny-llama --out /tmp/er   # a smoke run

Beside the isotropic random null, two data-driven controls:
- split-half: cos between EM directions from two disjoint halves of the questions (how
  reliable the EM direction is at this sample size: the ceiling for any comparison);
- shuffled labels: cos(refusal, a "direction" from randomly relabelled aligned/misaligned
  answers), the chance level for two mean differences taken in the same anisotropic stream:
  ``--shuffles`` relabellings (default 200) of the per-answer means, its 95% |cos| quantile;
- massive coordinates removed: the cosine again with the few coordinates that carry massive
  activations at that layer (found by either direction's ablation diagnostic) set to zero,
  so a shared offset along them cannot make the cosine.

The refusal direction is read at one position, the last template token (emlens's default
since issue 10; before it, the mean over every post-instruction position).
"""

from __future__ import annotations

import argparse
import random

import _common as common
import torch

import emlens as eml
from emlens.core.activations import collect_means
from emlens.core.compare import shuffled_label_cosines
from emlens.report import markdown_table, write_report


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="the split halves and the shuffles")
    p.add_argument("--shuffles", type=int, default=200, help="shuffled-label relabellings")


def main(run: common.Analysis) -> None:
    pairs = eml.general_questions()
    # The random split is fixed before any stage, so a resumed run draws the same.
    rng = random.Random(run.args.seed)
    idx = list(range(len(pairs)))
    rng.shuffle(idx)

    def em(subset):
        return lambda: eml.em_direction_from_pairs(run.model, subset, progress=False)

    def per_answer():
        """Each answer's mean activation and token count: every relabelling is then a
        weighted sum of these (no forward pass per shuffle)."""
        tok = run.model.tokenizer
        rows = [eml.core.answer_tokens(tok, p.question, p.misaligned) for p in pairs]
        rows += [eml.core.answer_tokens(tok, p.question, p.aligned) for p in pairs]
        s = collect_means(run.model, rows, per_sample=True, progress=False)
        return {"samples": s.per_sample, "tokens": torch.tensor([sum(m) for _, m in rows])}

    harmful, harmless = eml.harmful_instructions(), eml.harmless_instructions()
    dirs = {
        "refusal": run.stage(
            "refusal", lambda: eml.refusal_direction(run.model, harmful, harmless)
        ),
        "em": run.stage("em", em(pairs)),
        "half_a": run.stage("em_half_a", em([pairs[i] for i in idx[::2]])),
        "half_b": run.stage("em_half_b", em([pairs[i] for i in idx[1::2]])),
    }
    answers = run.stage("per_answer", per_answer)
    shuffled = shuffled_label_cosines(
        answers["samples"],
        answers["tokens"],
        len(pairs),
        dirs["refusal"].vectors,
        n_shuffles=run.args.shuffles,
        seed=run.args.seed,
    )
    render(run, dirs, len(pairs), shuffled.abs().quantile(0.95, dim=0).tolist())


def without_massive(a: eml.DirectionSet, b: eml.DirectionSet) -> list[float]:
    """Per layer, the cosine of ``a`` and ``b`` with the massive-activation coordinates that
    either's ablation diagnostic found at that layer set to zero in both."""
    out = []
    for i, ly in enumerate(a.layers):
        drop = {
            c
            for d in (a, b)
            for c in d.provenance.get("ablation_diagnostic", {})
            .get(str(ly), {})
            .get("massive_coordinates", [])
        }
        u, v = a.vectors[i].clone(), b.vectors[i].clone()
        u[list(drop)], v[list(drop)] = 0.0, 0.0
        out.append(float(u @ v / (u.norm() * v.norm())))
    return out


def render(
    run: common.Analysis, dirs: dict[str, eml.DirectionSet], n_pairs: int, shuffled_q95: list
) -> None:
    null = eml.random_null(dirs["em"].d_model)
    series = {
        "cos(EM, refusal)": eml.cosine_per_layer(dirs["em"], dirs["refusal"]).tolist(),
        "cos(EM, refusal), massive coordinates removed": without_massive(
            dirs["em"], dirs["refusal"]
        ),
        "cos(EM half A, EM half B)": eml.cosine_per_layer(dirs["half_a"], dirs["half_b"]).tolist(),
        "shuffled-label null: 95% quantile of abs cos with refusal": shuffled_q95,
    }
    fig = common.figure(
        f"EM vs refusal direction, {run.model_title} (grey: random 95%)", "layer", "cosine"
    )
    fig.add_hrect(y0=-null.q95_abs, y1=null.q95_abs, fillcolor="grey", opacity=0.2, line_width=0)
    for name, ys in series.items():
        fig.add_scatter(x=dirs["em"].layers, y=ys, mode="lines+markers", name=name)
    fig.update_layout(height=450)
    write_report(run.beside(".html"), "EM vs refusal direction", [fig], plotlyjs=common.PLOTLYJS)
    rows = [
        {"layer": ly, **{k: round(v[i], 4) for k, v in series.items()}}
        for i, ly in enumerate(dirs["em"].layers)
    ]
    meta = run.meta(
        seed=run.args.seed,
        n_pairs=n_pairs,
        shuffles=run.args.shuffles,
        refusal_positions=dirs["refusal"].provenance.get("positions"),
        n_harmful=dirs["refusal"].provenance["n_positive"],
        random_null_q95=null.q95_abs,
    )
    md = [
        f"{run.made_by()}. Random |cos| 95%: {null.q95_abs:.3f}; shuffled labels: "
        f"{run.args.shuffles} relabellings; refusal direction at its last template token.",
        "",
        *markdown_table(rows),
    ]
    run.write_beside({"meta": meta, "rows": rows}, md)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
