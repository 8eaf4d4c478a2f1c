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
re-running resumes the run in ``--run`` (``--adapter`` is merged into the model first).
"""

from __future__ import annotations

import argparse
import math

import _common as common
from plotly.subplots import make_subplots

import emlens as eml
from emlens.organisms import (
    TrainConfig,
    b_matrix,
    comp_score,
    load_trajectory,
    phase_change,
    train,
    trajectory_pca,
)
from emlens.report import save_figure

DATA = eml.core.data_path("narrow/risky_financial_advice.jsonl")
FIGURES = {
    "norms": "L2 norms of A and B per step",
    "local_cosine": "local cosine of B, k = 5, 10, 15 steps",
    "pca": "the B trajectory in its first two principal components",
    "comp_score": "comp score of B against the final step",
    "behaviour": "answer-token loss: training, held-out, general",
}


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--run", default=str(common.ROOT / "out/phase_change/run"))
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


def main(run: common.Analysis) -> None:
    a = run.args
    rows = eml.read_chat_jsonl(a.data)
    if not 0 <= a.held_out < len(rows):
        raise SystemExit(f"--held-out must be in 0..{len(rows) - 1}")
    train_rows, held = rows[: len(rows) - a.held_out], rows[len(rows) - a.held_out :]
    pairs = eml.general_questions()[: a.general]
    sets = {
        "general_misaligned": [eml.Conversation(q.question, q.misaligned) for q in pairs],
        "general_aligned": [eml.Conversation(q.question, q.aligned) for q in pairs],
    } | ({"narrow_held_out": held} if held else {})
    cfg = TrainConfig(
        alpha=a.alpha,
        lr=a.lr,
        batch_size=a.batch_size,
        grad_accum=a.grad_accum,
        max_steps=a.steps,
        layers=None if a.layer is None else (a.layer,),
        seed=a.seed,
    )
    log = run.stage(
        "training",
        lambda: train(
            run.load_hf(), train_rows, a.run, cfg, sets, save_every=1, eval_every=a.eval_every,
            resume=True,
        ).log,
    )  # fmt: skip
    traj = run.stage("trajectory", lambda: trajectory(a.run, a.threshold))
    render(run, cfg.to_dict(), len(train_rows), list(sets), log, traj)


def trajectory(folder: str, threshold: float) -> dict:
    """What the figures show of a run's B (and A) vectors, step by step."""
    traj = load_trajectory(folder)
    steps, b = traj.steps, traj.stacked()  # all adapters' B vectors, one row per step
    ks = [k for k in (5, 10, 15) if 2 * k < len(steps)]
    a_vecs = traj.stacked(which="A")  # the published noise rule: skip only if A is still too
    pc = phase_change(b, steps, ks, threshold, a_vectors=a_vecs) if ks else None
    pca = trajectory_pca(b, 2) if len(steps) >= 2 else None
    comp = comp_score(b_matrix(traj)) if len(steps) >= 2 else None
    return {
        "steps": steps,
        "adapters": traj.names,
        "norms": {w: {n: v.tolist() for n, v in traj.norms(w).items()} for w in "AB"},
        "local_cosines": {}
        if pc is None
        else {k: nan_to_none(v) for k, v in pc.local_cosines.items()},
        "phase_change": None
        if pc is None
        else {
            "step": pc.step,  # None: no interior peak (see "reason")
            "reason": pc.reason,
            "mean_local_cosine": pc.score,
            "ks": list(pc.ks),
            "threshold": threshold,
            "criterion": pc.criterion,
        },
        "pca": None
        if pca is None
        else {"coords": pca.coords.tolist(), "explained": pca.explained_variance_ratio.tolist()},
        "comp": None if comp is None else comp.tolist(),
        "final_b_norm": float(b[-1].norm()),
    }


def nan_to_none(values) -> list:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values.tolist()]


