"""Training trajectories of LoRA adapters: local cosine, the phase change, comp score, PCA.

Model Organisms for EM (arXiv 2506.11613, section on the phase transition) follows the A and
B vectors of rank-1 adapters over the checkpoints of a training run and sees B rotate sharply
when misalignment is learned:

- local cosine and the phase change: `emlens.organisms.phase`;
- comp score of step t against the final step T: ||X_t^T X_T||_F / (||X_t||_F ||X_T||_F),
  X_t the (d, n_adapters) matrix of B vectors, de-meaned over steps;
- PCA of the stacked B vectors (scikit-learn).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from emlens.core.hub import run_folder
from emlens.organisms.adapters import WEIGHTS, read_adapter
from emlens.organisms.runs import checkpoints


@dataclass
class LoraTrajectory:
    """Rank-1 A and B vectors of every adapter at every saved step of a run.

    Attributes:
        steps: the saved training steps, increasing.
        A: ``[n_steps, d_in]`` A vectors by adapter name.
        B: ``[n_steps, d_out]`` B vectors by adapter name.
        scaling: each adapter's scaling (alpha / r, or alpha / sqrt(r) with rsLoRA).
    """

    steps: list[int]
    A: dict[str, Float[Tensor, "n_steps d_in"]]
    B: dict[str, Float[Tensor, "n_steps d_out"]]
    scaling: dict[str, float]

    @property
    def names(self) -> list[str]:
        """The adapted modules, in layer order."""
        return list(self.B)

    def norms(self, which: str = "B") -> dict[str, Float[Tensor, " n_steps"]]:
        """L2 norm of each adapter's A or B vector at each step."""
        vecs = {"A": self.A, "B": self.B}.get(which)
        if vecs is None:
            raise ValueError(f"which must be 'A' or 'B', not {which!r}")
        return {n: v.norm(dim=-1) for n, v in vecs.items()}

    def stacked(
        self, adapters: Sequence[str] | None = None, which: str = "B"
    ) -> Float[Tensor, "n_steps d"]:
        """The chosen adapters' vectors (all by default) concatenated, one row per step."""
        vecs = {"A": self.A, "B": self.B}[which]
        names = self.names if adapters is None else list(adapters)
        missing = [n for n in names if n not in vecs]
        if missing or not names:
            raise KeyError(f"adapters {missing or names} not in this trajectory ({self.names})")
        return torch.cat([vecs[n] for n in names], dim=-1)


def load_trajectory(run_dir: str | os.PathLike[str], revision: str | None = None) -> LoraTrajectory:
    """A and B vectors of the rank-1 adapters of every checkpoint of a run, by step.

    Args:
        run_dir: a run folder holding ``checkpoint-<step>`` adapter folders, or a
            ``checkpoints/`` sub-folder holding them (the layout of some published runs);
            or a hub id ``owner/name[/sub/folder]`` of such a run (its adapter files only
            are fetched; `emlens.core.hub`).
        revision: the hub revision (branch, tag or commit) of a hub run.

    Returns:
        The trajectory, one row per saved step.

    Examples:
        A short run of a tiny model, saved at every step:

        >>> from emlens.core.data import data_path
        >>> from emlens.organisms.config import TrainConfig
        >>> from emlens.organisms.training import train
        >>> data = data_path("narrow/risky_financial_advice.jsonl")
        >>> config = TrainConfig(max_steps=4, batch_size=2, grad_accum=1)
        >>> _ = train("tiny-llama", data, "runs/fin", config, save_every=1, progress=False)
        >>> traj = load_trajectory("runs/fin")
        >>> traj.steps, traj.names, traj.stacked().shape  # one B vector per step
        ([1, 2, 3, 4], ['model.layers.1.mlp.down_proj'], torch.Size([4, 64]))

        Then ``phase_change(traj.stacked(), traj.steps)`` (`emlens.organisms.phase`) finds
        where B turns.
    """
    run_dir = run_folder(run_dir, revision)
    found = checkpoints(run_dir) or checkpoints(run_dir / "checkpoints")
    found = [c for c in found if (c / WEIGHTS).exists()]
    if not found:
        raise FileNotFoundError(f"no checkpoint-<step> adapter folders in {run_dir}")
    adapters = [read_adapter(c) for c in found]
    names = adapters[0].names
    for c, a in zip(found, adapters, strict=True):
        if a.names != names:
            raise ValueError(f"{c} has adapters {a.names}, the first checkpoint {names}")
    return LoraTrajectory(
        steps=[int(c.name.split("-")[-1]) for c in found],
        A={n: torch.stack([a.a_vector(n) for a in adapters]) for n in names},
        B={n: torch.stack([a.b_vector(n) for a in adapters]) for n in names},
        scaling=adapters[-1].scaling,
    )


