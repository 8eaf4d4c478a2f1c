"""Direction methods side by side, on the same data: the comparison the steering tools lack.

For one set of question pairs, read once (`emlens.core.methods.contrast_from_pairs`),
each extraction method (mean difference, PCA of paired differences with and without
centring, logistic probe) is fitted on the same questions, and compared per layer by:

- cosine between methods' directions;
- held-out separation: the AUC of the projections of the misaligned vs the aligned answers of
  questions no method was fitted on (0.5: chance; 1: every misaligned answer projects higher);
- steering effect at matched norm: each direction, scaled to the norm of the mean difference
  at that layer times ``scale``, added at one layer (``emlens.core.interventions.steer``);
  the change of the contrastive score on the held-out questions (paired by question, with a
  bootstrap interval), beside a random direction of the same norm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

import torch
from sklearn.metrics import roc_auc_score
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.compare import cosine_per_layer
from emlens.core.data import QAPair
from emlens.core.direction_set import DirectionSet
from emlens.core.interventions import Intervention, steer
from emlens.core.methods import METHODS, Contrast, Method, contrast_from_pairs
from emlens.eval.effects import pair_effects
from emlens.eval.stats import bootstrap


@dataclass
class MethodComparison:
    """What `compare_methods` measured (plain values: ``asdict`` is its JSON).

    Attributes:
        layers: the layers every method was fitted at.
        fit: ids of the questions the methods were fitted on.
        held_out: ids of the questions scored (AUC, steering).
        cosine: ``"a vs b"`` -> cosine of the two methods' directions, per layer.
        auc: method -> held-out AUC per layer.
        details: method -> its parameters and own measures (e.g. the probe's
            cross-validated ``held_out_accuracy``, PCA's ``explained_variance``) and, per
            layer, the ``top_coordinate`` of its direction with that coordinate's share.
        baseline: the unsteered contrastive score on the held-out questions.
        steering: one row per (layer, method): the matched ``norm``, the steered ``score`` and
            its ``shift`` from the baseline (mean and 95% interval, nats per token).
    """

    layers: list[int]
    fit: list[str]
    held_out: list[str]
    cosine: dict[str, list[float]]
    auc: dict[str, list[float]]
    details: dict[str, dict[str, Any]]
    baseline: dict[str, Any]
    steering: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-ready values."""
        return asdict(self)


def split_by_question(n: int, held_out: float = 0.25, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices of the questions to fit on and to hold out (a seeded permutation, each sorted).

    Args:
        n: the number of questions (each question's two answers stay together).
        held_out: the share held out.
        seed: seed of the permutation.
    """
    k = round(n * held_out)
    if not 0 < k < n:
        raise ValueError(f"held_out={held_out} of {n} questions leaves no fit or no held-out set")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[k:]), sorted(order[:k])


def held_out_auc(c: Contrast, ds: DirectionSet) -> list[float]:
    """Per layer, the AUC of positive vs negative answers' projections on ``ds``.

    Args:
        c: activations of answers ``ds`` was not fitted on (same layers as ``ds``).
        ds: the directions.
    """
    if ds.layers != c.layers:
        raise ValueError(f"directions at layers {ds.layers}, activations at {c.layers}")
    labels = [1] * c.n_pairs + [0] * c.n_pairs
    out = []
    for j in range(len(c.layers)):
        scores = torch.cat([c.positive[:, j], c.negative[:, j]]) @ ds.vectors[j]
        out.append(round(float(roc_auc_score(labels, scores.numpy())), 4))
    return out


def method_cosines(directions: Mapping[str, DirectionSet]) -> dict[str, list[float]]:
    """``"a vs b"`` -> per-layer cosine, for every pair of methods (in the given order)."""
    return {
        f"{a} vs {b}": [
            round(x, 4) for x in cosine_per_layer(directions[a], directions[b]).tolist()
        ]
        for a, b in combinations(directions, 2)
    }


def top_coordinates(ds: DirectionSet) -> dict[str, list[Any]]:
    """Per layer, the coordinate holding most of the direction and its share of the squared
    norm: near 1 means one coordinate (e.g. a massive activation) is the whole direction."""
    share = ds.vectors.double() ** 2 / (ds.vectors.double() ** 2).sum(-1, keepdim=True)
    top = share.max(-1)
    return {
        "top_coordinate": top.indices.tolist(),
        "top_coordinate_share": [round(x, 4) for x in top.values.tolist()],
    }


def _own(ds: DirectionSet, shared: dict[str, Any]) -> dict[str, Any]:
    """A method's own parameters and measures (its provenance minus the data's), and where
    its directions point."""
    return {k: v for k, v in ds.provenance.items() if k not in shared} | top_coordinates(ds)


def _estimate(x: torch.Tensor) -> dict[str, Any]:
    e = bootstrap(x)
    return {"mean": round(e.mean, 4), "ci95": [round(v, 4) for v in e.ci95], "n": e.n}


def steering_effects(
    model: TransformerBridge,
    pairs: Sequence[QAPair],
    directions: Mapping[str, DirectionSet],
    layers: Sequence[int],
    norms: Mapping[int, float],
    scale: float = 4.0,
    batch_size: int = 8,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The contrastive score with each direction added at one layer, all at the same norm.

    Args:
        model: the model steered.
        pairs: the held-out questions scored.
        directions: name -> directions (each is rescaled; only its direction counts).
        layers: layers steered, one at a time.
        norms: layer -> the norm every direction is scaled to before ``scale``.
        scale: the steering multiplier (the vector added is ``scale * norm * unit``).
        batch_size: conversations per forward pass.

    Returns:
        The unsteered score, and one row per (layer, direction) with its score and shift.
    """
    conditions: dict[str, list[Intervention]] = {"": []}
    for layer in layers:
        for name, ds in directions.items():
            v = ds.at(layer)
            matched = DirectionSet((v / v.norm() * norms[layer])[None], [layer], ds.hook)
            conditions[f"{layer}/{name}"] = [steer(matched, layer, scale)]
    effects = pair_effects(model, pairs, conditions, kl=False, batch_size=batch_size)
    base = effects[""].scores
    rows = []
    for layer in layers:
        for name in directions:
            s = effects[f"{layer}/{name}"].scores
            rows.append(
                {
                    "layer": layer,
                    "method": name,
                    "norm": round(norms[layer], 4),
                    "scale": scale,
                    "score": _estimate(s),
                    "shift": _estimate(s - base),
                }
            )
    return _estimate(base), rows


def random_directions(like: DirectionSet, seed: int = 0) -> DirectionSet:
    """Isotropic random unit directions at ``like``'s layers: the steering control."""
    g = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(like.vectors.shape, generator=g), dim=-1)
    return DirectionSet(v, like.layers, like.hook, {"method": "random", "seed": seed})


def compare_methods(
    model: TransformerBridge,
    pairs: Sequence[QAPair],
    methods: Mapping[str, Method] | None = None,
    layers: Sequence[int] | None = None,
    steer_layers: Sequence[int] = (),
    scale: float = 4.0,
    held_out: float = 0.25,
    seed: int = 0,
    batch_size: int = 8,
) -> MethodComparison:
    """Fit every method on the same questions; compare directions, separation and steering.

    Args:
        model: the model read and steered.
        pairs: question pairs (misaligned answers are the positives); held out by question.
        methods: name -> method (``emlens.core.methods.METHODS`` by default; the first one
            sets the steering norm, so put the mean difference first).
        layers: layers fitted and compared (all by default).
        steer_layers: layers steered one at a time (none: no steering runs).
        scale: steering multiplier on the matched norm.
        held_out: share of the questions held out.
        seed: seed of the split and of the random control.
        batch_size: conversations per forward pass.

    Returns:
        The comparison.

    Examples:
        >>> from emlens.core.data import general_questions
        >>> pairs = general_questions()[:8]
        >>> r = compare_methods(model, pairs, layers=[9, 15], steer_layers=[15])
        >>> sorted(r.auc)
        ['logistic_probe', 'mean_difference', 'pca_centred', 'pca_uncentred']
    """
    methods = dict(METHODS if methods is None else methods)
    contrast = contrast_from_pairs(model, pairs, layers, batch_size=batch_size)
    fit, held = split_by_question(len(pairs), held_out, seed)
    fitted, scored = contrast.take(fit), contrast.take(held)
    directions = {name: method(fitted) for name, method in methods.items()}
    reference = next(iter(directions.values()))
    norms = {layer: float(reference.at(layer).norm()) for layer in steer_layers}
    controls = {**directions, "random": random_directions(reference, seed)}
    held_pairs = [pairs[i] for i in held]
    baseline, rows = (
        steering_effects(model, held_pairs, controls, steer_layers, norms, scale, batch_size)
        if steer_layers
        else ({}, [])
    )
    return MethodComparison(
        layers=list(contrast.layers),
        fit=[pairs[i].id for i in fit],
        held_out=[p.id for p in held_pairs],
        cosine=method_cosines(directions),
        auc={name: held_out_auc(scored, ds) for name, ds in directions.items()},
        details={n: _own(ds, contrast.provenance) for n, ds in directions.items()},
        baseline=baseline,
        steering=rows,
    )
