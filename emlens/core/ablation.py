"""The arithmetic of directional ablation: zero, to a reference mean, and leaving positions.

Zero-ablation sets the projection of every activation on the direction to 0:
``x - (x.d)d``. On a model with massive activations (SmolLM2: the first position's residual
norm is ~25,000, almost all in a few coordinates) a mean-difference direction picks up a
little of those coordinates, ordinary tokens project onto it far from 0, and setting their
projection to 0 moves every token by a large constant along the direction: the ablation
steers instead of removing. Ablation to a reference value, ``x - ((x.d) - c)d`` with ``c``
the mean projection of ordinary tokens (``reference_means``), removes the variation along
the direction without moving the mean; ``skip_first`` leaves the first (attention-sink)
position alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import check_layers, collect_means
from emlens.core.forward import HookFn
from emlens.core.tokens import Row

RESID_PRE = "blocks.{layer}.hook_resid_pre"

__all__ = [
    "RESID_PRE",
    "WARN_SHARE",
    "clamp",
    "diagnostic",
    "reference_means",
    "reference_rows",
    "warning",
]


def reference_rows(tokenizer: object, texts: Sequence[str]) -> list[Row]:
    """Rows of ``texts`` with every token but the first masked in (ordinary tokens).

    Args:
        tokenizer: A Hugging Face tokenizer (BOS added as the model would add it).
        texts: Reference texts, e.g. prompts and ordinary answers.

    Returns:
        ``(token ids, mask)`` rows for ``reference_means``.

    Examples:
        >>> rows = reference_rows(model.tokenizer, ["Hello there.", "What is 2+2?"])
    """
    rows: list[Row] = []
    for text in texts:
        ids = list(tokenizer(text)["input_ids"])  # type: ignore[operator]
        if len(ids) < 2:
            raise ValueError(f"reference text {text!r} has fewer than 2 tokens")
        rows.append((ids, [False] + [True] * (len(ids) - 1)))
    return rows


def reference_means(
    model: TransformerBridge,
    rows: Sequence[Row],
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> Float[Tensor, "n_layers d_model"]:
    """Mean block input (``hook_resid_pre``) of each layer over ordinary tokens of ``rows``.

    The first position of every row is excluded whatever its mask says: the attention sink
    projects hundreds of times further than ordinary tokens and would dominate the mean.

    Args:
        model: The model to run (un-intervened).
        rows: ``(token ids, mask)`` rows, e.g. from ``reference_rows`` or ``answer_tokens``.
        layers: The layers that will be ablated (default: all), in that order.
        batch_size: Rows per forward.
        progress: Show a progress bar.

    Returns:
        One mean activation per layer; pass it as ``ablate(..., reference=...)``. The
        reference value of a direction ``d`` is ``reference @ d / |d|``.

    Examples:
        >>> from emlens.core.interventions import ablate
        >>> rows = reference_rows(model.tokenizer, ["Hello there.", "What is 2+2?"])
        >>> ref = reference_means(model, rows, [15])
        >>> ref.shape  # [n_layers, d_model]
        torch.Size([1, ...])
        >>> spec = ablate(em_dir, layer=15, layers=[15], reference=ref)
    """
    ordinary = [(ids, [False, *list(mask)[1:]]) for ids, mask in rows]
    layers = check_layers(model, layers)
    summary = collect_means(
        model, ordinary, RESID_PRE, layers, batch_size, progress=progress, desc="reference"
    )
    return summary.mean


def clamp(
    q: Float[Tensor, "d_model k"], mean: Tensor | None = None, skip_first: bool = False
) -> HookFn:
    """A hook replacing the component of activations in the span of orthonormal ``q``.

    Args:
        q: An orthonormal basis of the span to ablate.
        mean: A reference activation ``[d_model]``: the component becomes ``mean``'s (``None``:
            zero-ablation).
        skip_first: Leave position 0 unchanged (counted across KV-cache calls).

    Returns:
        A hook function ``fn(act, **_)`` for ``model.hooks``.

    Examples:
        >>> fn = clamp(torch.eye(4)[:, :1], mean=torch.tensor([2.0, 0, 0, 0]))
        >>> fn(torch.ones(1, 3, 4))[0, :, 0]
        tensor([2., 2., 2.])
    """
    seen = {"end": 0}
    cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor | None]] = {}

    def fn(act: Tensor, **_: object) -> Tensor:
        key = (act.device, act.dtype)
        if key not in cache:
            m = None if mean is None else (mean.to(act.device, torch.float32) @ q.to(act.device))
            cache[key] = (q.to(act.device, act.dtype), None if m is None else m.to(act.dtype))
        qq, c = cache[key]
        proj = act @ qq  # [batch, pos, k]
        new = act - (proj if c is None else proj - c) @ qq.T
        if not skip_first:
            return new
        # A multi-token call starts at position 0; a one-token call continues (KV cache).
        start = 0 if act.shape[1] > 1 else seen["end"]
        seen["end"] = start + act.shape[1]
        if start > 0:
            return new
        return torch.cat([act[:, :1], new[:, 1:]], dim=1)

    return fn


WARN_SHARE = 0.05  # warn when >= 5% of a direction's norm lies in massive coordinates


def diagnostic(
    model: TransformerBridge,
    rows: Sequence[Row],
    directions: Float[Tensor, "n_layers d_model"],
    layers: Sequence[int],
    factor: float = 20.0,
) -> dict[int, dict[str, object]]:
    """What exposes the zero-ablation artefact, per layer, at the block input.

    Massive coordinates are found from the data: those whose mean |activation| (the larger of
    the first position's and the ordinary tokens') is over ``factor`` times the median
    coordinate's.

    Args:
        model: The model the directions come from.
        rows: ``(token ids, mask)`` rows; ordinary tokens are the masked ones after position 0.
        directions: One direction per layer of ``layers``.
        layers: The layers.
        factor: How far above the median a massive coordinate's mean |activation| is.

    Returns:
        Per layer: ``mean_projection_ordinary`` and ``mean_projection_first`` (on the unit
        direction), ``massive_coordinates`` and ``massive_share`` (the norm of the direction
        in them over its whole norm), and ``warn`` (``massive_share >= WARN_SHARE``).

    Examples:
        >>> rows = reference_rows(model.tokenizer, ["Hello there.", "What is 2+2?"])
        >>> diag = diagnostic(model, rows, em_dir.vectors[[15]], [15])
        >>> sorted(diag[15])
        ['massive_coordinates', 'massive_share', 'mean_projection_first',
         'mean_projection_ordinary', 'warn']
        >>> 0 <= diag[15]["massive_share"] <= 1
        True
    """
    ordinary = [(ids, [False, *list(m)[1:]]) for ids, m in rows]
    mo = collect_means(model, ordinary, RESID_PRE, layers, progress=False).mean
    return from_means(mo, first_means(model, rows, RESID_PRE, layers), directions, layers, factor)


def first_means(
    model: TransformerBridge, rows: Sequence[Row], hook: str, layers: Sequence[int]
) -> Float[Tensor, "n_layers d_model"]:
    """Mean activation at position 0 of up to 8 of ``rows`` (the sink is the same token)."""
    first = [(ids, [True] + [False] * (len(ids) - 1)) for ids, _ in rows[:8]]
    return collect_means(model, first, hook, layers, progress=False, desc="first position").mean


def from_means(
    mo: Tensor, mf: Tensor, directions: Tensor, layers: Sequence[int], factor: float = 20.0
) -> dict[int, dict[str, object]]:
    """``diagnostic`` from mean activations of ordinary tokens ``mo`` and position 0 ``mf``."""
    out: dict[int, dict[str, object]] = {}
    for j, layer in enumerate(layers):
        d = directions[j].float()
        u = d / d.norm()
        size = torch.maximum(mo[j].abs(), mf[j].abs())
        massive = (size > factor * size.median()).nonzero().flatten().tolist()
        out[layer] = {
            "mean_projection_ordinary": round(float(mo[j] @ u), 4),
            "mean_projection_first": round(float(mf[j] @ u), 4),
            "massive_coordinates": massive,
            "massive_share": round(float(d[massive].norm() / d.norm()), 4),
        }
        out[layer]["warn"] = out[layer]["massive_share"] >= WARN_SHARE  # type: ignore[operator]
    return out


def warning(provenance: dict[str, object], name: str = "direction") -> str | None:
    """One line when ``provenance['ablation_diagnostic']`` flags a layer, else None.

    Examples:
        >>> warning(em_dir.provenance, "EM direction")
    """
    diag = provenance.get("ablation_diagnostic")
    if not isinstance(diag, dict):
        return None
    bad = {ly: d for ly, d in diag.items() if d.get("warn")}
    if not bad:
        return None
    ly, worst = max(bad.items(), key=lambda kv: kv[1]["massive_share"])
    return (
        f"warning: {name}: {worst['massive_share']:.0%} of its norm at layer {ly} lies in massive "
        f"activation coordinates (>= {WARN_SHARE:.0%} in {len(bad)} layers); ordinary tokens "
        f"project at {worst['mean_projection_ordinary']:+.2f}, the first position at "
        f"{worst['mean_projection_first']:+.2f}: zero-ablation will steer; use "
        "ablate(..., reference=reference_means(...), skip_first=True)"
    )
