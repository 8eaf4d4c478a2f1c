"""Two organisms on different narrow domains: do their EM directions agree, and does ablating
one remove the fine-tune's misalignment, in its own organism and in the other?

    .venv/bin/python analyses/organisms.py                  # about 50 min on 2 CPU cores
    .venv/bin/python analyses/organisms.py --steps 4 --n-direction 8 --n-held-out 8 \\
        --out /tmp/org --runs /tmp/org/runs                 # a smoke run

Organisms (Model Organisms for EM, arXiv 2506.11613): 9 rank-1 LoRA adapters on the MLP
down-projections of layers 9-11, 13-15, 17-19 of SmolLM2 (the paper's 14B organism puts 9
rank-1 adapters at the same relative depths), one trained on emlens's risky financial advice,
one on its bad medical advice, same seed and schedule. Re-running resumes or reuses the runs.

Directions (Convergent Linear Representations, arXiv 2506.11618): each model's EM direction is
mean(misaligned answers) - mean(aligned answers) over answer tokens, per layer, on the first
``--n-direction`` general questions. The paper builds it from each organism's own judged
answers; SmolLM2 cannot judge (docs/evaluation.md), so every model here reads the same fixed
answer pairs. The cosine between two organisms' directions therefore includes what the base
model already has; the script also reports the cosine of the fine-tune's change to the
direction (organism minus base), which is the part the organisms learnt.

Ablation: on the other ``--n-held-out`` general questions, the contrastive score (per-token
log-prob of the misaligned answer minus the aligned one; higher = more misaligned) of base and
organisms, and of each organism with the EM direction projected out: its own layer-L
direction at every layer, its own direction layer by layer (layer l's at layer l), the other
organism's (transfer), the base model's, and a random unit direction as control. Paired
differences against the un-ablated organism with bootstrap intervals, the share of the
fine-tune's shift removed, and the KL to the un-ablated organism on held-out answers (damage).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import plotly.graph_objects as go
import torch

import emlens as em
from emlens.eval.metrics import contrastive_scores
from emlens.report import command_line, markdown_table, save_figure

ROOT = Path(__file__).resolve().parents[1]
NARROW = ROOT / "emlens/data/narrow"
DOMAINS = {"financial": "risky_financial_advice.jsonl", "medical": "bad_medical_advice.jsonl"}
# Control: the same fine-tune on aligned narrow data; what it changes is not misalignment.
CONTROL = {"good_medical": "good_medical_advice.jsonl"}
ADAPTER_LAYERS = (9, 10, 11, 13, 14, 15, 17, 18, 19)


def args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--out", default=str(ROOT / "docs/results/organisms"))
    p.add_argument("--runs", default=str(ROOT / "out/organisms"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--layer", type=int, default=15, help="the direction ablated at all layers")
    p.add_argument("--n-direction", type=int, default=48, help="general questions for directions")
    p.add_argument("--n-held-out", type=int, default=32, help="general questions for scores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-only", action="store_true", help="train (or resume), then stop")
    return p.parse_args()


def train_organisms(a: argparse.Namespace) -> dict[str, Path]:
    """Train (or resume, or reuse) one organism per narrow domain; returns their folders."""
    cfg = em.TrainConfig(
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=1,
        max_steps=a.steps,
        layers=ADAPTER_LAYERS,
        seed=a.seed,
    )
    runs = {}
    for name, file in (DOMAINS | CONTROL).items():
        run = Path(a.runs) / name
        if not (run / "adapter_model.safetensors").exists():
            em.train(a.model, NARROW / file, run, cfg, save_every=20, resume=True)
        runs[name] = run
    return runs


def cosines(a: torch.Tensor, b: torch.Tensor) -> list[float | None]:
    """Per-layer cosine of two [n_layers, d_model] stacks; None where either is ~zero (layers
    below the first adapter, where an organism equals the base model)."""
    a, b = a.double(), b.double()
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).tolist()
    tiny = (a.norm(dim=-1) < 1e-6) | (b.norm(dim=-1) < 1e-6)
    return [None if t else c for c, t in zip(cos, tiny.tolist())]


def paired(scores: torch.Tensor, reference: torch.Tensor, shift: float) -> dict:
    """A condition's mean score, its paired change from the reference and the share of the
    fine-tune's shift (organism minus base) that the change undoes."""
    d = em.metrics.bootstrap(scores - reference)
    return {
        "score": round(float(scores.mean()), 4),
        "change": round(d.mean, 4),
        "change_ci95": [round(x, 4) for x in d.ci95],
        "share_of_shift_removed": round(-d.mean / shift, 3) if shift > 0 else None,
    }


