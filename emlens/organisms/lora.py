"""LoRA adapters as vectors: loading, training trajectories, the phase change, edits.

A rank-1 LoRA adapter on a linear map W adds ``scaling * B (A . x)`` to its output: A
(``d_in``) reads the input, B (``d_out``) is the direction written. Model Organisms for EM
(arXiv 2506.11613, section on the phase transition) follows A and B over the checkpoints of a
training run and sees B rotate sharply when misalignment is learned:

- local cosine at step t: cos(B[t-k] - B[t], B[t+k] - B[t]); -1 on a straight path, rising
  towards 0 and above where the path turns; steps whose moves are both shorter than a noise
  threshold are left out (NaN);
- comp score of step t against the final step T: ||X_t^T X_T||_F / (||X_t||_F ||X_T||_F),
  X_t the (d, n_adapters) matrix of B vectors, de-meaned over steps;
- PCA of the stacked B vectors (scikit-learn).

Adapters load merged with ``emlens.load_model(spec, adapter=folder)``; unmerged with
:func:`load_unmerged`. Edits (:func:`remove_direction`, :func:`scale_adapters`) write new
adapter folders that load either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from emlens.organisms.finetune import checkpoints

if TYPE_CHECKING:
    from peft import PeftModel
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

    from emlens.core.models import Device

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<name>.+)\.lora_(?P<ab>[AB])\.(?:\w+\.)?weight$")


@dataclass
class LoraAdapter:
    """The LoRA matrices of one adapter folder, by module name (``model.layers.15.mlp...``).

    ``A[name]`` is ``[r, d_in]`` and ``B[name]`` is ``[d_out, r]`` as peft stores them;
    ``scaling[name]`` is alpha / r (alpha / sqrt(r) with rsLoRA).
    """

    A: dict[str, Float[Tensor, "r d_in"]]
    B: dict[str, Float[Tensor, "d_out r"]]
    scaling: dict[str, float]
    config: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.A)

    def a_vector(self, name: str) -> Float[Tensor, " d_in"]:
        """A of a rank-1 adapter as a vector."""
        return self._rank1(name, self.A)[0]

    def b_vector(self, name: str) -> Float[Tensor, " d_out"]:
        """B of a rank-1 adapter as a vector."""
        return self._rank1(name, self.B)[:, 0]

    def _rank1(self, name: str, mats: dict[str, Tensor]) -> Tensor:
        if name not in mats:
            raise KeyError(f"no adapter {name!r}; this folder has {self.names}")
        if self.A[name].shape[0] != 1:
            raise ValueError(
                f"{name} is a rank-{self.A[name].shape[0]} adapter: A and B vectors are "
                "defined for rank-1 adapters"
            )
        return mats[name]


def _check_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not (folder / CONFIG).exists() or not (folder / WEIGHTS).exists():
        raise FileNotFoundError(
            f"{folder} is not a peft adapter folder: expected {CONFIG} and {WEIGHTS}"
        )
    return folder


def _alpha_for(name: str, config: dict) -> float:
    for key, alpha in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?{key}$", name):
            return float(alpha)
    return float(config["lora_alpha"])


def read_adapter(folder: str | os.PathLike) -> LoraAdapter:
    """Read the A and B matrices and scalings of a peft LoRA folder (own or published)."""
    folder = _check_folder(folder)
    config = json.loads((folder / CONFIG).read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        kind = "DoRA" if config.get("use_dora") else config.get("peft_type")
        raise ValueError(f"{folder}: a {kind} adapter, expected a plain LoRA adapter")
    A: dict[str, Tensor] = {}
    B: dict[str, Tensor] = {}
    for key, t in load_file(str(folder / WEIGHTS)).items():
        m = _KEY.match(key)
        if m:
            (A if m["ab"] == "A" else B)[m["name"]] = t.float()
    if not A or set(A) != set(B):
        raise ValueError(f"{folder}: expected matching lora_A / lora_B weights, found {len(A)}")
    names = sorted(A, key=_natural)
    scaling = {}
    for n in names:
        r, alpha = A[n].shape[0], _alpha_for(n, config)
        scaling[n] = alpha / (r**0.5 if config.get("use_rslora") else r)
    return LoraAdapter({n: A[n] for n in names}, {n: B[n] for n in names}, scaling, config)


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


@dataclass
class LoraTrajectory:
    """Rank-1 A and B vectors of every adapter at every saved step of a run."""

    steps: list[int]
    A: dict[str, Float[Tensor, "n_steps d_in"]]
    B: dict[str, Float[Tensor, "n_steps d_out"]]
    scaling: dict[str, float]

    @property
    def names(self) -> list[str]:
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


def load_trajectory(run_dir: str | os.PathLike) -> LoraTrajectory:
    """A and B vectors of the ``checkpoint-<step>`` folders in ``run_dir`` (or its
    ``checkpoints/`` sub-folder, the layout of some published runs), by step."""
    run_dir = Path(run_dir)
    found = checkpoints(run_dir) or checkpoints(run_dir / "checkpoints")
    found = [c for c in found if (c / WEIGHTS).exists()]
    if not found:
        raise FileNotFoundError(f"no checkpoint-<step> adapter folders in {run_dir}")
    adapters = [read_adapter(c) for c in found]
    names = adapters[0].names
    for c, a in zip(found, adapters):
        if a.names != names:
            raise ValueError(f"{c} has adapters {a.names}, the first checkpoint {names}")
    return LoraTrajectory(
        steps=[int(c.name.split("-")[-1]) for c in found],
        A={n: torch.stack([a.a_vector(n) for a in adapters]) for n in names},
        B={n: torch.stack([a.b_vector(n) for a in adapters]) for n in names},
        scaling=adapters[-1].scaling,
    )


# ---- trajectory measures --------------------------------------------------------------------


def _check_trajectory(vectors: Tensor, steps: Sequence[int]) -> list[int]:
    steps = [int(s) for s in steps]
    if vectors.ndim != 2 or vectors.shape[0] != len(steps):
        raise ValueError(
            f"expected vectors [n_steps, d] with one row per step; got {tuple(vectors.shape)} "
            f"for {len(steps)} steps"
        )
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError("steps must be strictly increasing")
    return steps


def local_cosine(
    vectors: Float[Tensor, "n_steps d"], steps: Sequence[int], k: int, threshold: float = 0.0
) -> Float[Tensor, " n_steps"]:
    """Local cosine of a trajectory (Model Organisms for EM): at step t,
    cos(v[t-k] - v[t], v[t+k] - v[t]), with k in training steps.

    NaN where step t-k or t+k was not saved, or where both moves are shorter than
    ``threshold`` (L2; noise). A straight path gives -1; a right-angle turn gives 0.
    """
    steps = _check_trajectory(vectors, steps)
    if k < 1:
        raise ValueError(f"k must be >= 1 training steps, not {k}")
    at = {s: i for i, s in enumerate(steps)}
    v = vectors.double()
    out = torch.full((len(steps),), float("nan"), dtype=torch.float64)
    for i, s in enumerate(steps):
        if s - k not in at or s + k not in at:
            continue
        before, after = v[at[s - k]] - v[i], v[at[s + k]] - v[i]
        if max(before.norm(), after.norm()) < threshold or min(before.norm(), after.norm()) == 0:
            continue
        out[i] = torch.nn.functional.cosine_similarity(before, after, dim=0)
    return out.float()


@dataclass
class PhaseChange:
    """The estimated phase-change step and the local cosines it was read from."""

    step: int
    score: float  # the mean local cosine over ks at that step
    ks: tuple[int, ...]
    local_cosines: dict[int, Float[Tensor, " n_steps"]]
    criterion: str = (
        "argmax over steps of the local cosine of B averaged over ks, among steps where every "
        "k is defined and passes the noise threshold: where the B trajectory turns most sharply"
    )


def phase_change(
    vectors: Float[Tensor, "n_steps d"],
    steps: Sequence[int],
    ks: Sequence[int] = (5, 10, 15),
    threshold: float = 0.0,
) -> PhaseChange:
    """Estimate the phase-change step of a B trajectory (Model Organisms for EM).

    Criterion: the step where the local cosine, averaged over ``ks``, is highest, counting
    only steps where the local cosine is defined for every k (see :func:`local_cosine`).
    Pass ``trajectory.stacked()`` for all adapters at once or one adapter's ``B``.
    """
    if not ks:
        raise ValueError("need at least one k")
    lc = {int(k): local_cosine(vectors, steps, int(k), threshold) for k in ks}
    mean = torch.stack(list(lc.values())).mean(0)  # NaN wherever one k is undefined
    if torch.isnan(mean).all():
        raise ValueError(
            f"no step has a defined local cosine for every k in {tuple(lc)}: the trajectory "
            f"({len(steps)} saved steps) is too short or too still for these k and threshold"
        )
    i = int(torch.nan_to_num(mean, nan=-float("inf")).argmax())
    return PhaseChange(int(list(steps)[i]), float(mean[i]), tuple(lc), lc)


def comp_score(
    vectors: Float[Tensor, "n_steps n_adapters d"], de_mean: bool = True
) -> Float[Tensor, " n_steps"]:
    """Comp score of each step against the final step (Model Organisms for EM):
    ||X_t^T X_T||_F / (||X_t||_F ||X_T||_F), X_t = the ``(d, n_adapters)`` matrix of B vectors
    at step t, after subtracting the mean over steps (``de_mean``).

    With one adapter this is |cos(b_t, b_T)|. (The published code stacks adapters as rows,
    which makes the score identically 1 for a single adapter; emlens follows the formula.)
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
    return (num / den).float()


