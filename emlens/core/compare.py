"""Compare direction sets: per-layer cosine, layer x layer cosines, and a random null."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from emlens.core.direction_set import DirectionSet


def _unit(v: Tensor) -> Tensor:
    return torch.div(v, v.norm(dim=-1, keepdim=True))


def cosine_per_layer(a: DirectionSet, b: DirectionSet) -> Float[Tensor, " n_layers"]:
    """cos(a[l], b[l]) for each layer the two sets share, in ``a``'s layer order.

    Args:
        a: A direction set.
        b: A direction set of the same width; only the layers it shares with ``a`` count.

    Returns:
        One cosine per shared layer (a zero vector at a shared layer is an error).

    Examples:
        >>> from emlens.core.direction_set import DirectionSet
        >>> a = DirectionSet(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), layers=[12, 15])
        >>> b = DirectionSet(torch.tensor([[0.0, 2.0], [3.0, 3.0]]), layers=[12, 15])
        >>> cosine_per_layer(a, b).round(decimals=4)
        tensor([0., 1.])

        The EM direction against the refusal direction (compare with
        ``random_null(em_dir.d_model)``):

        >>> from emlens.core.data import harmful_instructions, harmless_instructions
        >>> from emlens.core.directions import refusal_direction
        >>> harmful, harmless = harmful_instructions()[:4], harmless_instructions()[:4]
        >>> refusal = refusal_direction(model, harmful, harmless, progress=False)
        >>> cosine_per_layer(em_dir, refusal).shape  # one cosine per layer
        torch.Size([30])
    """
    if a.d_model != b.d_model:
        raise ValueError(f"cannot compare d_model {a.d_model} with {b.d_model}")
    shared = [layer for layer in a.layers if layer in b.layers]
    if not shared:
        raise ValueError(f"no shared layers: {a.layers} vs {b.layers}")
    a.check_nonzero(shared, "a cosine")
    b.check_nonzero(shared, "a cosine")
    va = torch.stack([a.at(layer) for layer in shared])
    vb = torch.stack([b.at(layer) for layer in shared])
    return (_unit(va) * _unit(vb)).sum(-1)


def cosine_matrix(a: DirectionSet, b: DirectionSet) -> Float[Tensor, "layers_a layers_b"]:
    """cos(a[i], b[j]) for every pair of layers (no vector may be zero)."""
    if a.d_model != b.d_model:
        raise ValueError(f"cannot compare d_model {a.d_model} with {b.d_model}")
    a.check_nonzero(use="a cosine")
    b.check_nonzero(use="a cosine")
    return _unit(a.vectors) @ _unit(b.vectors).T


@dataclass
class RandomNull:
    """|cos| between a fixed vector and norm-matched isotropic random vectors in d_model dims."""

    d_model: int
    mean_abs: float
    q95_abs: float
    n: int


def random_null(d_model: int, n: int = 10_000, seed: int = 0) -> RandomNull:
    """The chance level of |cos| in ``d_model`` dimensions (cosine ignores norm, so matching
    norms changes nothing here; see ``random_like`` for norm-matched controls)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_model, generator=g, dtype=torch.float64)
    y = torch.randn(n, d_model, generator=g, dtype=torch.float64)
    c = (_unit(x) * _unit(y)).sum(-1).abs()
    return RandomNull(d_model, float(c.mean()), float(c.quantile(0.95)), n)


def random_like(ds: DirectionSet, seed: int = 0) -> DirectionSet:
    """Random directions with the same norm per layer: the control for steering/ablation."""
    g = torch.Generator().manual_seed(seed)
    r = _unit(torch.randn(ds.vectors.shape, generator=g)) * ds.vectors.norm(dim=-1, keepdim=True)
    return DirectionSet(r, ds.layers, ds.hook, {**ds.provenance, "kind": "random", "seed": seed})


def shuffled_label_cosines(
    samples: Float[Tensor, "n n_layers d_model"],
    tokens: Float[Tensor, " n"],
    n_positive: int,
    reference: Float[Tensor, "n_layers d_model"],
    n_shuffles: int = 200,
    seed: int = 0,
) -> Float[Tensor, "n_shuffles n_layers"]:
    """The shuffled-label null of a mean-difference direction, all shuffles at once.

    Each shuffle relabels the ``n`` samples at random (``n_positive`` of them positive) and
    takes the token-weighted mean of the positives minus that of the negatives, as
    `mean_diff` does with the true labels; the result is its cosine with ``reference`` per
    layer. One matrix product per layer replaces a forward pass per shuffle.

    Args:
        samples: each sample's mean activation over its masked tokens
            (``collect_means(..., per_sample=True).per_sample``).
        tokens: each sample's number of masked tokens (the weights of its mean).
        n_positive: how many samples each shuffle labels positive.
        reference: the direction compared with, one vector per layer.
        n_shuffles: how many relabellings.
        seed: seed of the relabellings.

    Returns:
        ``[n_shuffles, n_layers]`` cosines; their 95% quantile of ``abs`` is the chance level.

    Examples:
        >>> x = torch.tensor([[[1.0, 0.0]], [[-1.0, 0.0]]])
        >>> shuffled_label_cosines(x, torch.ones(2), 1, torch.tensor([[1.0, 0.0]]), 4).abs()
        tensor([[1.],
                [1.],
                [1.],
                [1.]], dtype=torch.float64)
    """
    n = samples.shape[0]
    if not 0 < n_positive < n or tokens.shape != (n,) or reference.shape != samples.shape[1:]:
        raise ValueError(
            f"need 0 < n_positive < n, one token count per sample and a reference "
            f"[n_layers, d_model]; got n_positive={n_positive}, {n} samples, tokens "
            f"{tuple(tokens.shape)}, reference {tuple(reference.shape)}"
        )
    g = torch.Generator().manual_seed(seed)
    order = torch.rand(n_shuffles, n, generator=g).argsort(1)
    positive = torch.zeros(n_shuffles, n, dtype=torch.bool).scatter_(1, order[:, :n_positive], True)
    w = tokens.double()[None].expand(n_shuffles, n)
    wp, wn = w * positive, w * ~positive
    weights = wp / wp.sum(1, keepdim=True) - wn / wn.sum(1, keepdim=True)  # [S, n]
    diffs = torch.einsum("sn,nld->sld", weights, samples.double())
    return (_unit(diffs) * _unit(reference.double())[None]).sum(-1)
