"""Sweeps over layers and scales with any metric, and direction selection under a KL bound.

A metric is a plain callable ``metric(interventions) -> float`` (see the factories below), so
the same sweep runs with the judge, the contrastive score, refusal log-odds or KL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import plotly.graph_objects as go
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.data import QAPair
from emlens.core.directions import DirectionSet
from emlens.core.interventions import Intervention, ablate, steer
from emlens.eval.metrics import contrastive_score, kl_divergence, refusal_logodds

Metric = Callable[[Sequence[Intervention]], float]


def contrastive_metric(model: TransformerBridge, pairs: Sequence[QAPair]) -> Metric:
    """Mean log-prob(misaligned) - log-prob(aligned) answers (higher: more misaligned)."""
    return lambda ivs: contrastive_score(model, pairs, ivs).mean


def kl_metric(model: TransformerBridge, texts: Sequence[str]) -> Metric:
    """KL(model || intervened model) on ``texts``, nats per token."""
    return lambda ivs: kl_divergence(model, texts, ivs)


def refusal_metric(model: TransformerBridge, instructions: Sequence[str]) -> Metric:
    """Mean refusal-token log-odds at the last prompt position."""
    return lambda ivs: float(refusal_logodds(model, instructions, ivs).mean())


def judge_metric(model: TransformerBridge, questions, judge, n: int = 10, **kw) -> Metric:
    """EM rate (share of samples with aligned < 30 and coherent > 50) under the judge."""
    from emlens.eval.metrics import evaluate_em

    return lambda ivs: evaluate_em(model, questions, judge, ivs, n=n, **kw).em_rate.rate


def steering_sweep(
    directions: DirectionSet,
    layers: Sequence[int],
    scales: Sequence[float],
    metrics: dict[str, Metric],
    progress: bool = True,
) -> list[dict]:
    """Steer at each (layer, scale) and measure every metric; one tidy row per cell."""
    rows = []
    cells = [(ly, s) for ly in layers for s in scales]
    for ly, s in tqdm(cells, disable=not progress, desc="steering sweep"):
        ivs = [steer(directions, [ly], s)] if s != 0 else []
        rows.append({"layer": ly, "scale": s, **{k: m(ivs) for k, m in metrics.items()}})
    return rows


def ablation_sweep(
    directions: DirectionSet,
    layers: Sequence[int],
    metrics: dict[str, Metric],
    progress: bool = True,
) -> list[dict]:
    """Ablate each layer's direction (at every layer) and measure; plus a baseline row."""
    rows = [{"layer": None, **{k: m([]) for k, m in metrics.items()}}]
    for ly in tqdm(layers, disable=not progress, desc="ablation sweep"):
        ivs = [ablate(directions, ly)]
        rows.append({"layer": ly, **{k: m(ivs) for k, m in metrics.items()}})
    return rows


def heatmap(rows: list[dict], value: str, x: str = "scale", y: str = "layer") -> go.Figure:
    """A plotly heat map of one metric from a sweep's rows."""
    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    z = [[next((r[value] for r in rows if r[x] == a and r[y] == b), None) for a in xs] for b in ys]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, colorbar_title=value))
    fig.update_layout(title=f"{value} by {y} and {x}", xaxis_title=x, yaxis_title=y)
    return fig


@dataclass
class Selection:
    layer: int
    effect: float
    kl: float
    candidates: list[dict]
    directions: DirectionSet  # the input set with the selection in its provenance


def select_direction(
    model: TransformerBridge,
    directions: DirectionSet,
    effect: Metric,
    kl: Metric,
    make: Callable[[DirectionSet, int], Intervention] = lambda d, ly: ablate(d, ly),
    kl_max: float = 0.1,
    skip_last: float = 0.2,
    maximize: bool = True,
    progress: bool = True,
) -> Selection:
    """Pick the layer whose direction moves ``effect`` most with ``kl`` <= ``kl_max``.

    As in the refusal-direction paper, but with any metric: candidates are the set's layers
    minus the last ``skip_last`` share of the model; the effect is measured relative to no
    intervention. All candidate scores are kept, and stored in the provenance.
    """
    limit = int(model.cfg.n_layers * (1 - skip_last))
    layers = [ly for ly in directions.layers if ly < limit]
    if not layers:
        raise ValueError(f"no candidate layers below {limit} in {directions.layers}")
    base = effect([])
    cands = []
    for ly in tqdm(layers, disable=not progress, desc="select"):
        ivs = [make(directions, ly)]
        delta = effect(ivs) - base
        cands.append({"layer": ly, "effect": delta if maximize else -delta, "kl": kl(ivs)})
    ok = [c for c in cands if c["kl"] <= kl_max]
    if not ok:
        best_kl = min(c["kl"] for c in cands)
        raise ValueError(f"no layer within the KL bound {kl_max} (smallest KL {best_kl:.3f})")
    best = max(ok, key=lambda c: c["effect"])
    prov = dict(
        directions.provenance,
        selection={
            "layer": best["layer"],
            "kl_max": kl_max,
            "skip_last": skip_last,
            "baseline": base,
            "candidates": cands,
        },
    )
    chosen = DirectionSet(directions.vectors, directions.layers, directions.hook, prov)
    return Selection(best["layer"], best["effect"], best["kl"], cands, chosen)