def comp_score(
    vectors: Float[Tensor, "n_steps n_adapters d"], de_mean: bool = True
) -> Float[Tensor, " n_steps"]:
    """Comp score of each step against the final step (Model Organisms for EM):
    ||X_t^T X_T||_F / (||X_t||_F ||X_T||_F), X_t = the ``(d, n_adapters)`` matrix of B vectors
    at step t, after subtracting the mean over steps (``de_mean``).

    With one adapter this is |cos(b_t, b_T)|. (The published code stacks adapters as rows,
    which makes the score identically 1 for a single adapter; emlens follows the formula.)

    Args:
        vectors: ``[n_steps, n_adapters, d]`` B vectors (`b_matrix`).
        de_mean: subtract the mean over steps first.

    Returns:
        ``[n_steps]`` scores in [0, 1].
    """
    if vectors.ndim != 3 or vectors.shape[0] < 2:
        raise ValueError(
            f"expected [n_steps >= 2, n_adapters, d] B vectors, got {tuple(vectors.shape)}"
        )
    x = vectors.double()
    if de_mean:
        x = x - x.mean(0, keepdim=True)
    x = x.transpose(1, 2)  # columns are adapters
    last = x[-1]
    num = torch.linalg.matrix_norm(x.transpose(1, 2) @ last)
    den = torch.linalg.matrix_norm(x) * torch.linalg.matrix_norm(last)
    if (den == 0).any():
        raise ValueError("a step has all-zero (de-meaned) B vectors: comp score undefined")
    score: Tensor = (num / den).float()
    return score


def b_matrix(trajectory: LoraTrajectory) -> Float[Tensor, "n_steps n_adapters d"]:
    """B vectors of every adapter stacked per step (adapters must share ``d_out``)."""
    dims = {n: b.shape[-1] for n, b in trajectory.B.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"adapters write to spaces of different widths {dims}")
    return torch.stack(list(trajectory.B.values()), dim=1)


@dataclass
class TrajectoryPCA:
    """PCA of stacked vectors over steps.

    Attributes:
        coords: each step's coordinates on the components.
        explained_variance_ratio: the share of variance of each component.
        components: the principal directions.
    """

    coords: Float[Tensor, "n_steps n_components"]
    explained_variance_ratio: Float[Tensor, " n_components"]
    components: Float[Tensor, "n_components d"]


def trajectory_pca(vectors: Float[Tensor, "n_steps d"], n_components: int = 2) -> TrajectoryPCA:
    """PCA of a trajectory (rows are steps) with scikit-learn.

    Args:
        vectors: ``[n_steps, d]``, one row per step.
        n_components: how many components, at most ``min(n_steps, d)``.

    Returns:
        Coordinates, explained-variance ratios and components.
    """
    from sklearn.decomposition import PCA

    if vectors.ndim != 2 or not 1 <= n_components <= min(vectors.shape):
        raise ValueError(
            f"expected [n_steps, d] vectors and 1 <= n_components <= min(n_steps, d); got "
            f"{tuple(vectors.shape)} and n_components={n_components}"
        )
    p = PCA(n_components=n_components).fit(vectors.double().numpy())
    return TrajectoryPCA(
        torch.from_numpy(p.transform(vectors.double().numpy())).float(),
        torch.from_numpy(p.explained_variance_ratio_).float(),
        torch.from_numpy(p.components_).float(),
    )
