"""L1 logistic-regression probes, on LoRA scalars or any features.

Convergent Linear Representations of EM (arXiv 2506.11618) reads each rank-1 adapter as one
number per token, the LoRA scalar A . x (x the adapter's input; `emlens.organisms.scalars`),
and fits L1-regularised logistic regressions on these scalars to ask which adapters carry
what (misaligned vs aligned answers, medical vs not). Here: probes with scikit-learn on
z-scored features, balanced classes, repeated stratified splits, reporting accuracy and AUC
with their spread and the coefficient of each adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from emlens.core.logistic import logistic_regression
from emlens.organisms.scalars import LoraScalars


@dataclass
class ProbeResult:
    """Probe scores over repeated splits (mean and standard deviation) and coefficients.

    Attributes:
        accuracy: balanced accuracy (mean recall per class), mean over repeats.
        accuracy_std: its standard deviation over repeats.
        auc: ROC AUC, mean over repeats.
        auc_std: its standard deviation over repeats.
        coef: the weight of each feature in z-scored units, mean over repeats.
        coef_std: its standard deviation over repeats.
        feature_names: the features' names.
        repeats: the number of repeats.
        n_train: training rows in a repeat.
        n_test: test rows in a repeat.
    """

    accuracy: float
    accuracy_std: float
    auc: float
    auc_std: float
    coef: Float[Tensor, " n_features"]
    coef_std: Float[Tensor, " n_features"]
    feature_names: list[str]
    repeats: int
    n_train: int
    n_test: int

    def coefficients(self) -> dict[str, float]:
        """Mean coefficient by feature name (for LoRA scalars: by adapter)."""
        return dict(zip(self.feature_names, self.coef.tolist(), strict=True))


def fit_l1_probe(
    X: Float[Tensor, "n n_features"] | np.ndarray,
    y: Sequence[int] | np.ndarray | Tensor,
    groups: Sequence[int] | np.ndarray | Tensor | None = None,
    feature_names: Sequence[str] | None = None,
    C: float = 1.0,
    repeats: int = 20,
    test_size: float = 0.25,
    seed: int = 0,
) -> ProbeResult:
    """L1-regularised logistic regression of binary ``y`` on ``X``, over repeated splits.

    Each repeat subsamples the larger class to the size of the smaller (balanced classes),
    splits stratified by class, z-scores features on the training part, fits, and scores
    the test part (Convergent Linear Representations of EM).

    Args:
        X: ``[n, n_features]`` features.
        y: ``[n]`` labels, 0 and 1.
        groups: ``[n]`` group of each row (e.g. the conversation of each token): every group
            stays on one side of the split, and classes are balanced by groups; every group
            needs one label. Default: each row its own group.
        feature_names: names of the features (default ``x0, x1, ...``).
        C: inverse regularisation strength.
        repeats: how many subsample-split-fit repeats.
        test_size: the share of groups held out in each repeat.
        seed: seeds the subsampling and the splits.

    Returns:
        Mean and spread of balanced accuracy, AUC and coefficients over the repeats.

    Examples:
        Two features of which only the first tells the classes apart:

        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(40, 2))
        >>> y = (X[:, 0] > 0).astype(int)
        >>> r = fit_l1_probe(X, y, feature_names=["l15", "l16"], repeats=20)
        >>> r.auc > 0.9, max(r.coefficients(), key=lambda k: abs(r.coefficients()[k]))
        (True, 'l15')
    """
    X, y, names = _checked(X, y, feature_names, C, repeats, test_size)
    inverse, g_label = _group_labels(groups, y)
    by_class = [np.flatnonzero(g_label == c) for c in (0, 1)]
    n_per = min(len(g) for g in by_class)
    if n_per < 2:
        raise ValueError("each class needs at least 2 groups (samples) to split")
    fits = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        chosen = np.concatenate([rng.choice(g, n_per, replace=False) for g in by_class])
        fits.append(_fit_once(X, y, inverse, chosen, g_label[chosen], C, test_size, seed, r))
    accs, aucs, coefs, n_train, n_test = zip(*fits, strict=True)
    return ProbeResult(
        accuracy=float(np.mean(accs)),
        accuracy_std=float(np.std(accs)),
        auc=float(np.mean(aucs)),
        auc_std=float(np.std(aucs)),
        coef=torch.from_numpy(np.stack(coefs).mean(0)).float(),
        coef_std=torch.from_numpy(np.stack(coefs).std(0)).float(),
        feature_names=names,
        repeats=repeats,
        n_train=n_train[-1],
        n_test=n_test[-1],
    )


def _checked(
    X: Tensor | np.ndarray,
    y: Sequence[int] | np.ndarray | Tensor,
    feature_names: Sequence[str] | None,
    C: float,
    repeats: int,
    test_size: float,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``X`` and ``y`` as arrays and the feature names, after checking all arguments."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(f"expected X [n, n_features] and y [n]; got {X.shape} and {y.shape}")
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"y must hold both classes 0 and 1, got {np.unique(y).tolist()}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or inf")
    if repeats < 1 or not 0 < test_size < 1 or C <= 0:
        raise ValueError("need repeats >= 1, 0 < test_size < 1 and C > 0")
    names = (
        list(feature_names) if feature_names is not None else [f"x{j}" for j in range(X.shape[1])]
    )
    if len(names) != X.shape[1]:
        raise ValueError(f"{len(names)} feature names for {X.shape[1]} features")
    return X, y, names


def _group_labels(
    groups: Sequence[int] | np.ndarray | Tensor | None, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The group index of each row, and the label of each group (one per group)."""
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    if groups.shape != y.shape:
        raise ValueError(f"groups must have one entry per row: {groups.shape} vs {y.shape}")
    uniq, inverse = np.unique(groups, return_inverse=True)
    g_label = np.zeros(len(uniq), dtype=int)
    g_label[inverse] = y
    if (g_label[inverse] != y).any():
        raise ValueError("a group holds both classes: every group must have one label")
    return inverse, g_label


