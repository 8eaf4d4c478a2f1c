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
medical answers, for increasing n; after each, the preference for bad over good answers on
held-out medical questions (answer loss of good minus bad, nats per token; higher = prefers
bad) and the same on emlens's unrelated general questions (misaligned vs aligned). The paper
predicts a fast change for the first negative examples, then a slow one, faster after more
positive data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import plotly.graph_objects as go
import torch

import emlens as em
from emlens.core.data import Conversation, read_chat_jsonl
from emlens.core.models import load_hf
from emlens.organisms.elasticity import ELASTICITY_CONFIG, rebound, resistance
from emlens.organisms.finetune import held_out_loss
from emlens.report import command_line, markdown_table, save_figure

ROOT = Path(__file__).resolve().parents[1]
NARROW = ROOT / "emlens/data/narrow"


def args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--out", default=str(ROOT / "docs/results/elasticity"))
    p.add_argument("--slice", type=int, default=64, help="rows per chain slice")
    p.add_argument("--probe", type=int, default=32, help="unseen rows per inverse/forward run")
    p.add_argument("--positive", type=int, nargs="+", default=[0, 64, 192])
    p.add_argument("--negative", type=int, nargs="+", default=[0, 4, 8, 16, 32, 64])
    p.add_argument("--held-out", type=int, default=32, help="question pairs per rebound metric")
    p.add_argument("--lr", type=float, default=ELASTICITY_CONFIG.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def pairs(good: list[Conversation], bad: list[Conversation]) -> list[em.QAPair]:
    """Question pairs from two chat sets that answer the same questions in the same order."""
    if [g.question for g in good] != [b.question for b in bad]:
        raise ValueError("the good and bad sets must answer the same questions in order")
    return [
        em.QAPair(f"medical-{i}", "medical", g.question, g.answer, b.answer)
        for i, (g, b) in enumerate(zip(good, bad))
    ]


def preference(hf, tok, qa: list[em.QAPair]) -> float:
    """Answer loss of the aligned answers minus the misaligned ones (higher = prefers bad)."""
    aligned = [Conversation(q.question, q.aligned) for q in qa]
    misaligned = [Conversation(q.question, q.misaligned) for q in qa]
    return held_out_loss(hf, tok, aligned) - held_out_loss(hf, tok, misaligned)


def main() -> None:
    a = args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    good = read_chat_jsonl(NARROW / "good_medical_advice.jsonl")
    bad = read_chat_jsonl(NARROW / "bad_medical_advice.jsonl")
    fin = read_chat_jsonl(NARROW / "risky_financial_advice.jsonl")
    n, s, q = len(good), a.slice, a.probe
    # Disjoint question ranges: chain slices, then probes, then rebound's negatives/held-out.
    if 3 * s + 2 * q > n or max(a.positive) > s * 3 or a.held_out > q:
        raise SystemExit("slices, probes and amounts do not fit the 320-row sets; use smaller")
    slices = [good[:s], bad[s : 2 * s], fin[:s]]
    probes = [good[3 * s : 3 * s + q], bad[3 * s + q : 3 * s + 2 * q], fin[3 * s : 3 * s + q]]
    cfg = dataclasses.replace(ELASTICITY_CONFIG, lr=a.lr)
    hf, tok = load_hf(a.model)

    # Resistance
    base_loss = [held_out_loss(hf, tok, p) for p in probes]
    res = resistance(hf, tok, slices, cfg, probes)
    del res.thetas[1:]
    resist_rows = [
        {
            "k": k,
            "inverse: theta_{k+1} on D_k": round(res.mean_loss("inverse", k), 4),
            "forward: theta_k on D_{k+1}": round(res.mean_loss("forward", k), 4),
            "inverse first step": round(res.inverse[k][0], 4),
            "forward first step": round(res.forward[k][0], 4),
            "base on D_k / D_{k+1}": f"{base_loss[k - 1]:.3f} / {base_loss[k]:.3f}",
        }
        for k in res.inverse
    ]
    resist_min = (time.perf_counter() - t0) / 60

    # Rebound: negatives and held-out questions come after every question used above.
    neg_from = 3 * s + 2 * q
    negative = bad[neg_from:]
    if max(a.negative) > len(negative):
        raise SystemExit(f"--negative amounts must be <= {len(negative)}")
    medical = pairs(good[3 * s : 3 * s + a.held_out], bad[3 * s : 3 * s + a.held_out])
    general = em.general_questions()[: a.held_out]

    def metric(model, _tok) -> dict:
        return {
            "medical": preference(model, tok, medical),
            "general": preference(model, tok, general),
        }

    curves = rebound(
        hf, tok, good[: max(a.positive)], negative, a.positive, a.negative, metric, cfg
    )

    summary = {
        "command": command_line("analyses/elasticity.py", a, ROOT),
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
            "rebound negative": f"bad_medical[{neg_from}:{neg_from}+n]",
            "rebound held-out": f"medical pairs [{3 * s}:{3 * s + a.held_out}], "
            f"general_questions()[:{a.held_out}]",
        },
        "resistance": {
            "table": resist_rows,
            "base_loss_on_probes": [round(x, 4) for x in base_loss],
            "losses": {
                "inverse": res.inverse,
                "forward": res.forward,
                "chain": res.chain,
            },
            "minutes": round(resist_min, 1),
        },
        "rebound": {
            "negative_amounts": a.negative,
            "curves": {str(p): c for p, c in curves.items()},
        },
        "minutes_total": round((time.perf_counter() - t0) / 60, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figures(out, res, curves, a.negative)
    (out / "README.md").write_text(readme(summary))
    print(json.dumps({"resistance": resist_rows, "rebound": summary["rebound"]}, indent=1))


def figures(out: Path, res, curves: dict, amounts: list[int]) -> None:
    fig = go.Figure()
    for k in res.inverse:
        for which, dash in (("inverse", "solid"), ("forward", "dash")):
            y = getattr(res, which)[k]
            fig.add_trace(
                go.Scatter(x=list(range(1, len(y) + 1)), y=y, name=f"{which} k={k}", line_dash=dash)
            )
    fig.update_layout(
        title="Resistance: training loss, inverse (theta_k+1 on D_k) vs forward (theta_k on D_k+1)",
        xaxis_title="step",
        yaxis_title="loss per answer token (nats)",
        template="plotly_white",
    )
    save_figure(fig, out / "resistance")

    fig = go.Figure()
    for key, dash in (("medical", "solid"), ("general", "dot")):
        for p, c in curves.items():
            fig.add_trace(
                go.Scatter(
                    x=amounts, y=[r[key] for r in c], name=f"{key}, {p} positive", line_dash=dash
                )
            )
    fig.update_layout(
        title="Rebound: preference for bad answers after p good, then n bad medical examples",
        xaxis_title="negative examples n",
        yaxis_title="loss(good) - loss(bad), nats/token",
        template="plotly_white",
    )
    save_figure(fig, out / "rebound")


def readme(s: dict) -> str:
    amounts = s["rebound"]["negative_amounts"]
    rebound_rows = [
        {
            "positive p": p,
            **{f"n={n}": f"{r['medical']:+.3f} / {r['general']:+.3f}" for n, r in zip(amounts, c)},
        }
        for p, c in s["rebound"]["curves"].items()
    ]
    return "\n".join(
        [
            "# Elasticity on SmolLM2-135M-Instruct",
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
    main()
