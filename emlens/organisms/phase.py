"""The phase change of a LoRA training run (Model Organisms for EM, arXiv 2506.11613).

- local cosine at step t: cos(v[t-k] - v[t], v[t+k] - v[t]) of the B vectors; -1 on a
  straight path, rising towards 0 and above where the path turns. As in the published code
  (``plot_local_cos_sim``), a step is skipped (NaN) only when the B moves AND the A moves on
  both sides are all shorter than the noise threshold (with no A given: the B moves alone).
- phase change: the step where the local cosine averaged over k in {5, 10, 15} peaks; when the
  highest value sits at the first or last step where it is defined, the turn may lie outside
  the range, so the answer is "no interior peak" (``step`` None, with the reason).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import torch
from jaxtyping import Float
from torch import Tensor


def _check_trajectory(vectors: Tensor, steps: Sequence[int]) -> list[int]:
    steps = [int(s) for s in steps]
    if vectors.ndim != 2 or vectors.shape[0] != len(steps):
        raise ValueError(
            f"expected vectors [n_steps, d] with one row per step; got {tuple(vectors.shape)} "
            f"for {len(steps)} steps"
        )
    if any(b <= a for a, b in pairwise(steps)):
        raise ValueError("steps must be strictly increasing")
    return steps


def _moves(v: Tensor, i: int, j: int, m: int) -> tuple[Tensor, Tensor]:
    return v[i] - v[j], v[m] - v[j]


def local_cosine(
    vectors: Float[Tensor, "n_steps d"],
    steps: Sequence[int],
    k: int,
    threshold: float = 0.0,
    a_vectors: Float[Tensor, "n_steps d_in"] | None = None,
) -> Float[Tensor, " n_steps"]:
    """Local cosine of a trajectory: at step t, cos(v[t-k] - v[t], v[t+k] - v[t]).

    A straight path gives -1; a right-angle turn gives 0.

    Args:
        vectors: ``[n_steps, d]`` B vectors, one row per saved step.
        steps: the training step of each row, strictly increasing.
        k: the distance in training steps (not rows) to look back and ahead.
        threshold: the L2 length under which a move counts as noise.
        a_vectors: the A vectors at the same steps; a step is skipped only when its A moves
            are noise too (the published rule: both A and B still).

    Returns:
        ``[n_steps]``; NaN where step t-k or t+k was not saved, where every move is shorter
        than ``threshold``, or where a B move is exactly zero (cosine undefined).

    Examples:
        >>> v = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
        >>> local_cosine(v, [0, 1, 2], k=1).tolist()[1]
        0.0
    """
    steps = _check_trajectory(vectors, steps)
    if a_vectors is not None and a_vectors.shape[0] != len(steps):
        raise ValueError(f"a_vectors has {a_vectors.shape[0]} rows for {len(steps)} steps")
    if k < 1:
        raise ValueError(f"k must be >= 1 training steps, not {k}")
    at = {s: i for i, s in enumerate(steps)}
    v = vectors.double()
    a = None if a_vectors is None else a_vectors.double()
    out = torch.full((len(steps),), float("nan"), dtype=torch.float64)
    for i, s in enumerate(steps):
        if s - k not in at or s + k not in at:
            continue
        before, after = _moves(v, at[s - k], i, at[s + k])
        moves = (
            [before, after] if a is None else [before, after, *_moves(a, at[s - k], i, at[s + k])]
        )
        if max(float(m.norm()) for m in moves) < threshold or min(before.norm(), after.norm()) == 0:
            continue
        out[i] = torch.nn.functional.cosine_similarity(before, after, dim=0)
    return out.float()


@dataclass
class PhaseChange:
    """The estimated phase-change step, or why there is none, and the local cosines.

    Attributes:
        step: the estimated step; None when the peak is not interior (see ``reason``).
        score: the highest mean local cosine over ``ks`` (at ``step`` when there is one).
        ks: the distances (training steps) averaged over.
        local_cosines: the local cosine at every saved step, by k.
        reason: why ``step`` is None (None when there is a step).
        criterion: how ``step`` was chosen, in words.
    """

    step: int | None
    score: float
    ks: tuple[int, ...]
    local_cosines: dict[int, Float[Tensor, " n_steps"]]
    reason: str | None = None
    criterion: str = (
        "argmax over steps of the local cosine of B averaged over ks, among steps where every "
        "k is defined and passes the noise threshold, if it is not the first or last such step: "
        "where the B trajectory turns most sharply"
    )


def phase_change(
    vectors: Float[Tensor, "n_steps d"],
    steps: Sequence[int],
    ks: Sequence[int] = (5, 10, 15),
    threshold: float = 0.0,
    a_vectors: Float[Tensor, "n_steps d_in"] | None = None,
) -> PhaseChange:
    """Estimate the phase-change step of a B trajectory (Model Organisms for EM).

    Criterion: the step where the local cosine, averaged over ``ks``, is highest, counting
    only steps where the local cosine is defined for every k (see `local_cosine`). A highest
    value at the first or last defined step is no peak (the curve may still rise past the
    range): ``step`` is None and ``reason`` says so.

    Args:
        vectors: ``[n_steps, d]``: ``trajectory.stacked()`` for all adapters at once, or
            one adapter's ``B``.
        steps: the training step of each row, strictly increasing.
        ks: the distances (training steps) of the local cosines averaged.
        threshold: the noise threshold of `local_cosine`.
        a_vectors: the A vectors (``trajectory.stacked(which="A")``) for the noise rule.

    Returns:
        The step (or None with the reason), its score and the local cosines.

    Raises:
        ValueError: no ks, or no step has a defined local cosine for every k.

    Examples:
        A short run of a tiny model, saved at every step (a real run: ``ks=(5, 10, 15)``
        over its saved steps):

        >>> from emlens.core.data import data_path
        >>> from emlens.organisms.config import TrainConfig
        >>> from emlens.organisms.training import train
        >>> from emlens.organisms.trajectory import load_trajectory
        >>> data = data_path("narrow/risky_financial_advice.jsonl")
        >>> config = TrainConfig(max_steps=8, batch_size=2, grad_accum=1)
        >>> _ = train("tiny-llama", data, "runs/fin", config, save_every=1, progress=False)
        >>> traj = load_trajectory("runs/fin")
        >>> pc = phase_change(traj.stacked(), traj.steps, ks=(1, 2))
        >>> pc.step in traj.steps or pc.reason is not None  # a step, or why there is none
        True
    """
    if not ks:
        raise ValueError("need at least one k")
    lc = {int(k): local_cosine(vectors, steps, int(k), threshold, a_vectors) for k in ks}
    mean = torch.stack(list(lc.values())).mean(0)  # NaN wherever one k is undefined
    defined = torch.nonzero(~torch.isnan(mean))[:, 0].tolist()
    if not defined:
        raise ValueError(
            f"no step has a defined local cosine for every k in {tuple(lc)}: the trajectory "
            f"({len(steps)} saved steps) is too short or too still for these k and threshold"
        )
    i = int(torch.nan_to_num(mean, nan=-float("inf")).argmax())
    step, score = int(list(steps)[i]), float(mean[i])
    if i in (defined[0], defined[-1]):
        where = "only" if len(defined) == 1 else ("first" if i == defined[0] else "last")
        reason = (
            f"no interior peak: the highest mean local cosine ({score:.3f}) is at step {step}, "
            f"the {where} step where every k in {tuple(lc)} is defined"
        )
        return PhaseChange(None, score, tuple(lc), lc, reason)
    return PhaseChange(step, score, tuple(lc), lc)
