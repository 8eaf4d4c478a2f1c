"""Sweeps of an intervention over layers and scales, and direction selection under a KL bound.

A sweep applies one intervention per cell (steer at a layer with a scale; ablate a layer's
direction) and measures every metric there. Selection follows the refusal-direction paper
(Arditi et al. 2024): among the layers outside the last 20%, the direction whose intervention
moves the effect most while KL(model || intervened model) stays under a bound.

A metric is a plain callable ``metric(interventions) -> value`` (`Metric`, see the factories
below), so the same sweep runs with the judge, the contrastive score, refusal log-odds or
KL; a sweep keeps each metric's value as it comes (a float, an `Estimate`, ...).

With a ``log`` (a `emlens.eval.journal.Journal` file), each finished cell's row is written
as it completes, and a rerun reads finished cells back instead of measuring them again.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.data import QAPair, Question
from emlens.core.direction_set import DirectionSet
from emlens.core.interventions import Intervention, ablate, steer
from emlens.eval.em_rate import evaluate_em
from emlens.eval.journal import Journal, fingerprint
from emlens.eval.judges.base import Judge
from emlens.eval.metrics import contrastive_score, kl_divergence, refusal_logodds

if TYPE_CHECKING:
    import plotly.graph_objects as go

T = TypeVar("T")
Metric = Callable[[Sequence[Intervention]], T]  # interventions -> the model's measurement
SweepRow = dict[str, Any]  # the cell ("layer", "scale") and one value per metric


def contrastive_metric(model: TransformerBridge, pairs: Sequence[QAPair]) -> Metric[float]:
    """Mean log-prob(misaligned) - log-prob(aligned) answers (higher: more misaligned)."""
    return lambda ivs: contrastive_score(model, pairs, ivs).mean


def kl_metric(model: TransformerBridge, texts: Sequence[str]) -> Metric[float]:
    """KL(model || intervened model) on ``texts``, nats per token."""
    return lambda ivs: kl_divergence(model, texts, ivs)


def refusal_metric(model: TransformerBridge, instructions: Sequence[str]) -> Metric[float]:
    """Mean refusal-token log-odds at the last prompt position."""
    return lambda ivs: float(refusal_logodds(model, instructions, ivs).mean())


def judge_metric(
    model: TransformerBridge, questions: Sequence[Question], judge: Judge, n: int = 10, **kw: Any
) -> Metric[float]:
    """EM rate under the judge (its verdicts: `emlens.eval.verdicts`).

    ``kw`` goes to `emlens.eval.em_rate.evaluate_em` (temperature, max_new_tokens, ...).
    """
    kw = {"progress": False, **kw}
    return lambda ivs: evaluate_em(model, questions, judge, ivs, n=n, **kw).em_rate.rate


def _row_log(
    log: str | os.PathLike[str] | None,
    kind: str,
    directions: DirectionSet,
    metrics: Mapping[str, Any],
) -> Journal | None:
    """The row log of a sweep: its settings are the kind, the directions and metric names."""
    if log is None:
        return None
    settings = {"sweep": kind, "directions": fingerprint(directions), "metrics": sorted(metrics)}
    return Journal(log, settings)


def _measured(
    journal: Journal | None, cell: dict[str, Any], metrics: Mapping[str, Metric[Any]], ivs: Any
) -> SweepRow:
    """The cell's row: read back from the log, or measured and then logged."""
    key = " ".join(f"{k}={v}" for k, v in cell.items())
    if journal is not None and key in journal:
        return dict(journal[key])
    row = {**cell, **{k: m(ivs) for k, m in metrics.items()}}
    if journal is not None:
        journal.put(key, row)
    return row


def steering_sweep(
    directions: DirectionSet,
    layers: Sequence[int],
    scales: Sequence[float],
    metrics: Mapping[str, Metric[Any]],
    progress: bool = True,
    log: str | os.PathLike[str] | None = None,
) -> list[SweepRow]:
    """Steer at each (layer, scale) and measure every metric; one tidy row per cell.

    Args:
        directions: the direction set steered with (each layer its own vector).
        layers: the layers, one at a time.
        scales: the steering scales; scale 0 is the unsteered model.
        metrics: name -> metric; any return type, kept as it comes.
        progress: show a progress bar.
        log: a row log (JSONL): each cell's row is written as it completes and read back on
            a rerun (metric values: numbers, strings, `Rate`, `Estimate`).

    Returns:
        One row per cell, layer-major: ``{"layer", "scale", **{name: value}}``.

    Examples:
        >>> from emlens.core.data import general_questions
        >>> pairs, texts = general_questions()[:2], ["Hello there.", "What is 2+2?"]
        >>> metrics = {"em": contrastive_metric(model, pairs), "kl": kl_metric(model, texts)}
        >>> rows = steering_sweep(em_dir, layers=[8, 12], scales=[0, 4], metrics=metrics)
        >>> [(r["layer"], r["scale"]) for r in rows], sorted(rows[0])
        ([(8, 0), (8, 4), (12, 0), (12, 4)], ['em', 'kl', 'layer', 'scale'])
        >>> fig = heatmap(rows, "em")  # fig.show() draws it
    """
    journal, rows = _row_log(log, "steering", directions, metrics), []
    cells = [(ly, s) for ly in layers for s in scales]
    for ly, s in tqdm(cells, disable=not progress, desc="steering sweep"):
        ivs = [steer(directions, [ly], s)] if s != 0 else []
        rows.append(_measured(journal, {"layer": ly, "scale": s}, metrics, ivs))
    return rows


