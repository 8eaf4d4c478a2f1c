"""Finding 6: which heads and MLPs write the EM direction, which write the refusal direction.

    .venv/bin/python analyses/circuits.py   # writes docs/results/circuits.*
    .venv/bin/python analyses/circuits.py --model tiny-llama --layer 1 --k 2 --n 4 \\
        --out /tmp/circuits                  # a smoke run

At a reference layer L, each head and MLP of layers 0..L gets a score: how much its output,
projected on the unit direction at L, differs between the two sides of the contrast
(misaligned vs aligned answers on answer tokens for EM; harmful vs harmless instructions on
post-instruction tokens for refusal). Overlap of the two top-k sets (Jaccard, with a
permutation null) and the rank correlation of all scores; then the test: mean-ablate each
top-k set (and random sets of k) and measure how much of each direction's separation at L
remains.
"""

from __future__ import annotations

import argparse
import functools
import random

import _common as common
import plotly.graph_objects as go
import torch

import emlens as eml
from emlens.core.circuits import (
    Component,
    component_means,
    component_scores,
    components,
    mean_ablated,
    overlap,
    top_components,
)
from emlens.report import markdown_table, write_report

N_NULL = 1000  # permutations of the scores for the Jaccard null


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layer", type=int, default=20, help="the reference layer L")
    p.add_argument("--k", type=int, default=10, help="components in a top set")
    p.add_argument("--n", type=int, default=64, help="samples a side")
    p.add_argument("--seed", type=int, default=0)


def main(run: common.Analysis) -> None:
    a = run.args
    rows = functools.cache(lambda: token_rows(run.model.tokenizer, a.n))  # only if computing
    sides = ("em", "refusal")
    dirs = {
        k: run.stage(f"{k}_direction", lambda k=k: difference(run.model, *rows()[k], a.layer))
        for k in sides
    }
    layers = list(range(a.layer + 1))
    comps = [
        Component(*c)
        for c in run.stage(
            "components", lambda: [[c.layer, c.head] for c in components(run.model, layers)]
        )
    ]
    scores = run.stage(
        "scores",
        lambda: {
            k: component_scores(run.model, *rows()[k], dirs[k].unit().at(a.layer), layers)
            for k in sides
        },
    )
    sets = run.stage("sets", lambda: top_and_random_sets(comps, scores, a.k, a.seed))
    by_name = {str(c): c for c in comps}

    def ablation() -> list[dict]:
        # every set's components' means from one pass (a component's mean is the same in any set)
        every = [r for pos_neg in rows().values() for side in pos_neg for r in side]
        union = sorted({c for cs in sets["ablated"].values() for c in cs})
        means = component_means(run.model, every, [by_name[c] for c in union])
        return [
            separations(
                run.model, rows(), dirs, {by_name[c]: means[by_name[c]] for c in cs}, a.layer
            )
            | {"ablated": n}
            for n, cs in sets["ablated"].items()
        ]

    ablation_rows = run.stage("ablation", ablation)
    render(run, comps, scores, sets, ablation_rows)


def token_rows(tok, n: int) -> dict[str, tuple[list, list]]:
    """The two contrasts' token rows: misaligned vs aligned answers (answer tokens), harmful vs
    harmless instructions (post-instruction tokens), ``n`` a side."""
    pairs = eml.general_questions()[:n]
    return {
        "em": (
            [eml.core.answer_tokens(tok, p.question, p.misaligned) for p in pairs],
            [eml.core.answer_tokens(tok, p.question, p.aligned) for p in pairs],
        ),
        "refusal": (
            [eml.core.post_instruction_tokens(tok, x) for x in eml.harmful_instructions()[:n]],
            [eml.core.post_instruction_tokens(tok, x) for x in eml.harmless_instructions()[:n]],
        ),
    }


