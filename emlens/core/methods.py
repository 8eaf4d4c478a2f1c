"""Direction-extraction methods, all on the same cached per-sample activations.

One pass over the model (`contrast_from_pairs`) caches, for every question, the mean
activation over the answer tokens of its misaligned answer and of its aligned answer, per
layer: a `Contrast` (``[n_pairs, n_layers, d_model]`` twice; memory grows with the
number of answers, never with their length). Each method reads that cache and returns a
``DirectionSet`` whose provenance names the method and its parameters:

- `mean_difference`: mean(positive) - mean(negative) per layer (Convergent Linear
  Representations of EM, arXiv 2506.11618; contrastive activation addition), each answer
  weighted by its tokens (the paper's token-weighted mean, as ``em_direction``) or equally;
- `pca_of_differences`: the first principal component of the paired differences
  ``positive[i] - negative[i]`` (repeng's ``pca_diff``, centred, as scikit-learn's PCA
  centres), or of the differences uncentred (repeng's ``pca_center`` and steering-vectors'
  ``pca_aggregator``, which centre each pair on its midpoint); unit norm, its sign chosen so
  that positives project higher than their negatives on most pairs (repeng's rule);
- `logistic_probe`: the weight vector of an L2-regularised logistic regression of
  positive vs negative answers (steering-vectors' ``logistic_aggregator``), unit norm, with
  its own cross-validated accuracy on answers of questions it was not fitted on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.model_selection import GroupKFold, cross_val_score
from threadpoolctl import threadpool_limits
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import RESID_POST, ActivationSummary, collect_means
from emlens.core.data import QAPair, dataset_hash
from emlens.core.direction_set import DirectionSet
from emlens.core.directions import mean_diff
from emlens.core.logistic import logistic_regression
from emlens.core.models import model_name
from emlens.core.tokens import answer_tokens


@dataclass(frozen=True)
class Contrast:
    """Paired per-sample activations: ``positive[i]`` and ``negative[i]`` answer question i.

    Each row is one answer's mean activation over its masked tokens at each of ``layers``;
    ``tokens_*`` count those tokens (for the token-weighted mean difference).

    Examples:
        >>> from emlens.core.data import general_questions
        >>> c = contrast_from_pairs(model, general_questions()[:8], layers=[3, 6])
        >>> c.positive.shape  # [n_pairs, n_layers, d_model], misaligned answers
        torch.Size([8, 2, ...])
    """

    positive: Float[Tensor, "n_pairs n_layers d_model"]
    negative: Float[Tensor, "n_pairs n_layers d_model"]
    layers: list[int]
    hook: str = RESID_POST
    tokens_positive: Int[Tensor, " n_pairs"] | None = None
    tokens_negative: Int[Tensor, " n_pairs"] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        p, n = self.positive, self.negative
        if p.ndim != 3 or p.shape != n.shape or p.shape[1] != len(self.layers):
            raise ValueError(
                "positive and negative must both be [n_pairs, n_layers, d_model] with one "
                f"layer per entry of layers={self.layers}; got {tuple(p.shape)} and "
                f"{tuple(n.shape)}"
            )
        for name in ("tokens_positive", "tokens_negative"):
            t = getattr(self, name)
            if t is not None and (t.shape != (p.shape[0],) or bool((t <= 0).any())):
                raise ValueError(f"{name} must hold one positive count per pair ({p.shape[0]})")

    @property
    def n_pairs(self) -> int:
        """The number of (positive, negative) pairs."""
        return int(self.positive.shape[0])

    def take(self, index: Sequence[int]) -> Contrast:
        """The contrast of the pairs at ``index`` (e.g. the questions a method is fitted on)."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        if idx.numel() == 0:
            raise ValueError("take() needs at least one pair index")
        tp, tn = self.tokens_positive, self.tokens_negative
        return Contrast(
            self.positive[idx],
            self.negative[idx],
            self.layers,
            self.hook,
            None if tp is None else tp[idx],
            None if tn is None else tn[idx],
            dict(self.provenance, n_pairs=len(idx)),
        )

    @classmethod
    def from_summaries(
        cls,
        positive: ActivationSummary,
        negative: ActivationSummary,
        provenance: dict[str, Any] | None = None,
    ) -> Contrast:
        """A contrast from two summaries collected with ``per_sample=True``, row i paired."""
        if positive.per_sample is None or negative.per_sample is None:
            raise ValueError("both summaries need per-sample means: collect_means(per_sample=True)")
        if (positive.hook, positive.layers) != (negative.hook, negative.layers):
            raise ValueError("the two summaries must share hook and layers")
        return cls(
            positive.per_sample,
            negative.per_sample,
            positive.layers,
            positive.hook,
            provenance=dict(provenance or {}),
        )


