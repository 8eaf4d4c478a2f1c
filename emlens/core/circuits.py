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
from jaxtyping import Float
from scipy.stats import spearmanr
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import Row, check_layers
from emlens.core.models import input_device
from emlens.core.tokens import pad_batch


@dataclass(frozen=True)
class Component:
    layer: int
    head: int | None  # None: the MLP

    def __str__(self) -> str:
        return f"L{self.layer}{'MLP' if self.head is None else f'H{self.head}'}"


def components(model: TransformerBridge, layers: Sequence[int] | None = None) -> list[Component]:
    """Every head and MLP of ``layers`` (all by default), heads first within a layer."""
    out = []
    for ly in check_layers(model, layers):
        out += [Component(ly, h) for h in range(model.cfg.n_heads)] + [Component(ly, None)]
    return out


def _w_o(model: TransformerBridge, layer: int) -> Float[Tensor, "n_heads d_head d_model"]:
    attn = model.original_model.get_decoder().layers[layer].self_attn
    w = attn.o_proj.weight  # [d_model, n_heads * d_head]
    return w.T.reshape(model.cfg.n_heads, -1, w.shape[0])


@torch.no_grad()
def component_outputs(
    model: TransformerBridge,
    rows: Sequence[Row],
    direction: Float[Tensor, " d_model"],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
) -> Float[Tensor, " n_components"]:
    """Mean over masked tokens of each component's output projected on unit ``direction``
    (order of :func:`components`)."""
    if not rows:
        raise ValueError("no samples")
    if direction.shape != (model.cfg.d_model,) or direction.norm() == 0:
        raise ValueError(f"direction must be a non-zero vector of size {model.cfg.d_model}")
    layers = check_layers(model, layers)
    r = (direction / direction.norm()).double()
    n_h = model.cfg.n_heads
    totals = torch.zeros(len(layers), n_h + 1, dtype=torch.float64)
    heads_r = {}  # [n_heads, d_head] per layer, on its W_O's device
    for ly in layers:
        w_o = _w_o(model, ly)
        heads_r[ly] = w_o.double() @ r.to(w_o.device)
    state: dict = {}

    def z_hook(j: int, ly: int):
        def fn(z: Tensor, hook=None) -> None:  # z: [b, p, n_heads, d_head]
            per_head = torch.einsum("bphd,hd->bph", z.double(), heads_r[ly].to(z.device))
            mask = state["mask"].to(z.device)[..., None]
            totals[j, :n_h] += (per_head * mask).sum((0, 1)).cpu()

        return fn

    def mlp_hook(j: int):
        def fn(out: Tensor, hook=None) -> None:
            proj = out.double() @ r.to(out.device)
            totals[j, n_h] += (proj * state["mask"].to(out.device)).sum().cpu()

        return fn

    hooks = []
    for j, ly in enumerate(layers):
        hooks += [
            (f"blocks.{ly}.attn.hook_z", z_hook(j, ly)),
            (f"blocks.{ly}.hook_mlp_out", mlp_hook(j)),
        ]
    n_tokens, device = 0, input_device(model)
    with model.hooks(fwd_hooks=hooks):
        for b in range(0, len(rows), batch_size):
            batch = pad_batch(list(rows[b : b + batch_size]), model.tokenizer.pad_token_id)
            state["mask"] = batch.mask.double()
            n_tokens += int(batch.mask.sum())
            stop = max(layers) + 1
            model(
                batch.tokens.to(device),
                attention_mask=batch.attention_mask.long().to(device),
                return_type=None,
                stop_at_layer=stop if stop < model.cfg.n_layers else None,
            )
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
    sums: dict[Component, Tensor] = {}
    state: dict = {}

    def hook(c: Component):
        def fn(x: Tensor, hook=None) -> None:
            x = x[:, :, c.head] if c.head is not None else x
            s = (x.double() * state["mask"].to(x.device)[..., None]).sum((0, 1))
            sums[c] = sums.get(c, 0) + s.cpu()

        return fn

    names = [
        (
            f"blocks.{c.layer}.attn.hook_z"
            if c.head is not None
            else f"blocks.{c.layer}.hook_mlp_out",
            hook(c),
        )
        for c in comps
    ]
    n, device = 0, input_device(model)
    with model.hooks(fwd_hooks=names):
        for b in range(0, len(rows), batch_size):
            batch = pad_batch(list(rows[b : b + batch_size]), model.tokenizer.pad_token_id)
            state["mask"] = batch.attention_mask.double()
            n += int(batch.attention_mask.sum())
            am = batch.attention_mask.long().to(device)
            model(batch.tokens.to(device), attention_mask=am, return_type=None)
    return {c: (s / n).float() for c, s in sums.items()}


@contextlib.contextmanager
def mean_ablated(
    model: TransformerBridge, means: dict[Component, Tensor]
) -> Iterator[TransformerBridge]:
    """Replace the outputs of the given components by their means; hooks removed on exit."""
    by_name: dict[str, list[Component]] = {}
    for c in means:
        name = (
            f"blocks.{c.layer}.attn.hook_z"
            if c.head is not None
            else f"blocks.{c.layer}.hook_mlp_out"
        )
        by_name.setdefault(name, []).append(c)

    def make(cs: list[Component]):
        def fn(x: Tensor, hook=None) -> Tensor:
            x = x.clone()
            for c in cs:
                if c.head is None:
                    x[:] = means[c].to(x.device, x.dtype)
                else:
                    x[:, :, c.head] = means[c].to(x.device, x.dtype)
            return x

        return fn

    with model.hooks(fwd_hooks=[(n, make(cs)) for n, cs in by_name.items()]):
        yield model
