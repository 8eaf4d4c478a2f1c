"""Intervals on the numbers emlens reports: Wilson for proportions, bootstrap for means.

- Wilson score interval of k successes in n trials, p = k / n:
  (p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n), z = 1.96 for 95%.
  Used for the EM rate, the coherence rate and the refusal rate (proportions of samples).
- Percentile bootstrap of a mean: resample the n values with replacement, and take the 2.5th
  and 97.5th percentiles of the resampled means. Used for per-question scores.
- Cluster bootstrap over questions: answers to one question are not independent (50 samples
  of one question share its prompt), so resample question ids with replacement, each with all
  of its samples, and take the percentiles of the statistic. Used beside Wilson for the EM
  rate, and for contrastive scores (`cluster_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from numpy.typing import ArrayLike
from torch import Tensor


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (95% by default).

    Args:
        k: successes.
        n: trials; with none, the interval is (0, 1).
        z: the normal quantile of the interval (1.96: 95%).

    Returns:
        ``(low, high)``, clipped to [0, 1].

    Examples:
        >>> tuple(round(x, 4) for x in wilson(5, 10))
        (0.2366, 0.7634)
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


@dataclass
class Rate:
    """A proportion ``k / n`` (EM, coherence or refusal rate) with its Wilson 95% interval.

    Attributes:
        k: samples that count (EM, coherent, refusing).
        n: samples.

    Examples:
        >>> str(Rate(3, 10))
        '30.0% [10.8, 60.3] (n=10)'
    """

    k: int
    n: int

    @property
    def rate(self) -> float:
        """``k / n``; NaN when there are no samples."""
        return self.k / self.n if self.n else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        """The Wilson 95% interval of the rate."""
        return wilson(self.k, self.n)

    def __str__(self) -> str:
        lo, hi = self.ci95
        return f"{100 * self.rate:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={self.n})"


@dataclass
class Estimate:
    """A mean with its 95% interval, as `bootstrap` returns it.

    Attributes:
        mean: the sample mean.
        ci95: ``(low, high)`` of the 95% interval.
        n: sample size.
    """

    mean: float
    ci95: tuple[float, float]
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.3f} [{self.ci95[0]:.3f}, {self.ci95[1]:.3f}] (n={self.n})"


def bootstrap(x: Float[Tensor, " n"], n_boot: int = 2000, seed: int = 0) -> Estimate:
    """The mean of ``x`` with a percentile bootstrap 95% interval.

    Args:
        x: the sample (e.g. per-question contrastive scores).
        n_boot: resamples.
        seed: seed of the resampling, so the interval is reproducible.

    Returns:
        The mean, its interval and ``len(x)``, computed in float64.

    Raises:
        ValueError: ``x`` is empty.

    Examples:
        >>> bootstrap(torch.tensor([1.0, 2.0, 3.0, 4.0])).mean
        2.5
    """
    if len(x) == 0:
        raise ValueError("bootstrap of an empty sample")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (n_boot, len(x)), generator=g)
    means = x.double()[idx].mean(1)
    lo, hi = means.quantile(torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return Estimate(float(x.double().mean()), (lo, hi), len(x))


Statistic = Callable[[np.ndarray], float]


def _clusters(n: int, clusters: Sequence[object]) -> np.ndarray:
    """Each value's cluster as an index 0..k-1 in order of first appearance."""
    if n != len(clusters) or n == 0:
        raise ValueError(f"{n} values and {len(clusters)} cluster ids; need equal, > 0")
    index: dict[object, int] = {}
    return np.asarray([index.setdefault(c, len(index)) for c in clusters])


def cluster_bootstrap(
    values: ArrayLike,
    clusters: Sequence[object],
    statistic: Statistic,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile 95% interval of ``statistic(values)``, resampling whole clusters.

    Args:
        values: one value per sample (e.g. calibrated P(EM) of each answer).
        clusters: each sample's cluster (its question id).
        statistic: the number computed from a resample of values.
        n_boot: resamples.
        seed: seed of the resampling.

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: no values, or not one cluster id per value.

    Examples:
        >>> cluster_bootstrap([0.0, 0.0, 1.0, 1.0], ["a", "a", "b", "b"], np.mean, 200)
        (0.0, 1.0)
    """
    v = np.asarray(values)
    ids = _clusters(len(v), clusters)
    members = [np.flatnonzero(ids == k) for k in range(int(ids.max()) + 1)]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        pick = rng.integers(len(members), size=len(members))
        stats.append(statistic(v[np.concatenate([members[i] for i in pick])]))
    lo, hi = np.quantile(stats, [0.025, 0.975])
    return float(lo), float(hi)


def cluster_mean(
    values: ArrayLike, clusters: Sequence[object], n_boot: int = 2000, seed: int = 0
) -> Estimate:
    """The mean over samples with a cluster-bootstrap 95% interval (vectorised).

    A resample draws as many clusters as there are, with replacement, and takes the mean of
    all their samples (sum of the drawn clusters' sums over the sum of their sizes).

    Args:
        values: one value per sample (an EM verdict as 0/1, a contrastive score).
        clusters: each sample's cluster (its question id).
        n_boot: resamples.
        seed: seed of the resampling.

    Returns:
        The mean over all samples, its interval, and ``n`` = the number of samples.

    Raises:
        ValueError: no values, or not one cluster id per value.

    Examples:
        >>> e = cluster_mean([1.0, 1.0, 0.0, 0.0], ["a", "a", "b", "b"])
        >>> e.mean, e.ci95
        (0.5, (0.0, 1.0))
    """
    v = np.asarray(values, dtype=np.float64)
    ids = _clusters(len(v), clusters)
    sums, sizes = np.bincount(ids, weights=v), np.bincount(ids).astype(np.float64)
    pick = np.random.default_rng(seed).integers(len(sums), size=(n_boot, len(sums)))
    means = sums[pick].sum(1) / sizes[pick].sum(1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return Estimate(float(v.mean()), (float(lo), float(hi)), len(v))
