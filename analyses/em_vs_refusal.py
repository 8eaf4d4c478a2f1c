"""Finding 1 (part): how the EM direction relates to the refusal direction, per layer.

    .venv/bin/python analyses/em_vs_refusal.py   # writes docs/results/em_vs_refusal.*

Beside the isotropic random null, two data-driven controls:
- split-half: cos between EM directions from two disjoint halves of the questions (how
  reliable the EM direction is at this sample size: the ceiling for any comparison);
- shuffled labels: cos(refusal, a "direction" from randomly relabelled aligned/misaligned
  answers), the chance level for two mean differences taken in the same anisotropic stream.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import emlens as em
from emlens.core.data import Conversation
from emlens.report import markdown_table, write_report

OUT = Path("docs/results")
SEED = 0


def main() -> None:
    t0 = time.time()
    model = em.load_model("smollm2")
    pairs = em.general_questions()
    refusal = em.refusal_direction(model, em.harmful_instructions(), em.harmless_instructions())
    em_dir = em.em_direction_from_pairs(model, pairs)
    rng = random.Random(SEED)
    idx = list(range(len(pairs)))
    rng.shuffle(idx)
    half_a = em.em_direction_from_pairs(model, [pairs[i] for i in idx[::2]], progress=False)
    half_b = em.em_direction_from_pairs(model, [pairs[i] for i in idx[1::2]], progress=False)
    answers = [(p.question, p.aligned) for p in pairs] + [(p.question, p.misaligned) for p in pairs]
    rng.shuffle(answers)
    fake_pos = [Conversation(q, a) for q, a in answers[: len(pairs)]]
    fake_neg = [Conversation(q, a) for q, a in answers[len(pairs) :]]
    shuffled = em.em_direction(model, fake_pos, fake_neg, progress=False)

    null = em.random_null(model.cfg.d_model)
    layers = em_dir.layers
    series = {
        "cos(EM, refusal)": em.cosine_per_layer(em_dir, refusal).tolist(),
        "cos(EM half A, EM half B)": em.cosine_per_layer(half_a, half_b).tolist(),
        "cos(shuffled-label direction, refusal)": em.cosine_per_layer(shuffled, refusal).tolist(),
    }
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_hrect(y0=-null.q95_abs, y1=null.q95_abs, fillcolor="grey", opacity=0.2, line_width=0)
    for name, ys in series.items():
        fig.add_scatter(x=layers, y=ys, mode="lines+markers", name=name)
    fig.update_layout(
        title="EM vs refusal direction, SmolLM2-135M-Instruct (grey: random 95%)",
        xaxis_title="layer",
        yaxis_title="cosine",
        height=450,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    write_report(OUT / "em_vs_refusal.html", "EM vs refusal direction", [fig], embed_plotlyjs=False)
    rows = [
        {"layer": ly, **{k: round(v[i], 4) for k, v in series.items()}}
        for i, ly in enumerate(layers)
    ]
    meta = {
        "model": "smollm2",
        "seed": SEED,
        "n_pairs": len(pairs),
        "n_harmful": refusal.provenance["n_positive"],
        "random_null_q95": null.q95_abs,
        "seconds": round(time.time() - t0),
        "command": "python analyses/em_vs_refusal.py",
    }
    (OUT / "em_vs_refusal.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    md = markdown_table(rows)
    (OUT / "em_vs_refusal.md").write_text(
        f"Made by `{meta['command']}` in {meta['seconds']} s. Random |cos| 95%: "
        f"{null.q95_abs:.3f}.\n\n" + "\n".join(md) + "\n"
    )
    print("\n".join(md))


if __name__ == "__main__":
    main()
