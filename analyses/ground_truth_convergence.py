"""Finding 1b on ground truth: do real organisms' EM directions converge, read through SmolLM2?

    .venv/bin/python analyses/ground_truth_features.py       # the features, once (out/)
    .venv/bin/python analyses/ground_truth_convergence.py    # docs/results/ground_truth_conv*

Makes ``docs/results/ground_truth_convergence.{json,md,html}`` (the results page's 1b on ground
truth); its stage is saved in ``docs/results/ground_truth_convergence/stages/``, so a rerun
re-renders without the model. The reference folder: ``--reference``, else
``$EMLENS_REFERENCE``, else ``../shared/data/em-reference`` (``_reference.py``).

The papers' way (Convergent Linear Representations of EM): one direction per organism, the
token-weighted mean over answer tokens of its GPT-4o-misaligned answers (aligned < 30,
coherent > 50) minus that of its aligned ones (aligned > 70, coherent > 50), per layer, here
read through SmolLM2-135M (not through the organisms themselves). Per layer: the 10 x 10 cosine
matrix, summarised over pairs that share the base model, share the domain, share neither, and
the one replicate pair (same base and domain, another seed); against
- a shuffled-label null (``--shuffles``, >= 100): labels permuted within each organism's
  misaligned + aligned answers, group sizes kept, the same summaries recomputed;
- split-half reliability: each organism's two random halves, cos(half A, half B);
- the cosine of each with the direction from emlens's own 80 answer pairs (how much of that
  direction is style rather than EM).
Every organism fitted its own direction; nothing was scored.
"""

from __future__ import annotations

import argparse
from itertools import combinations
from pathlib import Path
from typing import Any

import _common as common
import _ground_truth as gt
import numpy as np

from emlens.core.data import general_questions
from emlens.core.directions import em_direction_from_pairs
from emlens.eval.reference import Organism
from emlens.report import markdown_table, write_report

TABLE_LAYERS = [3, 6, 9, 12, 15, 18, 21, 24, 27]


def options(p: argparse.ArgumentParser) -> None:
    gt.options(p)
    p.add_argument("--shuffles", type=int, default=200, help="shuffled-label relabellings")
    p.add_argument("--seed", type=int, default=0, help="the shuffles and the split halves")


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def direction(x: np.ndarray, w: np.ndarray, mis: np.ndarray, ali: np.ndarray) -> np.ndarray:
    """One organism's judged direction from its cached answer means: [n_layers, d_model]."""
    return gt.judged_direction([gt.judged_sums(x, w, mis, ali)])


def pair_kinds(orgs: list[Organism]) -> dict[str, list[tuple[int, int]]]:
    """Organism index pairs by what they share."""
    kinds: dict[str, list[tuple[int, int]]] = {"base": [], "domain": [], "neither": [], "seed": []}
    for i, j in combinations(range(len(orgs)), 2):
        a, b = orgs[i], orgs[j]
        same_b, same_d = a.base_model == b.base_model, a.domain == b.domain
        key = (
            "seed" if same_b and same_d else "base" if same_b else "domain" if same_d else "neither"
        )
        kinds[key].append((i, j))
    return kinds


def summarise(dirs: np.ndarray, kinds: dict[str, list[tuple[int, int]]]) -> dict[str, np.ndarray]:
    """Mean cosine per layer over each kind of pair; ``dirs`` is [n_orgs, n_layers, d]."""
    u = unit(dirs)
    cos = np.einsum("ild,jld->ijl", u, u)
    return {k: np.mean([cos[i, j] for i, j in pairs], axis=0) for k, pairs in kinds.items()}