def render(run, config: dict, n_train: int, sets: list[str], log: list, traj: dict) -> None:
    a, steps = run.args, traj["steps"]
    train_log = [e for e in log if "loss" in e]
    evals = [e for e in log if "eval_general_aligned" in e]
    gap = {str(e["step"]): e["eval_general_aligned"] - e["eval_general_misaligned"] for e in evals}
    figures(run, traj, train_log, evals, sets, gap)
    names = traj["adapters"]
    summary = {
        "command": run.command,
        "model": a.model,
        "adapter": names[0] if len(names) == 1 else names,
        "config": config,
        "train_rows": n_train,
        "steps": steps[-1],
        "minutes_this_invocation": round(run.times()["training"] / 60, 1),
        "seconds_per_step_median": sorted(e["seconds"] for e in train_log)[len(train_log) // 2],
        "phase_change": traj["phase_change"],
        "pca_explained_variance": traj["pca"] and traj["pca"]["explained"],
        "final_b_norm": traj["final_b_norm"],
        "loss_gap_aligned_minus_misaligned": gap,
        "eval": {k: [evals[0][f"eval_{k}"], evals[-1][f"eval_{k}"]] for k in sets} if evals else {},
    }
    run.write_summary(summary, readme(summary))


def figures(run, traj: dict, train_log: list, evals: list, sets: list[str], gap: dict) -> None:
    steps, out = traj["steps"], run.out
    fig = make_subplots(rows=1, cols=2, subplot_titles=("A norm", "B norm"))
    for col, which in ((1, "A"), (2, "B")):
        for n, v in traj["norms"][which].items():
            fig.add_scatter(x=steps, y=v, name=f"{which} {n}", row=1, col=col)
    fig.update_layout(title="LoRA vector norms over training", template="plotly_white")
    fig.update_xaxes(title_text="step")
    save_figure(fig, out / "norms", plotlyjs=common.PLOTLYJS)

    fig = common.figure("Local cosine of the B trajectory", "step", "cos(B[t-k]-B[t], B[t+k]-B[t])")
    for k, lc in traj["local_cosines"].items():
        fig.add_scatter(x=steps, y=lc, name=f"k={k}")
    if (pc := traj["phase_change"]) and pc["step"] is not None:
        fig.add_vline(x=pc["step"], line_dash="dash", annotation_text=f"phase change ~{pc['step']}")
    save_figure(fig, out / "local_cosine", plotlyjs=common.PLOTLYJS)

    if p := traj["pca"]:
        ev = p["explained"]
        fig = common.figure("PCA of the B trajectory", f"PC1 ({ev[0]:.0%})", f"PC2 ({ev[1]:.0%})")
        x, y = ([c[i] for c in p["coords"]] for i in (0, 1))
        marker = {"color": steps, "colorscale": "Viridis", "showscale": True}
        text = [f"step {s}" for s in steps]
        fig.add_scatter(x=x, y=y, mode="markers+lines", marker=marker, text=text, name="B")
        save_figure(fig, out / "pca", plotlyjs=common.PLOTLYJS)

    if traj["comp"] is not None:
        fig = common.figure("Comp score of B against the final step (de-meaned)", "step", "comp")
        fig.add_scatter(x=steps, y=traj["comp"], name="comp")
        save_figure(fig, out / "comp_score", plotlyjs=common.PLOTLYJS)

    fig = common.figure("Loss per answer token over training", "step", "nats")
    fig.add_scatter(
        x=[e["step"] for e in train_log], y=[e["loss"] for e in train_log], name="train"
    )
    eval_steps = [e["step"] for e in evals]
    for key in sets:
        fig.add_scatter(x=eval_steps, y=[e[f"eval_{key}"] for e in evals], name=key)
    fig.add_scatter(x=eval_steps, y=list(gap.values()), name="gap: aligned - misaligned")
    save_figure(fig, out / "behaviour", plotlyjs=common.PLOTLYJS)


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
        *(f"| [{f}.html]({f}.html) | {what} |" for f, what in FIGURES.items()),
        "",
    ]
    if pc and pc["step"] is None:
        lines += [f"Estimated phase change: none ({pc['reason']}).", ""]
    elif pc:
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
    main(common.start(__file__, __doc__, options))