def difference(model, pos: list, neg: list, layer: int) -> eml.DirectionSet:
    """mean(pos) - mean(neg) at ``layer`` (resid_post)."""
    kw = {"layers": [layer], "progress": False}
    return eml.mean_diff(eml.collect_means(model, pos, **kw), eml.collect_means(model, neg, **kw))


def top_and_random_sets(comps: list, scores: dict, k: int, seed: int) -> dict:
    """The top-k overlap with its permutation null, and the component sets to ablate."""
    ov = overlap(comps, scores["em"], scores["refusal"], k)
    rng = random.Random(seed)
    null = []
    for _ in range(N_NULL):
        perm = torch.tensor(rng.sample(range(len(comps)), len(comps)))
        null.append(overlap(comps, scores["em"], scores["refusal"][perm], k).jaccard)
    top_em, top_ref = (top_components(comps, scores[s], k) for s in ("em", "refusal"))
    ablated = {"none": [], f"top-{k} EM writers": top_em, f"top-{k} refusal writers": top_ref}
    for i in range(3):
        ablated[f"random {k} (seed {i})"] = rng.sample(comps, k)
    return {
        "top_em": [str(c) for c in top_em],
        "top_refusal": [str(c) for c in top_ref],
        "jaccard": ov.jaccard,
        "jaccard_null_q95": sorted(null)[int(0.95 * N_NULL) - 1],
        "shared": [str(c) for c in ov.shared],
        "spearman_all_components": ov.spearman,
        "ablated": {name: [str(c) for c in cs] for name, cs in ablated.items()},
    }


def separations(model, rows: dict, dirs: dict, means: dict, layer: int) -> dict:
    """Each direction's separation (mean(pos) - mean(neg)) . unit direction at ``layer``, with
    the components of ``means`` mean-ablated (their mean output over all samples)."""
    with mean_ablated(model, means):
        return {
            k: float(difference(model, *rows[k], layer).at(layer) @ dirs[k].unit().at(layer))
            for k in rows
        }


def render(run: common.Analysis, comps: list, scores: dict, sets: dict, ablation: list) -> None:
    a = run.args
    base = next(r for r in ablation if r["ablated"] == "none")
    rows = [
        {
            "ablated": r["ablated"],
            "components": ", ".join(sets["ablated"][r["ablated"]]),
            "EM separation kept": round(r["em"] / base["em"], 3),
            "refusal separation kept": round(r["refusal"] / base["refusal"], 3),
        }
        for r in ablation
    ]
    fig = go.Figure(
        go.Scatter(
            x=scores["em"].tolist(),
            y=scores["refusal"].tolist(),
            mode="markers",
            text=[str(c) for c in comps],
            marker={"color": ["crimson" if c.head is None else "steelblue" for c in comps]},
        )
    )
    fig.update_layout(
        title=f"component scores at layer {a.layer} (red: MLPs, blue: heads)",
        xaxis_title="writes EM direction",
        yaxis_title="writes refusal direction",
        height=520,
    )
    title = "Components writing the EM and refusal directions"
    write_report(run.beside(".html"), title, [fig], plotlyjs=common.PLOTLYJS)
    meta = run.meta(layer=a.layer, k=a.k, n=a.n, seed=a.seed)
    result = {"meta": meta, **{k: v for k, v in sets.items() if k != "ablated"}, "ablation": rows}
    md = [
        f"{run.made_by()} ({a.model}, reference layer {a.layer}, k = {a.k}, {a.n} samples a side).",
        "",
        f"- top-{a.k} EM writers: {', '.join(result['top_em'])}",
        f"- top-{a.k} refusal writers: {', '.join(result['top_refusal'])}",
        f"- shared: {', '.join(result['shared']) or 'none'}; Jaccard {result['jaccard']:.3f} "
        f"(permutation null 95%: {result['jaccard_null_q95']:.3f}); Spearman over all "
        f"{len(comps)} components {result['spearman_all_components']:.3f}",
        "",
        *markdown_table(rows),
    ]
    run.write_beside(result, md)


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
