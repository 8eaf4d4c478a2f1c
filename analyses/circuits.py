"""Finding 6: which heads and MLPs write the EM direction, which write the refusal direction.

    .venv/bin/python analyses/circuits.py   # writes docs/results/circuits.*

At a reference layer L, each head and MLP of layers 0..L gets a score: how much its output,
projected on the unit direction at L, differs between the two sides of the contrast
(misaligned vs aligned answers on answer tokens for EM; harmful vs harmless instructions on
post-instruction tokens for refusal). Overlap of the two top-k sets (Jaccard, with a
permutation null) and the rank correlation of all scores; then the test: mean-ablate each
top-k set (and random sets of k) and measure how much of each direction's separation at L
remains.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import plotly.graph_objects as go
import torch

import emlens as em
from emlens.core.activations import collect_means
from emlens.core.circuits import (
    component_means,
    component_scores,
    components,
    mean_ablated,
    overlap,
    top_components,
)
from emlens.core.tokens import answer_tokens, post_instruction_tokens
from emlens.report import markdown_table, write_report

OUT = Path("docs/results")
LAYER, K, N, SEED = 20, 10, 64, 0


def separation(model, pos, neg, r) -> float:
    """(mean(pos) - mean(neg)) . r at resid_post of LAYER."""
    kw = dict(layers=[LAYER], progress=False)
    return float(
        (collect_means(model, pos, **kw).mean[0] - collect_means(model, neg, **kw).mean[0]) @ r
    )


def main() -> None:
    t0 = time.time()
    model = em.load_model("smollm2")
    tok = model.tokenizer
    pairs = em.general_questions()[:N]
    mis = [answer_tokens(tok, p.question, p.misaligned) for p in pairs]
    ali = [answer_tokens(tok, p.question, p.aligned) for p in pairs]
    harm = [post_instruction_tokens(tok, x) for x in em.harmful_instructions()[:N]]
    safe = [post_instruction_tokens(tok, x) for x in em.harmless_instructions()[:N]]
    r_em = (
        collect_means(model, mis, layers=[LAYER]).mean[0]
        - collect_means(model, ali, layers=[LAYER]).mean[0]
    )
    r_ref = (
        collect_means(model, harm, layers=[LAYER]).mean[0]
        - collect_means(model, safe, layers=[LAYER]).mean[0]
    )
    r_em, r_ref = r_em / r_em.norm(), r_ref / r_ref.norm()

    layers = list(range(LAYER + 1))
    comps = components(model, layers)
    s_em = component_scores(model, mis, ali, r_em, layers)
    s_ref = component_scores(model, harm, safe, r_ref, layers)
    ov = overlap(comps, s_em, s_ref, K)
    rng = random.Random(SEED)
    null = []
    for _ in range(1000):
        perm = torch.tensor(rng.sample(range(len(comps)), len(comps)))
        null.append(overlap(comps, s_em, s_ref[perm], K).jaccard)
    null_q95 = sorted(null)[949]

    top_em, top_ref = top_components(comps, s_em, K), top_components(comps, s_ref, K)
    sets = {"none": [], f"top-{K} EM writers": top_em, f"top-{K} refusal writers": top_ref}
    for i in range(3):
        sets[f"random {K} (seed {i})"] = rng.sample(comps, K)
    base_em = separation(model, mis, ali, r_em)
    base_ref = separation(model, harm, safe, r_ref)
    rows = []
    for name, cs in sets.items():
        means = component_means(model, mis + ali + harm + safe, cs) if cs else {}
        with mean_ablated(model, means):
            e = separation(model, mis, ali, r_em) if cs else base_em
            f = separation(model, harm, safe, r_ref) if cs else base_ref
        rows.append(
            {
                "ablated": name,
                "components": ", ".join(map(str, cs)),
                "EM separation kept": round(e / base_em, 3),
                "refusal separation kept": round(f / base_ref, 3),
            }
        )
        print(rows[-1], flush=True)

    fig = go.Figure(
        go.Scatter(
            x=s_em.tolist(),
            y=s_ref.tolist(),
            mode="markers",
            text=[str(c) for c in comps],
            marker={"color": ["crimson" if c.head is None else "steelblue" for c in comps]},
        )
    )
    fig.update_layout(
        title=f"component scores at layer {LAYER} (red: MLPs, blue: heads)",
        xaxis_title="writes EM direction",
        yaxis_title="writes refusal direction",
        height=520,
    )
    OUT.mkdir(parents=True, exist_ok=True)
    write_report(
        OUT / "circuits.html",
        "Components writing the EM and refusal directions",
        [fig],
        embed_plotlyjs=False,
    )
    result = {
        "meta": {
            "model": "smollm2",
            "layer": LAYER,
            "k": K,
            "n": N,
            "seed": SEED,
            "seconds": round(time.time() - t0),
            "command": "python analyses/circuits.py",
        },
        "top_em": [str(c) for c in top_em],
        "top_refusal": [str(c) for c in top_ref],
        "jaccard": ov.jaccard,
        "jaccard_null_q95": null_q95,
        "shared": [str(c) for c in ov.shared],
        "spearman_all_components": ov.spearman,
        "ablation": rows,
    }
    (OUT / "circuits.json").write_text(json.dumps(result, indent=2))
    md = [
        f"Made by `python analyses/circuits.py` in {result['meta']['seconds']} s "
        f"(SmolLM2, reference layer {LAYER}, k = {K}, {N} samples a side).",
        "",
        f"- top-{K} EM writers: {', '.join(result['top_em'])}",
        f"- top-{K} refusal writers: {', '.join(result['top_refusal'])}",
        f"- shared: {', '.join(result['shared']) or 'none'}; Jaccard {ov.jaccard:.3f} "
        f"(permutation null 95%: {null_q95:.3f}); Spearman over all "
        f"{len(comps)} components {ov.spearman:.3f}",
        "",
        *markdown_table(rows),
    ]
    (OUT / "circuits.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