Method = Callable[[Contrast], DirectionSet]


def contrast_from_pairs(
    model: TransformerBridge,
    pairs: Sequence[QAPair],
    layers: Sequence[int] | None = None,
    hook: str = RESID_POST,
    batch_size: int = 8,
    progress: bool = False,
) -> Contrast:
    """Answer-token means of each pair's misaligned (positive) and aligned answer, one pass.

    Args:
        model: the model read.
        pairs: questions with an aligned and a misaligned answer.
        layers: layers to read (all by default).
        hook: hook template with a ``{layer}`` placeholder.
        batch_size: conversations per forward pass.
        progress: show a progress bar.

    Returns:
        The contrast (misaligned answers positive), with token counts and provenance.
    """
    if not pairs:
        raise ValueError("no question pairs")
    tok = model.tokenizer
    rows = {
        "misaligned": [answer_tokens(tok, p.question, p.misaligned) for p in pairs],
        "aligned": [answer_tokens(tok, p.question, p.aligned) for p in pairs],
    }
    mis, ali = (
        collect_means(model, r, hook, layers, batch_size, per_sample=True, progress=progress)
        for r in rows.values()
    )
    counts = {k: torch.tensor([sum(m) for _, m in r]) for k, r in rows.items()}
    prov = {
        "model": model_name(model),
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "positive": "misaligned",
        "negative": "aligned",
        "mask": "answer",
        "n_pairs": len(pairs),
        "dataset_hash": dataset_hash([(p.question, p.misaligned, p.aligned) for p in pairs]),
    }
    base = Contrast.from_summaries(mis, ali, prov)
    return Contrast(
        base.positive,
        base.negative,
        base.layers,
        base.hook,
        tokens_positive=counts["misaligned"],
        tokens_negative=counts["aligned"],
        provenance=prov,
    )


def _direction(c: Contrast, vectors: Tensor, method: str, **params: Any) -> DirectionSet:
    prov = {**c.provenance, "method": method, **params, "n_pairs": c.n_pairs}
    return DirectionSet(vectors.float(), list(c.layers), c.hook, prov)


def mean_difference(
    c: Contrast, weighting: Literal["tokens", "samples"] = "tokens"
) -> DirectionSet:
    """The mean difference: mean(positive) - mean(negative), per layer.

    Args:
        c: the cached activations.
        weighting: ``"tokens"`` weights each answer by its number of tokens, the paper's mean
            over all answer tokens (equal to ``em_direction`` on the same answers);
            ``"samples"`` weights every answer equally (CAA, steering-vectors' mean).

    Returns:
        One vector per layer (not normalised).

    Examples:
        >>> from emlens.core.data import general_questions
        >>> c = contrast_from_pairs(model, general_questions()[:4], layers=[3, 6])
        >>> mean_difference(c).at(6).shape  # [d_model]
        torch.Size([...])
    """
    if weighting == "tokens":
        if c.tokens_positive is None or c.tokens_negative is None:
            raise ValueError("token weighting needs the token counts (use contrast_from_pairs)")
        tp, tn = c.tokens_positive, c.tokens_negative
    elif weighting == "samples":
        tp = tn = torch.ones(c.n_pairs, dtype=torch.long)
    else:
        raise ValueError(f"weighting must be 'tokens' or 'samples', not {weighting!r}")
    pos = ActivationSummary.from_samples(c.positive, tp, c.layers, c.hook)
    neg = ActivationSummary.from_samples(c.negative, tn, c.layers, c.hook)
    return _direction(c, mean_diff(pos, neg).vectors, "mean_difference", weighting=weighting)


