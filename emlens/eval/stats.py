"""Intervals on the numbers emlens reports: Wilson for proportions, bootstrap for means.

- Wilson score interval of k successes in n trials, p = k / n:
  (p + z^2 / 2n +- z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n), z = 1.96 for 95%.
  Used for the EM rate, the coherence rate and the refusal rate (proportions of samples).
- Percentile bootstrap of a mean: resample the n values with replacement, and take the 2.5th
  and 97.5th percentiles of the resampled means. Used for per-question scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (95% by default).

    Args:
        k: successes.
        n: trials; with none, the interval is (0, 1).
        z: the normal quantile of the interval (1.96: 95%).

    Returns:
        ``(low, high)``, clipped to [0, 1].

    Example:
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

    Example:
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

    Example:
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
