"""Elasticity (Language Models Resist Alignment, ACL 2025) on the embedded model.

    .venv/bin/python analyses/elasticity.py                    # about 35 min on 2 CPU cores
    .venv/bin/python analyses/elasticity.py --slice 8 --probe 4 --positive 0 8 \\
        --negative 0 4 --held-out 4 --out /tmp/el              # a smoke run

Resistance: a chain of checkpoints theta_1 < theta_2 < theta_3, each fine-tuned from the last
(rank-8 LoRA on every linear layer, merged), on three slices that move away from the start:
D_1 good medical advice, D_2 bad medical advice, D_3 risky financial advice (emlens's own
sets, disjoint questions). Inverse fine-tuning trains theta_{k+1} on D_k, forward trains
theta_k on D_{k+1}; both use unseen rows of the slice's set, so no row is memorised. The paper
predicts the inverse loss is lower. The base model's loss on each probe set is the reference
for how hard each set is on its own.

Rebound: fine-tune on p good medical answers (p = 0 is the instruct model), then on n bad
medical answers, for increasing n; after each, the held-out answer loss (emlens's
``held_out_loss``, nats per token) of good answers minus that of bad ones on held-out medical
questions (higher = prefers bad), and the same on emlens's unrelated general questions
(aligned vs misaligned answers). The paper predicts a fast change for the first negative
examples, then a slow one, faster after more positive data.
"""

from __future__ import annotations

import argparse
import dataclasses

import _common as common
import torch

import emlens as eml
from emlens.organisms import ELASTICITY_CONFIG, Resistance, held_out_loss, rebound, resistance
from emlens.report import markdown_table, save_figure

SETS = ("good_medical_advice", "bad_medical_advice", "risky_financial_advice")


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slice", type=int, default=64, help="rows per chain slice")
    p.add_argument("--probe", type=int, default=32, help="unseen rows per inverse/forward run")
    p.add_argument("--positive", type=int, nargs="+", default=[0, 64, 192])
    p.add_argument("--negative", type=int, nargs="+", default=[0, 4, 8, 16, 32, 64])
    p.add_argument("--held-out", type=int, default=32, help="question pairs per rebound metric")
    p.add_argument("--lr", type=float, default=ELASTICITY_CONFIG.lr)
    p.add_argument("--seed", type=int, default=0)


def main(run: common.Analysis) -> None:
    a = run.args
    torch.manual_seed(a.seed)
    good, bad, fin = (eml.read_chat_jsonl(eml.core.data_path(f"narrow/{n}.jsonl")) for n in SETS)
    s, q, h = a.slice, a.probe, a.held_out
    # Disjoint question ranges: chain slices, then probes, then rebound's negatives/held-out.
    if 3 * s + 2 * q > len(good) or max(a.positive) > s * 3 or h > q:
        raise SystemExit("slices, probes and amounts do not fit the 320-row sets; use smaller")
    negative = bad[3 * s + 2 * q :]
    if max(a.negative) > len(negative):
        raise SystemExit(f"--negative amounts must be <= {len(negative)}")
    slices = [good[:s], bad[s : 2 * s], fin[:s]]
    probes = [good[3 * s : 3 * s + q], bad[3 * s + q : 3 * s + 2 * q], fin[3 * s : 3 * s + q]]
    cfg = dataclasses.replace(ELASTICITY_CONFIG, lr=a.lr)
    base = run.stage("base_loss", lambda: [held_out_loss(*run.hf, p) for p in probes])
    res = run.stage("resistance", lambda: losses(resistance(*run.hf, slices, cfg, probes)))
    general = eml.general_questions()[:h]
    read_out = preference(
        medical=(good[3 * s : 3 * s + h], bad[3 * s : 3 * s + h]),
        general=(
            [eml.Conversation(x.question, x.aligned) for x in general],
            [eml.Conversation(x.question, x.misaligned) for x in general],
        ),
    )
    data = good[: max(a.positive)], negative, a.positive, a.negative
    curves = run.stage("rebound", lambda: rebound(*run.hf, *data, read_out, cfg))
    render(run, cfg, base, res, curves)


def losses(res: Resistance) -> dict[str, dict[int, list[float]]]:
    """The losses of a resistance run (its models are not kept)."""
    return {"inverse": res.inverse, "forward": res.forward, "chain": res.chain}


