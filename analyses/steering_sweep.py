"""Finding 2: steering the base model with the EM direction over layers x scales.

    .venv/bin/python analyses/steering_sweep.py            # writes docs/results/steering_sweep/
    .venv/bin/python analyses/steering_sweep.py --layers 15 --scales 4 --n-direction 8 \\
        --n-held-out 4 --out /tmp/sweep                     # a smoke run

The EM direction (mean misaligned minus aligned answer activations, answer tokens) from the
first ``--n-direction`` general questions steers SmolLM2 at one layer and scale at a time,
and so does a norm-matched random direction (the control). Each cell reports, on the other
``--n-held-out`` questions: misalignment, the contrastive score (per-token log-prob of the
misaligned answer minus the aligned one, bootstrap 95% interval), and coherence's offline
stand-in, the cross-entropy of the held-out aligned answers as whole chat texts (it rises
when steering breaks the model). SmolLM2 cannot act as the papers' judge
(docs/evaluation.md), so neither is the judge's score.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import emlens as em
from emlens.eval.metrics import contrastive_score, cross_entropy
from emlens.eval.sweeps import heatmap, steering_sweep
from emlens.report import command_line, markdown_table, save_figure

ROOT = Path(__file__).resolve().parents[1]


def args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--out", default=str(ROOT / "docs/results/steering_sweep"))
    p.add_argument("--layers", type=int, nargs="+", default=[3, 6, 9, 12, 15, 18, 21, 24, 27])
    p.add_argument("--scales", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    p.add_argument("--n-direction", type=int, default=48)
    p.add_argument("--n-held-out", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def main() -> None:
    a = args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    t0 = time.perf_counter()
    model = em.load_model(a.model)
    pairs = em.general_questions()
    fit, held = pairs[: a.n_direction], pairs[a.n_direction : a.n_direction + a.n_held_out]
    if not held:
        raise SystemExit(
            f"--n-direction + --n-held-out must leave held-out questions (<= {len(pairs)})"
        )
    texts = [em.chat_prompt(model.tokenizer, p.question) + p.aligned for p in held]
    em_dir = em.em_direction_from_pairs(model, fit, progress=False)
    directions = {"EM": em_dir, "random": em.random_like(em_dir, seed=a.seed)}

    metrics = {  # the contrastive score comes back as an Estimate (mean and interval)
        "misalignment": lambda ivs: contrastive_score(model, held, ivs),
        "aligned_text_ce": lambda ivs: round(cross_entropy(model, texts, ivs), 4),
    }

    def tidy(row: dict) -> dict:
        est = row.pop("misalignment")
        ci = [round(x, 3) for x in est.ci95]
        return {**row, "misalignment": round(est.mean, 4), "ci95": ci}

    baseline = tidy({k: m([]) for k, m in metrics.items()})
    rows = []
    for name, d in directions.items():
        for r in steering_sweep(d, a.layers, a.scales, metrics, progress=False):
            rows.append({"direction": name, **tidy(r)})
        print(f"{name} sweep done", flush=True)

    for metric in metrics:
        for name in directions:
            fig = heatmap([r for r in rows if r["direction"] == name], metric)
            fig.update_layout(title=f"{metric}, steering with the {name} direction")
            save_figure(fig, out / f"{metric}_{name}")
    summary = {
        "command": command_line("analyses/steering_sweep.py", a, ROOT),
        "model": a.model,
        "data": {
            "direction": f"general_questions()[:{a.n_direction}]",
            "held_out": f"general_questions()[{a.n_direction}:{a.n_direction + len(held)}]",
        },
        "baseline": baseline,
        "rows": rows,
        "minutes": round((time.perf_counter() - t0) / 60, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "README.md").write_text(readme(summary))
    print((out / "README.md").read_text())


def readme(s: dict) -> str:
    b = s["baseline"]
    table = [
        {
            "layer": r["layer"],
            "scale": r["scale"],
            **{
                f"{d}: misalignment [95% CI] / CE": next(
                    f"{x['misalignment']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"
                    f" / {x['aligned_text_ce']:.3f}"
                    for x in s["rows"]
                    if x["direction"] == d and x["layer"] == r["layer"] and x["scale"] == r["scale"]
                )
                for d in ("EM", "random")
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
    main()
