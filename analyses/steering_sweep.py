"""Finding 2: steering the base model with the EM direction over layers x scales.

    .venv/bin/python analyses/steering_sweep.py            # writes docs/results/steering_sweep/
    .venv/bin/python analyses/steering_sweep.py --layers 15 --scales 4 --n-direction 8 \\
        --n-held-out 4 --out /tmp/sweep                     # a smoke run

The EM direction (mean misaligned minus aligned answer activations, answer tokens) from the
first ``--n-direction`` general questions steers the model at one layer and scale at a time,
and so does a norm-matched random direction (the control). Each cell reports, on the other
``--n-held-out`` questions: misalignment, the contrastive score (per-token log-prob of the
misaligned answer minus the aligned one, bootstrap 95% interval), and coherence's offline
stand-in, the cross-entropy of the held-out aligned conversations, every position (it rises
when steering breaks the model). All cells go through one `pair_effects` call, so each
batch's blocks below a cell's layer run once for every cell. SmolLM2 cannot act as the
papers' judge (docs/evaluation.md), so neither is the judge's score.
"""

from __future__ import annotations

import argparse

import _common as common

import emlens as eml
from emlens.eval import heatmap
from emlens.eval.effects import PairEffects, pair_effects
from emlens.eval.stats import cluster_mean
from emlens.report import markdown_table, save_figure

DIRECTIONS = ("EM", "random")


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=int, nargs="+", default=[3, 6, 9, 12, 15, 18, 21, 24, 27])
    p.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    p.add_argument("--n-direction", type=int, default=48)
    p.add_argument("--n-held-out", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="the random direction")


def main(run: common.Analysis) -> None:
    a = run.args
    pairs = eml.general_questions()
    fit, held = pairs[: a.n_direction], pairs[a.n_direction : a.n_direction + a.n_held_out]
    if not held:
        raise SystemExit(
            f"--n-direction + --n-held-out must leave held-out questions (<= {len(pairs)})"
        )
    em_dir = run.stage(
        "direction", lambda: eml.em_direction_from_pairs(run.model, fit, progress=False)
    )
    directions = {"EM": em_dir, "random": eml.random_like(em_dir, seed=a.seed)}
    cells = [(name, ly, s) for name in directions for ly in a.layers for s in a.scales]

    def tidy(cell: dict, e: PairEffects) -> dict:
        """A cell with the contrastive score's mean and 95% interval over questions (cluster
        bootstrap) and the aligned conversations' cross-entropy."""
        est = cluster_mean(e.scores.double().numpy(), [p.id for p in held])
        ci95 = [round(x, 3) for x in est.ci95]
        ce = round(e.aligned_ce, 4)
        return {**cell, "misalignment": round(est.mean, 4), "ci95": ci95, "aligned_text_ce": ce}

    def sweep() -> dict:
        # every cell in one pair_effects call: each batch's blocks below a cell's layer run
        # once for all cells (the passes resume at the steered block)
        ivs = {
            f"{n} {ly} {s}": [eml.steer(directions[n], [ly], s)] if s else [] for n, ly, s in cells
        }
        effects = pair_effects(run.model, held, {"baseline": [], **ivs}, kl=False)
        return {
            "baseline": tidy({}, effects["baseline"]),
            "rows": [
                tidy({"direction": n, "layer": ly, "scale": s}, effects[f"{n} {ly} {s}"])
                for n, ly, s in cells
            ],
        }

    out = run.stage("sweep", sweep)
    render(run, len(held), out["baseline"], out["rows"])


def render(run: common.Analysis, n_held: int, baseline: dict, rows: list[dict]) -> None:
    a = run.args
    for metric in ("misalignment", "aligned_text_ce"):
        for name in DIRECTIONS:
            fig = heatmap([r for r in rows if r["direction"] == name], metric)
            fig.update_layout(title=f"{metric}, steering with the {name} direction")
            save_figure(fig, run.out / f"{metric}_{name}", plotlyjs=common.PLOTLYJS)
    summary = {
        "command": run.command,
        "model": a.model,
        "data": {
            "direction": f"general_questions()[:{a.n_direction}]",
            "held_out": f"general_questions()[{a.n_direction}:{a.n_direction + n_held}]",
        },
        "baseline": baseline,
        "rows": rows,
        "minutes": round(run.seconds() / 60, 1),
    }
    run.write_summary(summary, readme(summary))


def cell(s: dict, direction: str, layer: int, scale: float) -> str:
    """One direction's misalignment [95% CI] / cross-entropy at (layer, scale)."""
    x = next(
        r
        for r in s["rows"]
        if r["direction"] == direction and r["layer"] == layer and r["scale"] == scale
    )
    lo, hi = x["ci95"]
    return f"{x['misalignment']:+.3f} [{lo:+.3f}, {hi:+.3f}] / {x['aligned_text_ce']:.3f}"


def readme(s: dict) -> str:
    b = s["baseline"]
    table = [
        {
            "layer": r["layer"],
            "scale": r["scale"],
            **{
                f"{d}: misalignment [95% CI] / CE": cell(s, d, r["layer"], r["scale"])
                for d in DIRECTIONS
            },
        }
        for r in s["rows"]
        if r["direction"] == "EM"
    ]
    return "\n".join(
        [
            "# Steering sweep: the EM direction over layers x scales",
            "",
            f"Made by `{s['command']}` ({s['minutes']} min); numbers in `summary.json`, heat "
            "maps `misalignment_EM.html`, `misalignment_random.html`, `aligned_text_ce_*.html`.",
            "",
            f"Unsteered: misalignment {b['misalignment']:+.3f} [{b['ci95'][0]:+.3f}, "
            f"{b['ci95'][1]:+.3f}], cross-entropy of aligned answers {b['aligned_text_ce']:.3f}.",
            "",
            *markdown_table(table),
            "",
        ]
    )


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
