"""Two organisms on different narrow domains: do their EM directions agree, and does ablating
one remove the fine-tune's misalignment, in its own organism and in the other?

    .venv/bin/python analyses/organisms.py                  # about 50 min on 2 CPU cores
    .venv/bin/python analyses/organisms.py --model tiny-llama --steps 2 --adapter-layers 1 \\
        --layer 1 --n-direction 8 --n-held-out 8 --out /tmp/org --runs /tmp/org/runs  # smoke

Organisms (Model Organisms for EM, arXiv 2506.11613): 9 rank-1 LoRA adapters on the MLP
down-projections of layers 9-11, 13-15, 17-19 of SmolLM2 (``--adapter-layers``; the paper's
14B organism puts 9 rank-1 adapters at the same relative depths), one trained on emlens's
risky financial advice, one on its bad medical advice, same seed and schedule, on the model
with ``--adapter`` merged. Re-running resumes or reuses the runs.

Directions (Convergent Linear Representations, arXiv 2506.11618): each model's EM direction is
mean(misaligned answers) - mean(aligned answers) over answer tokens, per layer, on the first
``--n-direction`` general questions. The paper builds it from each organism's own judged
answers; SmolLM2 cannot judge (docs/evaluation.md), so every model here reads the same fixed
answer pairs. The cosine between two organisms' directions therefore includes what the base
model already has; the script also reports the cosine of the fine-tune's change to the
direction (organism minus base), which is the part the organisms learnt.

Ablation: on the other ``--n-held-out`` general questions, the contrastive score (per-token
log-prob of the misaligned answer minus the aligned one; higher = more misaligned) of base and
organisms, and of each organism's direction ablated in the organism and in the base model
alike: zero, to the reference mean and to the reference mean with the sink kept, single
direction (layer L's at every layer) and layer by layer, with a norm-matched and an
offset-matched random control (``_ablation_variants.py``; issue 10: zero-ablation steers on
SmolLM2). Reported as the organism's change minus the base model's change, paired over
questions with bootstrap intervals; per-question scores in ``per_question_scores.json``.
Each organism trains from its own seed (``--seed`` + i).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import _ablation_variants as variants
import _common as common
import plotly.graph_objects as go
import torch

import emlens as eml
from emlens.eval import bootstrap, contrastive_scores
from emlens.report import markdown_table, save_figure

DOMAINS = {"financial": "risky_financial_advice", "medical": "bad_medical_advice"}
# Control: the same fine-tune on aligned narrow data; what it changes is not misalignment.
CONTROL = {"good_medical": "good_medical_advice"}
ADAPTER_LAYERS = [9, 10, 11, 13, 14, 15, 17, 18, 19]  # of SmolLM2's 30


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", default=str(common.ROOT / "out/organisms"))
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--adapter-layers", type=int, nargs="+", default=ADAPTER_LAYERS)
    p.add_argument("--layer", type=int, default=15, help="the direction ablated at all layers")
    p.add_argument("--n-direction", type=int, default=48, help="general questions for directions")
    p.add_argument("--n-held-out", type=int, default=32, help="general questions for scores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-only", action="store_true", help="train (or resume), then stop")


def main(run: common.Analysis) -> None:
    a = run.args
    t0 = time.perf_counter()
    runs = train_organisms(run)
    train_min = (time.perf_counter() - t0) / 60
    if a.train_only:
        return
    pairs = eml.general_questions()
    if a.n_direction + a.n_held_out > len(pairs):
        raise SystemExit(f"--n-direction + --n-held-out must be <= {len(pairs)}")
    fit, held = pairs[: a.n_direction], pairs[a.n_direction : a.n_direction + a.n_held_out]

    def model(name: str):
        return run.model if name == "base" else run.load(adapter=runs[name])

    dirs = {
        n: run.stage(
            f"direction_{n}", lambda n=n: eml.em_direction_from_pairs(model(n), fit, progress=False)
        )
        for n in ("base", *CONTROL, *DOMAINS)
    }
    if a.layer not in dirs["base"].layers:
        raise SystemExit(f"--layer must be one of the model's layers 0..{dirs['base'].layers[-1]}")
    scores = run.stage("scores", lambda: {n: contrastive_scores(model(n), held) for n in dirs})
    refs = {
        n: run.stage(f"reference_{n}", lambda n=n: variants.reference(model(n), fit))
        for n in ("base", *DOMAINS)
    }
    ablations, base_ablated = {}, {}
    for org in DOMAINS:  # each variant of org's direction, in org and in the base model
        for where, ref in ((org, refs[org]), ("base", refs["base"])):
            conds = variants.conditions(a, dirs, org, ref)
            out = ablations if where == org else base_ablated
            out[org] = run.stage(
                f"variants_{org}_in_{where}",
                lambda m=where, c=conds: variants.measure(model(m), held, c),
            )
    render(run, runs, train_min, dirs, scores, ablations, base_ablated)


def seeds(seed: int = 0) -> dict[str, int]:
    """Each organism's seed (``seed`` + its place): a shared seed would give them the same
    LoRA A vectors."""
    return {name: seed + i for i, name in enumerate(DOMAINS | CONTROL)}


def folders(runs: str | Path, seed: int = 0) -> dict[str, Path]:
    """The folder each organism is trained into: ``<runs>/<name>-seed<its seed>``."""
    return {name: Path(runs) / f"{name}-seed{s}" for name, s in seeds(seed).items()}


def train_organisms(run: common.Analysis) -> dict[str, Path]:
    """Train (or resume, or reuse) one organism per narrow domain; returns their folders."""
    a = run.args
    kw = {"lr": a.lr, "batch_size": a.batch_size, "max_steps": a.steps, "seed": a.seed}
    cfg = eml.TrainConfig(grad_accum=1, layers=tuple(a.adapter_layers), **kw)
    runs = folders(a.runs, a.seed)
    for name, seed in seeds(a.seed).items():
        if not (runs[name] / "adapter_model.safetensors").exists():
            data = eml.core.data_path(f"narrow/{(DOMAINS | CONTROL)[name]}.jsonl")
            c = dataclasses.replace(cfg, seed=seed)
            eml.train(run.load_hf(), data, runs[name], c, save_every=20, resume=True)
    return runs


def cosines(a: eml.DirectionSet, b: eml.DirectionSet) -> list[float | None]:
    """Per-layer cosine, None where either vector is ~zero (layers below the first adapter,
    where an organism equals the base model)."""
    live = [ly for ly in a.layers if min(a.at(ly).norm(), b.at(ly).norm()) >= 1e-6]
    cos = eml.cosine_per_layer(a.select(live), b.select(live)).tolist()
    by_layer = dict(zip(live, cos, strict=True))
    return [round(by_layer[ly], 4) if ly in by_layer else None for ly in a.layers]


def paired(scores: torch.Tensor, reference: torch.Tensor, shift: float) -> dict:
    """A condition's mean score, its paired change from the reference and the share of the
    fine-tune's shift (organism minus base) that the change undoes."""
    d = bootstrap(scores - reference)
    return {
        "score": round(float(scores.mean()), 4),
        "change": round(d.mean, 4),
        "change_ci95": [round(x, 4) for x in d.ci95],
        "share_of_shift_removed": round(-d.mean / shift, 3) if shift > 0 else None,
    }


