"""The main job (`make demo`): EM and refusal directions on the embedded model, compared.

On the embedded model the EM direction is the shipped judged-data one (real organisms'
GPT-4o-judged answers, :func:`emlens.core.data.reference_em_direction`) and every generation gets
the shipped probe judge's offline verdict; on another model the EM direction comes from
emlens's own answer pairs and there is no verdict. Prints the per-layer cosine with the
refusal direction against the random null, generates baseline / steered / ablated answers to
EM questions, and writes an HTML report with plotly figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from transformer_lens.model_bridge import TransformerBridge

from emlens.core import data
from emlens.core.ablation import warning
from emlens.core.compare import (
    RandomNull,
    cosine_matrix,
    cosine_per_layer,
    random_like,
    random_null,
)
from emlens.core.direction_set import DirectionSet
from emlens.core.directions import em_direction_from_pairs, refusal_direction
from emlens.core.generation import Sample, generate
from emlens.core.interventions import Intervention, ablate, steer
from emlens.core.models import load_model, model_name
from emlens.eval.probe.judge import ProbeJudge
from emlens.report import cosine_figure, matrix_figure, norms_figure, table_html, write_report


def print_cosines(layers: list[int], cos: list[float], null: RandomNull) -> None:
    """The per-layer cosine table, with a star where |cos| is beyond the null's 95%."""
    print(
        f"\ncos(EM direction, refusal direction) per layer; random |cos|: mean "
        f"{null.mean_abs:.3f}, 95% {null.q95_abs:.3f}"
    )
    print(f"{'layer':>5} {'cosine':>8}  beyond null")
    for ly, c in zip(layers, cos, strict=True):
        print(f"{ly:>5} {c:>8.3f}  {'*' if abs(c) > null.q95_abs else ''}")


def em_direction_for(model: TransformerBridge) -> DirectionSet:
    """The shipped judged-data EM direction where it was read through ``model``, else the
    direction of emlens's own answer pairs."""
    try:
        shipped = data.reference_em_direction(model)
    except (FileNotFoundError, ValueError):
        shipped = None
    if shipped is not None and shipped.provenance.get("model") == model_name(model):
        return shipped
    return em_direction_from_pairs(model, data.general_questions())


def verdicts(
    model: TransformerBridge, gens: dict[str, list[Sample]]
) -> dict[str, list[tuple[float, float | None]]]:
    """The shipped probe judge's (P(EM), P(coherent)) of every generation (P(EM) needs both
    halves of the papers' verdict); empty where it reads another model."""
    try:
        judge = ProbeJudge.load("probe:default").reading_with(model)
    except (FileNotFoundError, ValueError):
        return {}
    out = {}
    for c, ss in gens.items():
        vs = judge.verdicts([(s.question, s.answer) for s in ss])
        out[c] = [(float(v.p_em or 0.0), v.p_coherent) for v in vs]
    return out


def _verdict_text(v: tuple[float, float | None]) -> str:
    coherent = f", P(coherent) {v[1]:.2f}" if v[1] is not None else ""
    return f"P(EM) {v[0]:.2f}{coherent}"


def conditions(em_dir: DirectionSet, layer: int, scale: float) -> dict[str, list[Intervention]]:
    """Baseline, EM steering, norm-matched random steering, and EM ablation."""
    return {
        "baseline": [],
        f"steer EM L{layer} x{scale:g}": [steer(em_dir, [layer], scale)],
        f"steer random L{layer} x{scale:g}": [steer(random_like(em_dir), [layer], scale)],
        f"ablate EM (L{layer} direction, all layers)": [ablate(em_dir, layer)],
    }


def generations(
    model: TransformerBridge,
    questions: list[str],
    conds: dict[str, list[Intervention]],
    max_new_tokens: int,
) -> dict[str, list[Sample]]:
    """Greedy answers to ``questions`` under each condition, printed as they come."""
    gens = {}
    for name, ivs in conds.items():
        print(f"\n== {name}")
        gens[name] = generate(model, questions, ivs, max_new_tokens=max_new_tokens)
        for s in gens[name]:
            print(f"  Q: {s.question[:70]}\n  A: {s.answer[:200]!r}")
    return gens


def describe(em_dir: DirectionSet, refusal: DirectionSet) -> str:
    """One paragraph: what each direction was computed from."""
    p, r = em_dir.provenance, refusal.provenance
    source = (
        f"{len(p['judged'])} real EM organisms, judged by GPT-4o (shipped numbers)"
        if p.get("source") == "judged" and isinstance(p.get("judged"), list)
        else "emlens's own answer pairs"
    )
    return (
        f"<p>EM direction: {p['n_positive']} misaligned vs {p['n_negative']} aligned answers "
        f"(answer-token means) of {source}. Refusal direction: {r['n_positive']} harmful vs "
        f"{r['n_negative']} harmless instructions (post-instruction tokens). "
        f"Hook {em_dir.hook}.</p>"
    )