def ablation_sweep(
    directions: DirectionSet,
    layers: Sequence[int],
    metrics: Mapping[str, Metric[Any]],
    progress: bool = True,
    log: str | os.PathLike[str] | None = None,
) -> list[SweepRow]:
    """Ablate each layer's direction (at every layer) and measure every metric.

    Args:
        directions: the direction set; the direction of each of ``layers`` is ablated in turn.
        layers: the layers whose directions are ablated.
        metrics: name -> metric; any return type, kept as it comes.
        progress: show a progress bar.
        log: a row log, as in `steering_sweep`.

    Returns:
        A baseline row (``layer`` None: no ablation), then one row per layer.
    """
    journal = _row_log(log, "ablation", directions, metrics)
    rows = [_measured(journal, {"layer": None}, metrics, [])]
    for ly in tqdm(layers, disable=not progress, desc="ablation sweep"):
        rows.append(_measured(journal, {"layer": ly}, metrics, [ablate(directions, ly)]))
    return rows


def heatmap(rows: Sequence[SweepRow], value: str, x: str = "scale", y: str = "layer") -> go.Figure:
    """A plotly heat map of one metric from a sweep's rows (a number per cell)."""
    import plotly.graph_objects as go  # only for figures: plotly is slow to import

    xs = sorted({r[x] for r in rows})
    ys = sorted({r[y] for r in rows})
    z = [[next((r[value] for r in rows if r[x] == a and r[y] == b), None) for a in xs] for b in ys]
    fig = go.Figure(go.Heatmap(z=z, x=xs, y=ys, colorbar_title=value))
    fig.update_layout(title=f"{value} by {y} and {x}", xaxis_title=x, yaxis_title=y)
    return fig


@dataclass
class Selection:
    """The direction `select_direction` chose, with every candidate's scores.

    Attributes:
        layer: the chosen layer.
        effect: its change of the effect metric from no intervention (sign: as maximised).
        kl: its KL metric.
        candidates: per candidate layer: ``{"layer", "effect", "kl"}``.
        directions: the input set with the selection in its provenance.
    """

    layer: int
    effect: float
    kl: float
    candidates: list[dict[str, float]]
    directions: DirectionSet


def _best_within(cands: list[dict[str, float]], kl_max: float) -> dict[str, float]:
    """The candidate with the largest effect among those with KL <= ``kl_max``."""
    ok = [c for c in cands if c["kl"] <= kl_max]
    if not ok:
        best_kl = min(c["kl"] for c in cands)
        raise ValueError(f"no layer within the KL bound {kl_max} (smallest KL {best_kl:.3f})")
    return max(ok, key=lambda c: c["effect"])


def select_direction(
    model: TransformerBridge,
    directions: DirectionSet,
    effect: Metric[float],
    kl: Metric[float],
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

    Args:
        model: the model (its layer count sets the skipped share).
        directions: candidate directions, one per layer.
        effect: the metric to move; a float.
        kl: the side-effect metric bounded by ``kl_max``; a float.
        make: the intervention of a candidate (default: ablate its direction everywhere).
        kl_max: the largest KL allowed.
        skip_last: the share of the model's last layers left out.
        maximize: maximise the effect's change (False: minimise it).
        progress: show a progress bar.

    Returns:
        The chosen layer with its scores, all candidates, and the set with the selection in
        its provenance.

    Raises:
        ValueError: no candidate layer, or none within the KL bound.

    Examples:
        >>> from emlens.core.data import general_questions
        >>> pairs, texts = general_questions()[:2], ["Hello there.", "What is 2+2?"]
        >>> d = em_dir.select([8, 12, 16])
        >>> effect, kl = contrastive_metric(model, pairs), kl_metric(model, texts)
        >>> sel = select_direction(model, d, effect, kl, kl_max=10.0, progress=False)
        >>> sel.layer in (8, 12, 16), len(sel.candidates)
        (True, 3)
        >>> sel.directions.save("em_selected.safetensors")
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
    best = _best_within(cands, kl_max)
    selection = {
        "layer": best["layer"],
        "kl_max": kl_max,
        "skip_last": skip_last,
        "baseline": base,
        "candidates": cands,
    }
    prov = {**directions.provenance, "selection": selection}
    chosen = DirectionSet(directions.vectors, directions.layers, directions.hook, prov)
    return Selection(int(best["layer"]), best["effect"], best["kl"], cands, chosen)