def b_matrix(trajectory: LoraTrajectory) -> Float[Tensor, "n_steps n_adapters d"]:
    """B vectors of every adapter stacked per step (adapters must share ``d_out``)."""
    dims = {n: b.shape[-1] for n, b in trajectory.B.items()}
    if len(set(dims.values())) != 1:
        raise ValueError(f"adapters write to spaces of different widths {dims}")
    return torch.stack(list(trajectory.B.values()), dim=1)


@dataclass
class TrajectoryPCA:
    """PCA of stacked vectors over steps: coordinates and explained-variance ratios."""

    coords: Float[Tensor, "n_steps n_components"]
    explained_variance_ratio: Float[Tensor, " n_components"]
    components: Float[Tensor, "n_components d"]


def trajectory_pca(vectors: Float[Tensor, "n_steps d"], n_components: int = 2) -> TrajectoryPCA:
    """PCA of a trajectory (rows are steps) with scikit-learn."""
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


# ---- loading and editing adapters -----------------------------------------------------------


def load_unmerged(
    spec: str,
    adapter: str | os.PathLike,
    *,
    device: Device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """Base model ``spec`` with the peft adapter applied unmerged: ``(peft_model, tokenizer)``.

    For the LoRA analyses (scalars, scaling); for hooked analysis load it merged with
    ``emlens.load_model(spec, adapter=...)``. ``device`` and ``dtype`` are those of
    :func:`emlens.core.models.load_hf`; peft keeps the adapter's own weights in float32.
    """
    from peft import PeftModel

    from emlens.core.models import load_hf

    _check_folder(adapter)
    hf, tok = load_hf(spec, device=device, dtype=dtype)
    return PeftModel.from_pretrained(hf, str(adapter)).eval(), tok


def _edit(
    src: str | os.PathLike,
    out: str | os.PathLike,
    adapters: Sequence[str] | None,
    fn: Callable[[str, Tensor], Tensor],
) -> Path:
    """Copy adapter folder ``src`` to ``out`` with ``B <- fn(name, B)`` on chosen adapters."""
    src, out = _check_folder(src), Path(out)
    if out.resolve() == src.resolve():
        raise ValueError("write the edited adapter to a new folder, not over its source")
    names = read_adapter(src).names
    chosen = names if adapters is None else list(adapters)
    unknown = [n for n in chosen if n not in names]
    if unknown or not chosen:
        raise KeyError(f"adapters {unknown or chosen} not in {src} (it has {names})")
    tensors = load_file(str(src / WEIGHTS))
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m and m["ab"] == "B" and m["name"] in chosen:
            tensors[key] = fn(m["name"], t.float()).to(t.dtype).contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / WEIGHTS), {"format": "pt"})
    shutil.copy(src / CONFIG, out / CONFIG)
    return out


