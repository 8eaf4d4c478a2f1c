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
when steering breaks the model). SmolLM2 cannot act as the papers' judge
(docs/evaluation.md), so neither is the judge's score.
"""

from __future__ import annotations

import argparse

import _common as common

import emlens as eml
from emlens.eval import heatmap, steering_sweep
from emlens.eval.effects import pair_effects
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

    def metrics():  # both read-outs from one pass per answer side (pair_effects)
        return {"effects": lambda ivs: pair_effects(run.model, held, {"": ivs}, kl=False)[""]}

    def tidy(row: dict) -> dict:
        """A sweep row with the contrastive score's mean and 95% interval over questions
        (cluster bootstrap) and the aligned conversations' cross-entropy."""
        e = row.pop("effects")
        est = cluster_mean(e.scores.double().numpy(), [p.id for p in held])
        ci95 = [round(x, 3) for x in est.ci95]
        ce = round(e.aligned_ce, 4)
        return {**row, "misalignment": round(est.mean, 4), "ci95": ci95, "aligned_text_ce": ce}

    baseline = run.stage("baseline", lambda: tidy({k: m([]) for k, m in metrics().items()}))
    rows = [
        {"direction": name, **r}
        for name, d in directions.items()
        for r in run.stage(
            f"sweep_{name}",
            lambda d=d: [
                tidy(r) for r in steering_sweep(d, a.layers, a.scales, metrics(), progress=False)
            ],
        )
    ]
    render(run, len(held), baseline, rows)


def render(run: common.Analysis, n_held: int, baseline: dict, rows: list[dict]) -> None:
    a = run.args
    for metric in ("misalignment", "aligned_text_ce"):
        for name in DIRECTIONS:
            fig = heatmap([r for r in rows if r["direction"] == name], metric)
            fig.update_layout(title=f"{metric}, steering with the {name} direction")
            save_figure(fig, run.out / f"{metric}_{name}")
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