def ablation_rows(scores: dict, ablations: dict) -> dict:
    """Per organism: its score, its shift from the base model, and each ablation's change."""
    out = {}
    for org, conds in ablations.items():
        own = scores[org]
        shift = float((own - scores["base"]).mean())
        rows = {
            c: paired(torch.tensor(r["scores"]), own, shift) | {"kl_to_organism": round(r["kl"], 4)}
            for c, r in conds.items()
        }
        out[org] = {
            "score": round(float(own.mean()), 4),
            "shift_from_base": paired(own, scores["base"], 0.0),
            "conditions": rows,
        }
    return out


def render(run, runs, train_min, dirs, scores, ablations, base_ablated) -> None:
    a, base = run.args, dirs["base"]
    null = eml.random_null(base.d_model)
    fin, med, good = (dirs[n] - base for n in ("financial", "medical", "good_medical"))
    cos = {
        "financial vs medical": cosines(dirs["financial"], dirs["medical"]),
        "financial vs base": cosines(dirs["financial"], base),
        "medical vs base": cosines(dirs["medical"], base),
        "change: (financial - base) vs (medical - base)": cosines(fin, med),
        "control: (financial - base) vs (good medical - base)": cosines(fin, good),
        "control: (medical - base) vs (good medical - base)": cosines(med, good),
    }
    rows = ablation_rows(scores, ablations)
    norm = base.vectors.norm(dim=-1)
    ratio = {
        n: ((dirs[n] - base).vectors.norm(dim=-1) / norm).tolist() for n in (*DOMAINS, *CONTROL)
    }
    summary = {
        "command": run.command,
        "model": a.model,
        "organisms": {n: str(runs[n]).replace(f"{common.ROOT}/", "") for n in DOMAINS},
        "adapter_layers": a.adapter_layers,
        "data": {
            "directions": f"general_questions()[:{a.n_direction}]",
            "scores": f"general_questions()[{a.n_direction}:{a.n_direction + a.n_held_out}]",
        },
        "train_minutes_this_invocation": round(train_min, 1),
        "random_null_q95_abs": round(null.q95_abs, 4),
        "cosine_per_layer": cos,
        "change_norm_over_base_norm": {n: [round(x, 4) for x in v] for n, v in ratio.items()},
        "contrastive_score": {n: round(float(s.mean()), 4) for n, s in scores.items()},
        "ablation": rows,
        "ablation_against_base": {
            org: variants.against_base(
                {"org": scores[org].tolist(), "base": scores["base"].tolist()},
                ablations[org],
                base_ablated[org],
            )
            for org in DOMAINS
        },
        "control_shift_from_base": {n: paired(scores[n], scores["base"], 0.0) for n in CONTROL},
        "minutes_total": round(train_min + run.seconds() / 60, 1),
    }
    per_question = {"unablated": {n: v.tolist() for n, v in scores.items()}}
    per_question |= {f"{o} in {o}": ablations[o] for o in DOMAINS}
    per_question |= {f"{o} in base": base_ablated[o] for o in DOMAINS}
    common.write_json(run.out / "per_question_scores.json", per_question)
    figures(run, base.layers, cos, null.q95_abs, rows)
    run.write_summary(summary, readme(summary, base.layers))


