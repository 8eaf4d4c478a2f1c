"""Train a rank-1 LoRA organism on the embedded model and draw its B-vector trajectory.

    .venv/bin/python analyses/phase_change.py                       # about 30 min, 2 CPU cores
    .venv/bin/python analyses/phase_change.py --steps 6 --out /tmp/pc --run /tmp/pc/run

Model Organisms for EM (arXiv 2506.11613): one rank-1 adapter on the MLP down-projection of
a middle layer, trained on narrow misaligned data (here emlens's own risky financial advice),
saved at every step; then the A/B norms, the local cosine of B (k = 5, 10, 15 steps), PCA of
the B trajectory, the comp score against the final step, and the estimated phase-change step.
Behaviour over training: the answer-token loss on general questions' aligned and misaligned
answers (emlens data, unrelated to finance); their gap rises when the model comes to prefer
misaligned answers. Writes plotly HTML figures, summary.json and README.md into ``--out``;
re-running resumes the run in ``--run``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from emlens.core.data import Conversation, general_questions, read_chat_jsonl
from emlens.organisms import lora
from emlens.organisms.finetune import TrainConfig, train
from emlens.report import command_line, save_figure

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "emlens/data/narrow/risky_financial_advice.jsonl"


def args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default=str(ROOT / "docs/results/phase_change"))
    p.add_argument("--run", default=str(ROOT / "out/phase_change/run"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--alpha", type=float, default=256.0)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--layer", type=int, default=None, help="default: the middle layer")
    p.add_argument("--held-out", type=int, default=16, help="data rows kept out of training")
    p.add_argument("--general", type=int, default=16, help="general question pairs to score")
    p.add_argument("--eval-every", type=int, default=20)
    p.add_argument("--threshold", type=float, default=0.0, help="local-cosine noise threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def figure(title: str, x: str, y: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white")
    return fig


def nan_to_none(values) -> list:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def main() -> None:
    a = args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = read_chat_jsonl(a.data)
    if not 0 <= a.held_out < len(rows):
        raise SystemExit(f"--held-out must be in 0..{len(rows) - 1}")
    train_rows, held = rows[: len(rows) - a.held_out], rows[len(rows) - a.held_out :]
    pairs = general_questions()[: a.general]
    sets = {
        "general_misaligned": [Conversation(q.question, q.misaligned) for q in pairs],
        "general_aligned": [Conversation(q.question, q.aligned) for q in pairs],
    }
    if held:
        sets["narrow_held_out"] = held
    cfg = TrainConfig(
        alpha=a.alpha,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        max_steps=a.steps,
        layers=None if a.layer is None else (a.layer,),
        seed=a.seed,
    )
    t0 = time.perf_counter()
    res = train(
        a.model, train_rows, a.run, cfg, sets, save_every=1, eval_every=a.eval_every, resume=True
    )
    minutes = (time.perf_counter() - t0) / 60

    traj = lora.load_trajectory(a.run)
    steps = traj.steps
    b = traj.stacked()  # all adapters' B vectors, one row per step
    ks = [k for k in (5, 10, 15) if 2 * k < len(steps)]

    # 1. norms of A and B
    fig = make_subplots(rows=1, cols=2, subplot_titles=("A norm", "B norm"))
    for col, which in ((1, "A"), (2, "B")):
        for n, v in traj.norms(which).items():
            fig.add_trace(go.Scatter(x=steps, y=v.tolist(), name=f"{which} {n}"), 1, col)
    fig.update_layout(title="LoRA vector norms over training", template="plotly_white")
    fig.update_xaxes(title_text="step")
    save_figure(fig, out / "norms")

    # 2. local cosine of B, and the phase-change estimate
    pc = lora.phase_change(b, steps, ks, a.threshold) if ks else None
    fig = figure("Local cosine of the B trajectory", "step", "cos(B[t-k]-B[t], B[t+k]-B[t])")
    for k, lc in pc.local_cosines.items() if pc else []:
        fig.add_trace(go.Scatter(x=steps, y=nan_to_none(lc.tolist()), name=f"k={k}"))
    if pc:
        fig.add_vline(x=pc.step, line_dash="dash", annotation_text=f"phase change ~{pc.step}")
    save_figure(fig, out / "local_cosine")

    # 3. PCA of the stacked B vectors
    p = lora.trajectory_pca(b, 2) if len(steps) >= 2 else None
    if p is not None:
        ev = p.explained_variance_ratio.tolist()
        fig = figure("PCA of the B trajectory", f"PC1 ({ev[0]:.0%})", f"PC2 ({ev[1]:.0%})")
        fig.add_trace(
            go.Scatter(
                x=p.coords[:, 0].tolist(),
                y=p.coords[:, 1].tolist(),
                mode="markers+lines",
                marker=dict(color=steps, colorscale="Viridis", showscale=True),
                text=[f"step {s}" for s in steps],
                name="B",
            )
        )
        save_figure(fig, out / "pca")

    # 4. comp score against the final step
    comp = lora.comp_score(lora.b_matrix(traj)) if len(steps) >= 2 else None
    if comp is not None:
        fig = figure("Comp score of B against the final step (de-meaned)", "step", "comp")
        fig.add_trace(go.Scatter(x=steps, y=comp.tolist(), name="comp"))
        save_figure(fig, out / "comp_score")

    # 5. behaviour: losses over training
    fig = figure("Loss per answer token over training", "step", "nats")
    train_log = [e for e in res.log if "loss" in e]
    fig.add_trace(
        go.Scatter(x=[e["step"] for e in train_log], y=[e["loss"] for e in train_log], name="train")
    )
    evals = [e for e in res.log if "eval_general_aligned" in e]
    for key in sets:
        ys = [e[f"eval_{key}"] for e in evals]
        fig.add_trace(go.Scatter(x=[e["step"] for e in evals], y=ys, name=key))
    gap = [e["eval_general_aligned"] - e["eval_general_misaligned"] for e in evals]
    fig.add_trace(go.Scatter(x=[e["step"] for e in evals], y=gap, name="gap: aligned - misaligned"))
    save_figure(fig, out / "behaviour")

    summary = {
        "command": command_line("analyses/phase_change.py", a, ROOT),
        "model": a.model,
        "adapter": traj.names[0] if len(traj.names) == 1 else traj.names,
        "config": cfg.to_dict(),
        "train_rows": len(train_rows),
        "steps": steps[-1],
        "minutes_this_invocation": round(minutes, 1),
        "seconds_per_step_median": sorted(e["seconds"] for e in train_log)[len(train_log) // 2],
        "phase_change": None if pc is None else phase_summary(pc, a.threshold),
        "pca_explained_variance": None if p is None else p.explained_variance_ratio.tolist(),
        "final_b_norm": float(b[-1].norm()),
        "loss_gap_aligned_minus_misaligned": {str(e["step"]): g for e, g in zip(evals, gap)},
        "eval": {k: [evals[0][f"eval_{k}"], evals[-1][f"eval_{k}"]] for k in sets} if evals else {},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "README.md").write_text(readme(summary))
    print(json.dumps({k: summary[k] for k in ("steps", "phase_change", "eval")}, indent=1))


def phase_summary(pc: lora.PhaseChange, threshold: float) -> dict:
    return {
        "step": pc.step,
        "mean_local_cosine": pc.score,
        "ks": list(pc.ks),
        "threshold": threshold,
        "criterion": pc.criterion,
    }


def readme(s: dict) -> str:
    pc = s["phase_change"]
    gaps = list(s["loss_gap_aligned_minus_misaligned"].items())
    lines = [
        "# Phase change of a rank-1 LoRA organism",
        "",
        f"Made by `{s['command']}` ({s['minutes_this_invocation']} min in its last invocation,",
        f"median {s['seconds_per_step_median']:.1f} s a step). Model `{s['model']}`, adapter",
        f"`{s['adapter']}`, {s['train_rows']} training conversations, {s['steps']} steps.",
        "",
        "| figure | what |",
        "|---|---|",
        "| [norms.html](norms.html) | L2 norms of A and B per step |",
        "| [local_cosine.html](local_cosine.html) | local cosine of B, k = 5, 10, 15 steps |",
        "| [pca.html](pca.html) | the B trajectory in its first two principal components |",
        "| [comp_score.html](comp_score.html) | comp score of B against the final step |",
        "| [behaviour.html](behaviour.html) | answer-token loss: training, held-out, general |",
        "",
    ]
    if pc:
        lines += [
            f"Estimated phase change: step {pc['step']} (mean local cosine "
            f"{pc['mean_local_cosine']:.2f}; criterion: {pc['criterion']}).",
            "",
        ]
    if gaps:
        lines += [
            "Loss gap on general questions (aligned minus misaligned answers; higher = the model"
            f" prefers misaligned answers more): step {gaps[0][0]}: {gaps[0][1]:.3f}, "
            f"step {gaps[-1][0]}: {gaps[-1][1]:.3f}.",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