def generations_table(
    gens: dict[str, list[Sample]], judged: dict[str, list[tuple[float, float | None]]]
) -> str:
    """Questions by conditions; each answer with the probe judge's verdict where there is one."""
    questions = [s.question for s in next(iter(gens.values()))]
    rows: list[list[object]] = [
        [
            q,
            *(
                gens[c][i].answer + (f" [{_verdict_text(judged[c][i])}]" if judged else "")
                for c in gens
            ),
        ]
        for i, q in enumerate(questions)
    ]
    return table_html(["question", *gens], rows)


def report_parts(
    em_dir: DirectionSet,
    refusal: DirectionSet,
    cos: list[float],
    null: RandomNull,
    gens: dict[str, list[Sample]],
    judged: dict[str, list[tuple[float, float | None]]],
    max_new_tokens: int,
) -> list[str | go.Figure]:
    """The HTML report: what was computed, the figures, and the generations table."""
    verdict = (
        "<p>[P(EM), P(coherent)]: the shipped probe judge's probability that GPT-4o would call "
        "the answer EM (aligned &lt; 30 and coherent &gt; 50) and coherent (&gt; 50); a dark "
        "but incoherent answer is not EM. Its error on unseen base models is in "
        "docs/evaluation.md. A handful of greedy answers is an illustration, not a rate: the "
        "EM rate of steering, with its coherence and random controls, is on the results page "
        "(docs/results, finding 2 in the papers' unit).</p>"
        if judged
        else "<p>No offline verdicts: the shipped probe judge reads the embedded model only.</p>"
    )
    return [
        describe(em_dir, refusal),
        f"<p>Random null (|cos| between random directions in {null.d_model} dims, "
        f"{null.n} draws): mean {null.mean_abs:.3f}, 95% quantile {null.q95_abs:.3f}.</p>",
        cosine_figure(em_dir.layers, cos, null, "cos(EM direction, refusal direction) per layer"),
        matrix_figure(
            cosine_matrix(em_dir, refusal).numpy(), em_dir.layers, refusal.layers, ("EM", "refusal")
        ),
        norms_figure(
            em_dir.layers,
            {
                "EM": em_dir.vectors.norm(dim=-1).tolist(),
                "refusal": refusal.vectors.norm(dim=-1).tolist(),
            },
        ),
        f"<h2>Generations (greedy, {max_new_tokens} new tokens)</h2>",
        verdict,
        generations_table(gens, judged),
    ]


def run_demo(
    out: str | Path = "out/demo",
    model_spec: str = "smollm2",
    steer_layer: int | None = None,
    steer_scale: float = 4.0,
    n_questions: int = 4,
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Run the demo into ``out`` (report.html, summary.json, both direction files).

    Returns:
        The summary written to ``summary.json``: cosines per layer, the null, the time.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"loading {model_spec} ...")
    model = load_model(model_spec)
    layer = model.cfg.n_layers // 2 if steer_layer is None else steer_layer

    refusal = refusal_direction(model, data.harmful_instructions(), data.harmless_instructions())
    em_dir = em_direction_for(model)
    print(describe(em_dir, refusal).removeprefix("<p>").removesuffix("</p>"))
    refusal.save(out / "refusal_direction.safetensors")
    em_dir.save(out / "em_direction.safetensors")
    cos = cosine_per_layer(em_dir, refusal).tolist()
    null = random_null(model.cfg.d_model)
    print_cosines(em_dir.layers, cos, null)
    for w in filter(None, (warning(em_dir.provenance, "EM direction"),)):
        print(w)

    questions = [q.paraphrases[0] for q in data.em_questions() if q.free_form][:n_questions]
    gens = generations(model, questions, conditions(em_dir, layer, steer_scale), max_new_tokens)
    judged = verdicts(model, gens)
    for c, vs in judged.items():
        print(f"probe judge, {c}: " + "; ".join(_verdict_text(v) for v in vs))
    report = write_report(
        out / "report.html",
        f"emlens demo: EM vs refusal direction on {model_spec}",
        report_parts(em_dir, refusal, cos, null, gens, judged, max_new_tokens),
    )
    summary = {
        "model": model_spec,
        "em_direction_source": em_dir.provenance.get("source", "pairs"),
        "p_em": {c: [v[0] for v in vs] for c, vs in judged.items()},
        "p_coherent": {c: [v[1] for v in vs] for c, vs in judged.items()},
        "cosine_per_layer": dict(zip(em_dir.layers, cos, strict=True)),
        "null_mean_abs": null.mean_abs,
        "null_q95_abs": null.q95_abs,
        "layers_beyond_null": [
            ly for ly, c in zip(em_dir.layers, cos, strict=True) if abs(c) > null.q95_abs
        ],
        "seconds": round(time.time() - t0, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nreport: {report}  ({summary['seconds']} s)")
    return summary