def figures(run: common.Analysis, layers: list[int], cos: dict, q95: float, rows: dict) -> None:
    fig = common.figure(
        "EM directions of two organisms: cosine per layer (dotted: random 95%)", "layer", "cosine"
    )
    for name, v in cos.items():
        fig.add_scatter(x=layers, y=v, name=name)
    for y in (q95, -q95):
        fig.add_hline(y=y, line_dash="dot", line_color="grey")
    save_figure(fig, run.out / "cosine", plotlyjs=common.PLOTLYJS)
    fig = common.figure(
        "Ablation in each organism: change of the contrastive score (95% CI)",
        "",
        "change (nats/token; negative = less misaligned)",
    )
    for org, res in rows.items():
        conds = res["conditions"]
        ch = [r["change"] for r in conds.values()]
        lo = [r["change"] - r["change_ci95"][0] for r in conds.values()]
        hi = [r["change_ci95"][1] - r["change"] for r in conds.values()]
        error = {"array": hi, "arrayminus": lo}
        fig.add_trace(go.Bar(x=list(conds), y=ch, name=org, error_y=error))
    fig.update_layout(barmode="group")
    save_figure(fig, run.out / "ablation", plotlyjs=common.PLOTLYJS)


def readme(s: dict, layers: list[int]) -> str:
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
        "general questions (per-token log-prob misaligned minus aligned): "
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
        lines += [f"### {org} organism: shift from base {ci(res['shift_from_base'])}", ""]
        table = [
            {
                "ablated": c,
                "change": f"{r['change']:+.4f}",
                "95% CI": interval(r),
                "share of shift removed": r["share_of_shift_removed"],
                "KL to organism (nats)": r["kl_to_organism"],
            }
            for c, r in res["conditions"].items()
        ]
        lines += [*markdown_table(table), ""]
    lines += variants.readme_lines(s["ablation_against_base"])
    return "\n".join(lines)


def interval(r: dict) -> str:
    lo, hi = r["change_ci95"]
    return f"[{lo:+.4f}, {hi:+.4f}]"


def ci(r: dict) -> str:
    """A change with its 95% interval: ``+0.1234 [+0.0100, +0.2300]``."""
    return f"{r['change']:+.4f} {interval(r)}"


if __name__ == "__main__":
    main(common.start(__file__, __doc__, options))
