"""Direction methods on the same data: mean difference, PCA of paired differences, a probe.

    .venv/bin/python analyses/direction_methods.py    # writes docs/results/direction_methods/
    .venv/bin/python analyses/direction_methods.py --model tiny-llama --layers 0 1 \\
        --steer-layers 1 --out /tmp/dm                  # a smoke run

emlens's general questions (each with an aligned and a misaligned answer) are read once: each
answer's mean activation over its tokens at every layer. A quarter of the questions is held
out; on the rest, four methods find a direction per layer (misaligned answers positive): the
token-weighted mean difference (the EM papers' direction), the first principal component of
the paired differences centred (repeng's ``pca_diff``) and uncentred (repeng's
``pca_center``, steering-vectors' ``pca_aggregator``), and an L2 logistic probe (with its own
cross-validated accuracy). Compared per layer: cosines between methods, the AUC of held-out
answers' projections (misaligned vs aligned), and the shift of the held-out contrastive score
when each direction, at the mean difference's norm times ``--scale``, is added at one of
``--steer-layers`` (beside a random direction of that norm).
"""

from __future__ import annotations

import argparse
from typing import Any

import _common as common

import emlens as eml
from emlens.eval.method_comparison import compare_methods
from emlens.report import markdown_table, save_figure

SHORT = {
    "mean_difference": "mean diff",
    "pca_centred": "PCA centred",
    "pca_uncentred": "PCA uncentred",
    "logistic_probe": "probe",
    "random": "random",
}


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layers", type=int, nargs="+", help="layers compared (default: all)")
    p.add_argument("--steer-layers", type=int, nargs="+", default=[9, 15, 21])
    p.add_argument("--scale", type=float, default=4.0, help="steering multiplier on the norm")
    p.add_argument("--held-out", type=float, default=0.25, help="share of questions held out")
    p.add_argument("--seed", type=int, default=0, help="the split and the random direction")


def main(argv: list[str] | None = None) -> None:
    run = common.start(__file__, __doc__, options, argv)
    a = run.args
    pairs = eml.general_questions()

    def compare() -> dict[str, Any]:
        r = compare_methods(
            run.model,
            pairs,
            layers=a.layers,
            steer_layers=a.steer_layers,
            scale=a.scale,
            held_out=a.held_out,
            seed=a.seed,
        )
        return r.to_dict()

    render(run, run.stage("comparison", compare), len(pairs))


def figures(run: common.Analysis, r: dict[str, Any]) -> list[str]:
    """AUC and cosine-to-mean-difference per layer; the files' stems."""
    auc = common.figure(f"held-out AUC per layer, {run.model_title}", "layer", "AUC")
    for name, ys in r["auc"].items():
        auc.add_scatter(x=r["layers"], y=ys, mode="lines+markers", name=SHORT[name])
    cos = common.figure(f"cosine with the mean difference, {run.model_title}", "layer", "cosine")
    for pair, ys in r["cosine"].items():
        if pair.startswith("mean_difference vs "):
            name = SHORT[pair.removeprefix("mean_difference vs ")]
            cos.add_scatter(x=r["layers"], y=ys, mode="lines+markers", name=name)
    figs = {"auc": auc, "cosine": cos}
    if r["steering"]:
        figs["steering"] = steering_figure(run, r)
    for stem, fig in figs.items():
        fig.update_layout(height=420, width=820)
        save_figure(fig, run.out / stem, plotlyjs=common.PLOTLYJS)
    return list(figs)


def steering_figure(run: common.Analysis, r: dict[str, Any]) -> Any:
    """The shift of the contrastive score per steered layer and direction, 95% intervals."""
    fig = common.figure(
        f"steering at matched norm x {r['steering'][0]['scale']}, {run.model_title}",
        "layer steered",
        "contrastive score shift (nats/token)",
    )
    for name in dict.fromkeys(s["method"] for s in r["steering"]):
        rows = [s for s in r["steering"] if s["method"] == name]
        mean = [s["shift"]["mean"] for s in rows]
        fig.add_bar(
            x=[str(s["layer"]) for s in rows],
            y=mean,
            name=SHORT[name],
            error_y={
                "type": "data",
                "array": [s["shift"]["ci95"][1] - m for s, m in zip(rows, mean, strict=True)],
                "arrayminus": [m - s["shift"]["ci95"][0] for s, m in zip(rows, mean, strict=True)],
            },
        )
    fig.update_layout(barmode="group")
    return fig