def preference(**sets: tuple[list, list]):
    """The rebound's read-out per named set of (good, bad) answers to the same questions:
    held-out loss of the good answers minus the bad ones (higher = prefers bad)."""
    for name, (g, b) in sets.items():
        if [x.question for x in g] != [x.question for x in b]:
            raise ValueError(f"{name}: good and bad answers must answer the same questions")

    def read_out(hf, tok) -> dict[str, float]:
        return {
            k: held_out_loss(hf, tok, g) - held_out_loss(hf, tok, b) for k, (g, b) in sets.items()
        }

    return read_out


def render(run: common.Analysis, cfg, base: list, res: dict, curves: dict) -> None:
    a, s, q = run.args, run.args.slice, run.args.probe
    res = Resistance(**{k: {int(i): v for i, v in x.items()} for k, x in res.items()})
    table = [
        {
            "k": k,
            "inverse: theta_{k+1} on D_k": round(res.mean_loss("inverse", k), 4),
            "forward: theta_k on D_{k+1}": round(res.mean_loss("forward", k), 4),
            "inverse first step": round(res.inverse[k][0], 4),
            "forward first step": round(res.forward[k][0], 4),
            "base on D_k / D_{k+1}": f"{base[k - 1]:.3f} / {base[k]:.3f}",
        }
        for k in res.inverse
    ]
    times = run.times()
    summary = {
        "command": run.command,
        "model": a.model,
        "config": cfg.to_dict() | {"layers": "every layer"},
        "data": {
            "chain slices": [
                f"good_medical[0:{s}]",
                f"bad_medical[{s}:{2 * s}]",
                f"risky_financial[0:{s}]",
            ],
            "probes": [
                f"good_medical[{3 * s}:{3 * s + q}]",
                f"bad_medical[{3 * s + q}:{3 * s + 2 * q}]",
                f"risky_financial[{3 * s}:{3 * s + q}]",
            ],
            "rebound positive": "good_medical[0:p]",
            "rebound negative": f"bad_medical[{3 * s + 2 * q}:{3 * s + 2 * q}+n]",
            "rebound held-out": f"medical pairs [{3 * s}:{3 * s + a.held_out}], "
            f"general_questions()[:{a.held_out}]",
        },
        "resistance": {
            "table": table,
            "base_loss_on_probes": [round(x, 4) for x in base],
            "losses": losses(res),
            "minutes": round((times["base_loss"] + times["resistance"]) / 60, 1),
        },
        "rebound": {"negative_amounts": a.negative, "curves": curves},
        "minutes_total": round(run.seconds() / 60, 1),
    }
    figures(run, res, curves)
    run.write_summary(summary, readme(summary, run.model_title))


def figures(run: common.Analysis, res: Resistance, curves: dict) -> None:
    fig = common.figure(
        "Resistance: training loss, inverse (theta_k+1 on D_k) vs forward (theta_k on D_k+1)",
        "step",
        "loss per answer token (nats)",
    )
    for k in res.inverse:
        for which, dash in (("inverse", "solid"), ("forward", "dash")):
            y = getattr(res, which)[k]
            fig.add_scatter(
                x=list(range(1, len(y) + 1)), y=y, name=f"{which} k={k}", line_dash=dash
            )
    save_figure(fig, run.out / "resistance", plotlyjs=common.PLOTLYJS)
    fig = common.figure(
        "Rebound: preference for bad answers after p good, then n bad medical examples",
        "negative examples n",
        "loss(good) - loss(bad), nats/token",
    )
    for key, dash in (("medical", "solid"), ("general", "dot")):
        for p, c in curves.items():
            ys = [r[key] for r in c]
            fig.add_scatter(x=run.args.negative, y=ys, name=f"{key}, {p} positive", line_dash=dash)
    save_figure(fig, run.out / "rebound", plotlyjs=common.PLOTLYJS)


def readme(s: dict, model: str) -> str:
    amounts = s["rebound"]["negative_amounts"]
    rebound_rows = [
        {
            "positive p": p,
            **{
                f"n={n}": f"{r['medical']:+.3f} / {r['general']:+.3f}"
                for n, r in zip(amounts, c, strict=True)
            },
        }
        for p, c in s["rebound"]["curves"].items()
    ]
    return "\n".join(
        [
            f"# Elasticity on {model}",
            "",
            f"Made by `{s['command']}` ({s['minutes_total']} min); numbers in `summary.json`, "
            "figures `resistance.html`, `rebound.html`.",
            "",
            "## Resistance (mean training loss per answer token over the run, nats)",
            "",
            *markdown_table(s["resistance"]["table"]),
            "",
            "## Rebound (preference for bad answers: medical / general; higher = prefers bad)",
            "",
            *markdown_table(rebound_rows),
            "",
        ]
    )


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
