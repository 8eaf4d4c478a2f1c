"""Which components write a direction: per-head and per-MLP projections, overlap, ablation.

For a unit direction r, a component c (an attention head or an MLP layer) writes
proj_c = mean over masked tokens of out_c . r, with a head's output its slice of ``hook_z``
through its rows of the output projection. The score of c for a contrast (e.g. misaligned
vs aligned answers) is proj_c(positive) - proj_c(negative): how much c writes the
difference along r. Ablating components replaces their outputs by their mean over a
reference set (mean ablation), so the test asks what the direction loses without them.
Projections are computed in float64 on each layer's device; sums and results are on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from einops import einsum
from jaxtyping import Float
from scipy.stats import spearmanr
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core._arch import head_out_weights
from emlens.core.activations import check_layers
from emlens.core.forward import HookFn, hooked_passes
from emlens.core.tokens import Row


@dataclass(frozen=True)
class Component:
    """An attention head (``head`` its index) or the MLP (``head=None``) of one layer."""

    layer: int
    head: int | None  # None: the MLP

    def __str__(self) -> str:
        return f"L{self.layer}{'MLP' if self.head is None else f'H{self.head}'}"

    @property
    def hook(self) -> str:
        """The hook whose output is this component's: ``attn.hook_z`` or ``hook_mlp_out``."""
        where = "hook_mlp_out" if self.head is None else "attn.hook_z"
        return f"blocks.{self.layer}.{where}"


def components(model: TransformerBridge, layers: Sequence[int] | None = None) -> list[Component]:
    """Every head and MLP of ``layers`` (all by default), heads first within a layer."""
    out = []
    for ly in check_layers(model, layers):
        out += [Component(ly, h) for h in range(model.cfg.n_heads)] + [Component(ly, None)]
    return out


def _check_direction(model: TransformerBridge, direction: Tensor) -> Float[Tensor, " d_model"]:
    """``direction`` scaled to unit norm, in float64."""
    if direction.shape != (model.cfg.d_model,) or direction.norm() == 0:
        raise ValueError(f"direction must be a non-zero vector of size {model.cfg.d_model}")
    return torch.div(direction, direction.norm()).double()