def tables(r: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The markdown tables: separation, cosines, steering."""
    probe = r["details"].get("logistic_probe", {}).get("held_out_accuracy")
    separation = [
        {
            "layer": layer,
            **{f"AUC {SHORT[m]}": f"{v[i]:.3f}" for m, v in r["auc"].items()},
            **({"probe CV accuracy": f"{probe[i]:.3f}"} if probe else {}),
        }
        for i, layer in enumerate(r["layers"])
    ]
    cosine = [
        {
            "layer": layer,
            **{
                " vs ".join(SHORT[x] for x in k.split(" vs ")): f"{v[i]:+.3f}"
                for k, v in r["cosine"].items()
            },
        }
        for i, layer in enumerate(r["layers"])
    ]
    steering = [
        {
            "layer": s["layer"],
            "direction": SHORT[s["method"]],
            "norm": f"{s['norm']:.2f}",
            "score shift [95% CI]": f"{s['shift']['mean']:+.3f} "
            f"[{s['shift']['ci95'][0]:+.3f}, {s['shift']['ci95'][1]:+.3f}]",
        }
        for s in r["steering"]
    ]
    top = [
        {
            "layer": layer,
            **{
                SHORT[m]: f"{d['top_coordinate'][i]} ({d['top_coordinate_share'][i]:.2f})"
                for m, d in r["details"].items()
                if "top_coordinate" in d
            },
        }
        for i, layer in enumerate(r["layers"])
    ]
    return {"separation": separation, "cosine": cosine, "steering": steering, "top": top}


def _shifts(r: dict[str, Any], method: str) -> str:
    rows = [s for s in r["steering"] if s["method"] == method]
    return ", ".join(f"layer {s['layer']} {s['shift']['mean']:+.3f}" for s in rows)


def headline(r: dict[str, Any]) -> list[str]:
    """One line per method: its best held-out AUC and, per steered layer, its shift."""
    lines = []
    for m, v in r["auc"].items():
        best = max(range(len(v)), key=v.__getitem__)
        shifts = _shifts(r, m)
        lines.append(
            f"- {SHORT[m]}: best held-out AUC {v[best]:.3f} (layer {r['layers'][best]})"
            + (f"; steering shift {shifts}" if shifts else "")
        )
    if r["steering"]:
        lines.append(f"- random direction (the control): steering shift {_shifts(r, 'random')}")
    return lines


def render(run: common.Analysis, r: dict[str, Any], n_pairs: int) -> None:
    stems = figures(run, r)
    meta = {
        "command": run.command,
        "model": run.args.model,
        "data": f"general_questions(): {n_pairs} pairs, {len(r['held_out'])} held out",
        "seconds": round(run.seconds()),
    }
    common.write_json(run.out / "summary.json", {"meta": meta, **r})
    t = tables(r)
    b = r["baseline"]
    base = f"{b['mean']:+.3f} [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}]" if b else "not run"
    lines = [
        f"# Direction methods compared, {run.model_title}",
        "",
        f"Made by `{meta['command']}` ({meta['seconds']} s of computing); every number here "
        "is in `summary.json`. Data: " + meta["data"] + " (the same split for every method).",
        "",
        *headline(r),
        "",
        *[f"[![{s}]({s}.png)]({s}.html)" for s in stems],
        "",
        "## Held-out separation (AUC of projections, misaligned vs aligned answers)",
        "",
        *markdown_table(t["separation"]),
        "",
        "## Cosines between the methods' directions",
        "",
        *markdown_table(t["cosine"]),
        "",
        f"## Steering at matched norm (unsteered contrastive score {base})",
        "",
        *(markdown_table(t["steering"]) if t["steering"] else ["(not run)"]),
        "",
        "## Where each direction points: its largest coordinate (share of the squared norm)",
        "",
        *(markdown_table(t["top"]) if t["top"][0].keys() - {"layer"} else ["(not recorded)"]),
        "",
    ]
    (run.out / "README.md").write_text("\n".join(lines))
    print("\n".join(headline(r)))


if __name__ == "__main__":
    main()