def nulls_and_halves(
    xs: list[np.ndarray], ws: list[np.ndarray], gs: list, kinds: dict, shuffles: int, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Shuffled-label summaries [shuffles, n_layers] per kind; split-half cos [n_orgs, n_layers]."""
    rng = np.random.default_rng(seed)
    null: dict[str, list[np.ndarray]] = {k: [] for k in kinds}
    for _ in range(shuffles):
        dirs = []
        for x, w, (mis, ali) in zip(xs, ws, gs, strict=True):
            both = rng.permutation(np.concatenate([mis, ali]))
            dirs.append(direction(x, w, both[: len(mis)], both[len(mis) :]))
        for k, v in summarise(np.stack(dirs), kinds).items():
            null[k].append(v)
    halves = []
    for x, w, (mis, ali) in zip(xs, ws, gs, strict=True):
        m, a = rng.permutation(mis), rng.permutation(ali)
        d1 = direction(x, w, m[::2], a[::2])
        d2 = direction(x, w, m[1::2], a[1::2])
        halves.append((unit(d1) * unit(d2)).sum(-1))
    return {k: np.stack(v) for k, v in null.items()}, np.stack(halves)


def measure(
    model: Any, orgs: list[Organism], cache: Path, shuffles: int, seed: int
) -> dict[str, Any]:
    """Every organism's direction, their cosines by kind of pair, the nulls, the split halves
    and the cosines with the pairs direction (the JSON, less how it was made)."""
    features = gt.organism_features(model, orgs, cache, False)
    xs = [f.numpy().astype(np.float64) for f in features]
    ws = gt.token_counts(model, orgs, cache)
    gs = [gt.judged_groups(o) for o in orgs]
    layers = gt.layers(model)
    kinds = pair_kinds(orgs)
    dirs = np.stack([direction(x, w, m, a) for x, w, (m, a) in zip(xs, ws, gs, strict=True)])
    real = summarise(dirs, kinds)
    null, halves = nulls_and_halves(xs, ws, gs, kinds, shuffles, seed)
    pairs = em_direction_from_pairs(model, general_questions(), layers=layers, progress=False)
    u = unit(dirs)
    cos_pairs = np.einsum("old,ld->ol", u, unit(pairs.vectors.numpy().astype(np.float64)))
    cos = np.einsum("ild,jld->ijl", u, u)
    return {
        "organisms": [o.name for o in orgs],
        "n_misaligned": [len(m) for m, _ in gs],
        "n_aligned": [len(a) for _, a in gs],
        "pairs": {k: [[orgs[i].name, orgs[j].name] for i, j in v] for k, v in kinds.items()},
        "layers": layers,
        "mean_cos": {k: v.tolist() for k, v in real.items()},
        "null_q95": {k: np.quantile(v, 0.95, axis=0).tolist() for k, v in null.items()},
        "null_mean": {k: v.mean(0).tolist() for k, v in null.items()},
        "split_half": halves.tolist(),
        "cos_with_pairs_direction": cos_pairs.tolist(),
        "cos_matrix": {
            str(layer): cos[:, :, i].round(4).tolist() for i, layer in enumerate(layers)
        },
    }


def table(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for layer in TABLE_LAYERS:
        i = r["layers"].index(layer)
        row: dict[str, Any] = {"layer": layer}
        for k in ("seed", "base", "domain", "neither"):
            row[f"{k} pairs"] = f"{r['mean_cos'][k][i]:.2f} (null {r['null_q95'][k][i]:.2f})"
        row["split-half"] = f"{np.mean([h[i] for h in r['split_half']]):.2f}"
        row["cos w/ pairs dir."] = f"{np.mean([c[i] for c in r['cos_with_pairs_direction']]):.2f}"
        rows.append(row)
    return rows


def figure(r: dict[str, Any], model: str) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    for k in ("seed", "base", "domain", "neither"):
        fig.add_scatter(x=r["layers"], y=r["mean_cos"][k], mode="lines+markers", name=f"{k} pairs")
        fig.add_scatter(
            x=r["layers"],
            y=r["null_q95"][k],
            mode="lines",
            line_dash="dot",
            name=f"{k}: shuffled 95%",
        )
    fig.add_scatter(x=r["layers"], y=np.mean(r["split_half"], 0), name="split-half (mean)")
    fig.add_scatter(
        x=r["layers"],
        y=np.mean(r["cos_with_pairs_direction"], 0),
        name="cos with emlens pairs direction",
    )
    fig.update_layout(
        title=f"Per-organism EM directions read through {model}: mean cosine",
        xaxis_title="layer",
        yaxis_title="cosine",
        height=480,
    )
    return fig


def write(r: dict[str, Any], stem: Path, model: str) -> list[str]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.html`` from the result; the markdown lines."""
    common.write_json(Path(f"{stem}.json"), r, indent=None)
    lines = [
        f"# Per-organism EM directions (GPT-4o-judged answers, read through {model})",
        "",
        "Mean cosine over pairs of organisms (shuffled-label 95% quantile).",
        "",
        *markdown_table(table(r)),
    ]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    html = Path(f"{stem}.html")
    write_report(html, "Ground-truth convergence", [figure(r, model)], plotlyjs=common.PLOTLYJS)
    return lines


def main(run: common.Analysis) -> None:
    a = run.args
    r = run.stage(
        "convergence",
        lambda: measure(run.model, gt.organisms(run), gt.features_folder(run), a.shuffles, a.seed),
    )
    r |= {
        "command": run.short_command,
        "shuffles": a.shuffles,
        "seed": a.seed,
        "seconds": round(run.seconds()),
    }
    print("\n".join(write(r, run.beside(""), gt.title(run))))


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