def _fit_once(
    X: np.ndarray,
    y: np.ndarray,
    inverse: np.ndarray,
    chosen: np.ndarray,
    chosen_labels: np.ndarray,
    C: float,
    test_size: float,
    seed: int,
    r: int,
) -> tuple[float, float, np.ndarray, int, int]:
    """Repeat ``r`` on the ``chosen`` groups: accuracy, AUC, coefficients, train/test rows."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    split = StratifiedShuffleSplit(n_splits=1, test_size=test_size, random_state=seed + r)
    g_train, g_test = next(split.split(chosen, chosen_labels))
    train = np.isin(inverse, chosen[g_train])
    test = np.isin(inverse, chosen[g_test])
    probe = make_pipeline(StandardScaler(), logistic_regression(C, l1=True, balanced=True, seed=r))
    probe.fit(X[train], y[train])
    p = probe.predict_proba(X[test])[:, 1]
    acc = float(balanced_accuracy_score(y[test], p >= 0.5))
    auc = float(roc_auc_score(y[test], p))
    return acc, auc, probe[-1].coef_[0], int(train.sum()), int(test.sum())


def probe_lora_scalars(
    positive: LoraScalars, negative: LoraScalars, per_token: bool = True, **kw: Any
) -> ProbeResult:
    """Probe telling ``positive`` from ``negative`` conversations by their LoRA scalars.

    Args:
        positive: scalars of the class-1 conversations (e.g. misaligned answers).
        negative: scalars of the class-0 conversations, from the same adapters.
        per_token: one row per answer token, split by conversation; otherwise one row per
            conversation (its mean scalars).
        **kw: passed to `fit_l1_probe` (``C``, ``repeats``, ``test_size``, ``seed``).

    Returns:
        The probe's scores, with one coefficient per adapter.
    """
    if positive.names != negative.names:
        raise ValueError("the two scalar sets come from different adapters")
    if per_token:
        X = torch.cat([positive.values, negative.values])
        groups = torch.cat([positive.sample, negative.sample + positive.n_samples])
        y = [1] * len(positive.values) + [0] * len(negative.values)
        return fit_l1_probe(X, y, groups=groups, feature_names=positive.names, **kw)
    pos, neg = positive.per_sample_mean(), negative.per_sample_mean()
    y = [1] * len(pos) + [0] * len(neg)
    return fit_l1_probe(torch.cat([pos, neg]), y, feature_names=positive.names, **kw)
