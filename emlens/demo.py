"""The main job (`make demo`): EM and refusal directions on the embedded model, compared.

Computes both directions from emlens's shipped data, prints the per-layer cosine table with
the random null, generates baseline / steered / ablated answers to EM questions, and writes
an HTML report with plotly figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from emlens.core import data
from emlens.core.compare import cosine_matrix, cosine_per_layer, random_like, random_null
from emlens.core.directions import em_direction_from_pairs, refusal_direction
from emlens.core.generation import generate
from emlens.core.interventions import ablate, steer
from emlens.core.models import load_model
from emlens.report import cosine_figure, matrix_figure, norms_figure, table_html, write_report


def run_demo(
    out: str | Path = "out/demo",
    model_spec: str = "smollm2",
    steer_layer: int | None = None,
    steer_scale: float = 4.0,
    n_questions: int = 4,
    max_new_tokens: int = 48,
) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"loading {model_spec} ...")
    model = load_model(model_spec)
    n_layers = model.cfg.n_layers
    layer = n_layers // 2 if steer_layer is None else steer_layer

    refusal = refusal_direction(model, data.harmful_instructions(), data.harmless_instructions())
    em = em_direction_from_pairs(model, data.general_questions())
    refusal.save(out / "refusal_direction.safetensors")
    em.save(out / "em_direction.safetensors")

    cos = cosine_per_layer(em, refusal).tolist()
    null = random_null(model.cfg.d_model)
    print(
        f"\ncos(EM direction, refusal direction) per layer; random |cos|: mean "
        f"{null.mean_abs:.3f}, 95% {null.q95_abs:.3f}"
    )
    print(f"{'layer':>5} {'cosine':>8}  beyond null")
    for ly, c in zip(em.layers, cos):
        print(f"{ly:>5} {c:>8.3f}  {'*' if abs(c) > null.q95_abs else ''}")

    questions = [q.paraphrases[0] for q in data.em_questions() if q.free_form][:n_questions]
    conditions = {
        "baseline": [],
        f"steer EM L{layer} x{steer_scale:g}": [steer(em, [layer], steer_scale)],
        f"steer random L{layer} x{steer_scale:g}": [steer(random_like(em), [layer], steer_scale)],
        f"ablate EM (L{layer} direction, all layers)": [ablate(em, layer)],
    }
    gens = {}
    for name, ivs in conditions.items():
        print(f"\n== {name}")
        gens[name] = generate(model, questions, ivs, max_new_tokens=max_new_tokens)
        for s in gens[name]:
            print(f"  Q: {s.question[:70]}\n  A: {s.answer[:200]!r}")

    rows = [[q] + [gens[c][i].answer for c in conditions] for i, q in enumerate(questions)]
    null_line = (
        f"<p>Random null (|cos| between random directions in {null.d_model} dims, "
        f"{null.n} draws): mean {null.mean_abs:.3f}, 95% quantile {null.q95_abs:.3f}.</p>"
    )
    report = write_report(
        out / "report.html",
        f"emlens demo: EM vs refusal direction on {model_spec}",
        [
            f"<p>EM direction: {em.provenance['n_positive']} misaligned vs "
            f"{em.provenance['n_negative']} aligned answers (answer-token means). Refusal "
            f"direction: {refusal.provenance['n_positive']} harmful vs "
            f"{refusal.provenance['n_negative']} harmless instructions (post-instruction "
            f"tokens). Hook {em.hook}.</p>",
            null_line,
            cosine_figure(em.layers, cos, null, "cos(EM direction, refusal direction) per layer"),
            matrix_figure(
                cosine_matrix(em, refusal).numpy(), em.layers, refusal.layers, ("EM", "refusal")
            ),
            norms_figure(
                em.layers,
                {
                    "EM": em.vectors.norm(dim=-1).tolist(),
                    "refusal": refusal.vectors.norm(dim=-1).tolist(),
                },
            ),
            f"<h2>Generations (greedy, {max_new_tokens} new tokens)</h2>",
            table_html(["question", *conditions], rows),
        ],
    )
    summary = {
        "model": model_spec,
        "cosine_per_layer": dict(zip(em.layers, cos)),
        "null_mean_abs": null.mean_abs,
        "null_q95_abs": null.q95_abs,
        "layers_beyond_null": [ly for ly, c in zip(em.layers, cos) if abs(c) > null.q95_abs],
        "seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nreport: {report}  ({summary['seconds']} s)")
    return summary