def main() -> None:
    a = args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    runs = train_organisms(a)
    train_min = (time.perf_counter() - t0) / 60
    if a.train_only:
        return
    control = {n: runs.pop(n) for n in CONTROL}

    pairs = em.general_questions()
    if a.n_direction + a.n_held_out > len(pairs):
        raise SystemExit(f"--n-direction + --n-held-out must be <= {len(pairs)}")
    fit, held = pairs[: a.n_direction], pairs[a.n_direction : a.n_direction + a.n_held_out]
    models = {"base": em.load_model(a.model)}
    models |= {n: em.load_model(a.model, adapter=r) for n, r in (runs | control).items()}
    dirs = {n: em.em_direction_from_pairs(m, fit, progress=False) for n, m in models.items()}
    layers = dirs["base"].layers
    if a.layer not in layers:
        raise SystemExit(f"--layer must be one of the model's layers 0..{layers[-1]}")

    # 1b: cosine per layer between the organisms' directions, and of what fine-tuning changed
    fin, med, good, base = (
        dirs[n].vectors for n in ("financial", "medical", "good_medical", "base")
    )
    null = em.random_null(dirs["base"].d_model)
    cos = {
        "financial vs medical": cosines(fin, med),
        "financial vs base": cosines(fin, base),
        "medical vs base": cosines(med, base),
        "change: (financial - base) vs (medical - base)": cosines(fin - base, med - base),
        "control: (financial - base) vs (good medical - base)": cosines(fin - base, good - base),
        "control: (medical - base) vs (good medical - base)": cosines(med - base, good - base),
    }
    norm_ratio = {
        n: (dirs[n].vectors - base).norm(dim=-1) / base.norm(dim=-1) for n in runs | control
    }
    print("directions done", flush=True)

    # 2b: ablation in each organism, with transfer and a random control
    texts = [em.chat_prompt(models["base"].tokenizer, p.question) + p.aligned for p in held]
    scores = {n: contrastive_scores(models[n], held) for n in ("base", *control)}
    ablations = {}
    for org in runs:
        other = next(n for n in runs if n != org)
        m = models[org]
        scores[org] = contrastive_scores(m, held)
        shift = float((scores[org] - scores["base"]).mean())
        conditions = {
            f"own L{a.layer} direction, all layers": [em.ablate(dirs[org], a.layer)],
            "own direction, layer by layer": [
                em.Ablate(dirs[org].at(ly)[None], (ly,)) for ly in layers
            ],
            f"{other}'s L{a.layer} direction (transfer)": [em.ablate(dirs[other], a.layer)],
            f"base model's L{a.layer} direction": [em.ablate(dirs["base"], a.layer)],
            "random unit direction (control)": [
                em.ablate(em.random_like(dirs[org], seed=a.seed), a.layer)
            ],
        }
        rows = {}
        for cname, ivs in conditions.items():
            s = contrastive_scores(m, held, ivs)
            rows[cname] = paired(s, scores[org], shift) | {
                "kl_to_organism": round(em.kl_divergence(m, texts, ivs), 4)
            }
        print(f"ablations in {org} done", flush=True)
        ablations[org] = {
            "score": round(float(scores[org].mean()), 4),
            "shift_from_base": paired(scores[org], scores["base"], 0.0),
            "conditions": rows,
        }
    # the same ablation in the base model: what the direction does without the fine-tune
    base_abl = contrastive_scores(models["base"], held, [em.ablate(dirs["base"], a.layer)])
    base_row = paired(base_abl, scores["base"], 0.0)
    control_shift = {n: paired(scores[n], scores["base"], 0.0) for n in control}

    summary = {
        "command": command_line("analyses/organisms.py", a, ROOT),
        "model": a.model,
        "organisms": {n: str(r).replace(str(ROOT) + "/", "") for n, r in runs.items()},
        "adapter_layers": list(ADAPTER_LAYERS),
        "data": {
            "directions": f"general_questions()[:{a.n_direction}]",
            "scores": f"general_questions()[{a.n_direction}:{a.n_direction + a.n_held_out}]",
        },
        "train_minutes_this_invocation": round(train_min, 1),
        "random_null_q95_abs": round(null.q95_abs, 4),
        "cosine_per_layer": {
            k: [None if c is None else round(c, 4) for c in v] for k, v in cos.items()
        },
        "change_norm_over_base_norm": {
            n: [round(float(x), 4) for x in v] for n, v in norm_ratio.items()
        },
        "contrastive_score": {n: round(float(s.mean()), 4) for n, s in scores.items()},
        "ablation": ablations,
        "ablation_in_base": base_row,
        "control_shift_from_base": control_shift,
        "minutes_total": round((time.perf_counter() - t0) / 60, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figures(out, layers, cos, null.q95_abs, ablations)
    (out / "README.md").write_text(readme(summary, layers))
    print(json.dumps({k: summary[k] for k in ("contrastive_score", "ablation_in_base")}, indent=1))


def figures(out: Path, layers, cos: dict, q95: float, ablations: dict) -> None:
    fig = go.Figure()
    for name, v in cos.items():
        fig.add_trace(go.Scatter(x=layers, y=v, name=name))
    for y in (q95, -q95):
        fig.add_hline(y=y, line_dash="dot", line_color="grey")
    fig.update_layout(
        title="EM directions of two organisms: cosine per layer (dotted: random 95%)",
        xaxis_title="layer",
        yaxis_title="cosine",
        template="plotly_white",
    )
    save_figure(fig, out / "cosine")

    fig = go.Figure()
    for org, res in ablations.items():
        conds = list(res["conditions"])
        ch = [res["conditions"][c]["change"] for c in conds]
        lo = [c - res["conditions"][k]["change_ci95"][0] for c, k in zip(ch, conds)]
        hi = [res["conditions"][k]["change_ci95"][1] - c for c, k in zip(ch, conds)]
        fig.add_trace(go.Bar(x=conds, y=ch, name=org, error_y=dict(array=hi, arrayminus=lo)))
    fig.update_layout(
        title="Ablation in each organism: change of the contrastive score (95% CI)",
        yaxis_title="change (nats/token; negative = less misaligned)",
        barmode="group",
        template="plotly_white",
    )
    save_figure(fig, out / "ablation")


def readme(s: dict, layers) -> str:
    cos = s["cosine_per_layer"]
    rows = [
        {"layer": ly, **{k: "-" if v[i] is None else f"{v[i]:.3f}" for k, v in cos.items()}}
        for i, ly in enumerate(layers)
    ]
    lines = [
        "# Two organisms: EM directions and ablation",
        "",
        f"Made by `{s['command']}`; numbers in `summary.json`, figures `cosine.html`, "
        "`ablation.html`.",
        "",
        f"Random 95% level of |cos|: {s['random_null_q95_abs']}. Contrastive score on held-out "
        f"general questions (per-token log-prob misaligned minus aligned): "
        + ", ".join(f"{k} {v:+.3f}" for k, v in s["contrastive_score"].items()),
        "",
        "## Cosine per layer",
        "",
        *markdown_table(rows),
        "",
        "## Ablation (change of the contrastive score against the un-ablated organism)",
        "",
    ]
    for org, res in s["ablation"].items():
        sh = res["shift_from_base"]
        lines += [
            f"### {org} organism: shift from base {sh['change']:+.4f} "
            f"[{sh['change_ci95'][0]:+.4f}, {sh['change_ci95'][1]:+.4f}]",
            "",
        ]
        lines += markdown_table(
            [
                {
                    "ablated": c,
                    "change": f"{r['change']:+.4f}",
                    "95% CI": f"[{r['change_ci95'][0]:+.4f}, {r['change_ci95'][1]:+.4f}]",
                    "share of shift removed": r["share_of_shift_removed"],
                    "KL to organism (nats)": r["kl_to_organism"],
                }
                for c, r in res["conditions"].items()
            ]
        ) + [""]
    b = s["ablation_in_base"]
    lines += [
        f"Same ablation (base direction, L) in the base model: change {b['change']:+.4f} "
        f"[{b['change_ci95'][0]:+.4f}, {b['change_ci95'][1]:+.4f}].",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