@torch.no_grad()
def component_outputs(
    model: TransformerBridge,
    rows: Sequence[Row],
    direction: Float[Tensor, " d_model"],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> Float[Tensor, " n_components"]:
    """Mean over masked tokens of each component's output projected on unit ``direction``
    (order of ``components``)."""
    if not rows:
        raise ValueError("no samples")
    r = _check_direction(model, direction)
    layers = check_layers(model, layers)
    n_h = model.cfg.n_heads
    totals = torch.zeros(len(layers), n_h + 1, dtype=torch.float64)
    mask = torch.zeros(0, 0, dtype=torch.float64)  # the current batch's, set below

    def z_hook(j: int, heads_r: Float[Tensor, "n_heads d_head"]) -> HookFn:
        def fn(z: Float[Tensor, "batch pos n_heads d_head"], **_: object) -> None:
            per_head = einsum(
                z.double(),
                heads_r.to(z.device),
                "batch pos head d_head, head d_head -> batch pos head",
            )
            totals[j, :n_h] += einsum(per_head, mask.to(z.device), "b p head, b p -> head").cpu()

        return fn

    def mlp_hook(j: int) -> HookFn:
        def fn(out: Float[Tensor, "batch pos d_model"], **_: object) -> None:
            proj = out.double() @ r.to(out.device)
            totals[j, n_h] += (proj * mask.to(out.device)).sum().cpu()

        return fn

    hooks: list[tuple[str, HookFn]] = []
    for j, ly in enumerate(layers):
        w_o = head_out_weights(model, ly)  # each head's rows of W_O, on its device
        hooks += [
            (f"blocks.{ly}.attn.hook_z", z_hook(j, w_o.double() @ r.to(w_o.device))),
            (f"blocks.{ly}.hook_mlp_out", mlp_hook(j)),
        ]
    stop = max(layers) + 1
    n_tokens = 0
    stop_at = stop if stop < model.cfg.n_layers else None
    for batch in hooked_passes(model, rows, hooks, batch_size, stop_at_layer=stop_at):
        mask = batch.mask.double()
        n_tokens += int(batch.mask.sum())
    return (totals / n_tokens).flatten().float()


def component_scores(
    model: TransformerBridge,
    positive: Sequence[Row],
    negative: Sequence[Row],
    direction: Float[Tensor, " d_model"],
    layers: Sequence[int] | None = None,
) -> Float[Tensor, " n_components"]:
    """How much each component writes the positive-minus-negative difference along r."""
    pos = component_outputs(model, positive, direction, layers)
    return pos - component_outputs(model, negative, direction, layers)


def top_components(comps: Sequence[Component], scores: Tensor, k: int) -> list[Component]:
    """The ``k`` components with the largest scores (writers of the positive side)."""
    return [comps[i] for i in scores.topk(k).indices.tolist()]


@dataclass
class Overlap:
    """How much two score vectors agree on which components matter."""

    jaccard: float  # of the two top-k sets
    shared: list[Component]
    spearman: float  # rank correlation of all scores
    k: int


def overlap(comps: Sequence[Component], a: Tensor, b: Tensor, k: int) -> Overlap:
    """Overlap of the components that write two directions."""
    ta, tb = set(top_components(comps, a, k)), set(top_components(comps, b, k))
    rho = float(spearmanr(a.numpy(), b.numpy()).statistic)
    shared = sorted(ta & tb, key=lambda c: (c.layer, c.head if c.head is not None else 1e9))
    return Overlap(len(ta & tb) / len(ta | tb), shared, rho, k)


@torch.no_grad()
def component_means(
    model: TransformerBridge, rows: Sequence[Row], comps: Sequence[Component], batch_size: int = 8
) -> dict[Component, Tensor]:
    """Mean output of each component over all real tokens of ``rows`` (for mean ablation):
    ``hook_z`` slices for heads, ``hook_mlp_out`` for MLPs."""
    sums = {c: torch.zeros((), dtype=torch.float64) for c in comps}
    real = torch.zeros(0, 0, dtype=torch.float64)  # the current batch's real tokens, set below

    def hook(c: Component) -> HookFn:
        def fn(x: Tensor, **_: object) -> None:
            x = x[:, :, c.head] if c.head is not None else x
            s = einsum(x.double(), real.to(x.device), "batch pos ..., batch pos -> ...")
            sums[c] = sums[c] + s.cpu()

        return fn

    n = 0
    last = max((c.layer for c in comps), default=-1) + 1  # the pass stops before this block
    stop = last if last < model.cfg.n_layers else None
    hooks = [(c.hook, hook(c)) for c in comps]
    for batch in hooked_passes(model, rows, hooks, batch_size, stop_at_layer=stop):
        real = batch.attention_mask.double()
        n += int(batch.attention_mask.sum())
    return {c: (s / n).float() for c, s in sums.items()}


@contextlib.contextmanager
def mean_ablated(
    model: TransformerBridge, means: dict[Component, Tensor]
) -> Iterator[TransformerBridge]:
    """Replace the outputs of the given components by their means; hooks removed on exit."""
    by_hook: dict[str, list[Component]] = {}
    for c in means:
        by_hook.setdefault(c.hook, []).append(c)

    def make(cs: list[Component]) -> HookFn:
        def fn(x: Tensor, **_: object) -> Tensor:
            x = x.clone()
            for c in cs:
                if c.head is None:
                    x[:] = means[c].to(x.device, x.dtype)
                else:
                    x[:, :, c.head] = means[c].to(x.device, x.dtype)
            return x

        return fn

    with model.hooks(fwd_hooks=[(n, make(cs)) for n, cs in by_hook.items()]):
        yield model