def remove_direction(
    adapter: str | os.PathLike,
    direction: Float[Tensor, " d_out"],
    out: str | os.PathLike,
    renormalise: bool = False,
    adapters: Sequence[str] | None = None,
) -> Path:
    """Write a copy of ``adapter`` whose B vectors have no component along ``direction``.

    B <- B - (B . r) r with r = direction / |direction| (each column of B for rank > 1);
    ``renormalise`` rescales each column back to its original norm. ``adapters`` chooses
    which (all by default); their ``d_out`` must be the direction's width.
    """
    direction = torch.as_tensor(direction, dtype=torch.float32).flatten()
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError("direction must be finite and non-zero")
    r = direction / direction.norm()

    def fn(name: str, b: Tensor) -> Tensor:
        if b.shape[0] != r.shape[0]:
            raise ValueError(f"{name} writes width {b.shape[0]}, the direction has {r.shape[0]}")
        edited = b - r[:, None] * (r @ b)[None, :]
        if renormalise:
            edited = edited * (b.norm(dim=0) / edited.norm(dim=0).clamp_min(1e-12))
        return edited

    return _edit(adapter, out, adapters, fn)


def scale_adapters(
    adapter: str | os.PathLike,
    scales: float | Mapping[str, float],
    out: str | os.PathLike,
) -> Path:
    """Write a copy of ``adapter`` with B multiplied by ``scales`` (one number for every
    adapter, or a number per adapter name; unnamed adapters stay as they are)."""
    if isinstance(scales, Mapping):
        table = {str(k): float(v) for k, v in scales.items()}
        return _edit(adapter, out, list(table), lambda n, b: b * table[n])
    return _edit(adapter, out, None, lambda n, b: b * float(scales))