def orient(
    c: Contrast, vectors: Float[Tensor, "n_layers d_model"]
) -> Float[Tensor, "n_layers d_model"]:
    """``vectors`` with each layer's sign flipped where positives do not project higher than
    their paired negatives on most pairs (repeng's rule; a tie goes by the mean difference)."""
    diff = (c.positive - c.negative).double()  # [n, l, d]
    proj = torch.einsum("nld,ld->nl", diff, vectors.double())
    higher = (proj > 0).double().mean(0) - (proj < 0).double().mean(0)
    flip = (higher < 0) | ((higher == 0) & (proj.mean(0) < 0))
    return torch.where(flip[:, None], -vectors, vectors)


def pca_of_differences(c: Contrast, centre: bool = True) -> DirectionSet:
    """The first principal component of the paired differences, per layer (repeng).

    Args:
        c: the cached activations (at least two pairs).
        centre: subtract the mean difference first (repeng's ``pca_diff``: the axis along
            which the differences vary most); ``False`` keeps it (repeng's ``pca_center``,
            steering-vectors' ``pca_aggregator``: the axis of the largest mean square).

    Returns:
        Unit vectors, positives projecting higher on most pairs; the provenance holds each
        layer's explained variance ratio.

    Examples:
        >>> from emlens.core.data import general_questions
        >>> c = contrast_from_pairs(model, general_questions()[:4], layers=[3, 6])
        >>> pca = pca_of_differences(c, centre=False)
        >>> torch.allclose(pca.vectors.norm(dim=-1), torch.ones(2))  # unit per layer
        True
    """
    if c.n_pairs < 2:
        raise ValueError(f"PCA needs at least two pairs, got {c.n_pairs}")
    diff = (c.positive - c.negative).double().transpose(0, 1)  # [n_layers, n_pairs, d_model]
    if centre:
        diff = diff - diff.mean(1, keepdim=True)
    _, s, vh = torch.linalg.svd(diff, full_matrices=False)
    explained = (s[:, 0] ** 2 / (s**2).sum(-1)).tolist()
    vectors = orient(c, vh[:, 0, :])
    return _direction(c, vectors, "pca_of_differences", centre=centre, explained_variance=explained)


def logistic_probe(c: Contrast, C: float = 1.0, folds: int = 5) -> DirectionSet:
    """A logistic-regression probe's direction: positive vs negative answers, L2, per layer.

    Args:
        c: the cached activations (at least two pairs).
        C: inverse regularisation strength (scikit-learn's ``C``).
        folds: the accuracy is cross-validated over this many folds of questions (both
            answers of a question always fall in the same fold).

    Returns:
        The unit weight vector of a probe fitted on all pairs (it points to the positives);
        the provenance holds each layer's cross-validated ``held_out_accuracy``.

    Examples:
        >>> from emlens.core.data import general_questions
        >>> c = contrast_from_pairs(model, general_questions()[:4], layers=[3, 6])
        >>> probe = logistic_probe(c)
        >>> len(probe.provenance["held_out_accuracy"]) == len(probe.layers)  # one per layer
        True
    """
    folds = min(folds, c.n_pairs)
    if folds < 2:
        raise ValueError(f"the probe's held-out accuracy needs at least two pairs, got {c.n_pairs}")
    y = np.r_[np.ones(c.n_pairs), np.zeros(c.n_pairs)]
    groups = np.r_[np.arange(c.n_pairs), np.arange(c.n_pairs)]
    vectors, accuracy = [], []
    with threadpool_limits(limits=1):  # small fits: BLAS threads only contend (10x slower)
        for j in range(len(c.layers)):
            raw = torch.cat([c.positive[:, j], c.negative[:, j]]).double()
            x = (raw - raw.mean(0)).numpy()  # centring moves only the intercept: faster fits
            probe = logistic_regression(C, max_iter=5000)
            cv = cross_val_score(probe, x, y, groups=groups, cv=GroupKFold(n_splits=folds))
            accuracy.append(round(float(cv.mean()), 4))
            w = torch.from_numpy(probe.fit(x, y).coef_[0])
            vectors.append(w / w.norm())
    return _direction(
        c, torch.stack(vectors), "logistic_probe", C=C, folds=folds, held_out_accuracy=accuracy
    )


METHODS: dict[str, Method] = {
    "mean_difference": mean_difference,
    "pca_centred": partial(pca_of_differences, centre=True),
    "pca_uncentred": partial(pca_of_differences, centre=False),
    "logistic_probe": logistic_probe,
}
"""The methods the comparison runs, by name (each takes a ``Contrast``)."""