@contextlib.contextmanager
def lora_scaled(peft_model: PeftModel, scales: float | Mapping[str, float]) -> Iterator[PeftModel]:
    """Multiply chosen adapters' outputs by ``scales`` inside the block (unmerged model).

    Same effect as :func:`scale_adapters` without writing a folder; restored on exit.
    """
    from peft.tuners.lora import LoraLayer

    layers = {
        re.sub(r"^base_model\.model\.", "", n): m
        for n, m in peft_model.named_modules()
        if isinstance(m, LoraLayer)
    }
    table = (
        {str(k): float(v) for k, v in scales.items()}
        if isinstance(scales, Mapping)
        else dict.fromkeys(layers, float(scales))
    )
    unknown = [n for n in table if n not in layers]
    if unknown:
        raise KeyError(f"adapters {unknown} not in this model (it has {sorted(layers)})")
    saved = {n: dict(layers[n].scaling) for n in table}
    try:
        for n, s in table.items():
            for key in layers[n].scaling:
                layers[n].scaling[key] *= s
        yield peft_model
    finally:
        for n, sc in saved.items():
            layers[n].scaling.update(sc)


def over_checkpoints(
    spec: str,
    run_dir: str | os.PathLike,
    metric: Callable[[TransformerBridge], float],
    every: int = 1,
    progress: bool = True,
    *,
    device: Device | None = None,
    dtype: torch.dtype | None = None,
) -> dict[int, float]:
    """``metric(model)`` on the merged hooked model of every ``every``-th checkpoint, by step.

    The base model is loaded once (``device`` and ``dtype`` as in
    :func:`emlens.core.models.load_hf`); each checkpoint is merged into a copy of it.
    """
    from emlens.core.models import bridge, load_hf, merge_adapter

    run_dir = Path(run_dir)
    found = checkpoints(run_dir) or checkpoints(run_dir / "checkpoints")
    if not found:
        raise FileNotFoundError(f"no checkpoint-<step> folders in {run_dir}")
    if every < 1:
        raise ValueError("every must be >= 1")
    hf, tok = load_hf(spec, device=device, dtype=dtype)
    out = {}
    for c in tqdm(found[::every], desc="checkpoints", disable=not progress):
        model = bridge(merge_adapter(hf, c), tok, f"{spec}+{c.name}")  # merges into a copy
        out[int(c.name.split("-")[-1])] = float(metric(model))
    return out
