"""Stop a forward pass whose activations an intervention turned non-finite, naming where.

Steering with a large scale (or in float16, whose largest number is 65504), or ablating to an
extreme reference, can turn residual-stream activations into inf or NaN; decoding them gives
garbage text and no error. `finite_guard` watches the block output
(``blocks.{l}.hook_resid_post``) of each intervened layer and of the last layer. Each watch
records a flag on the device; at the last layer, once per forward pass (one device sync), a
non-finite flag raises `NonFiniteActivations` naming the first layer that went bad, the
intervention there and the dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import RESID_POST

Hook = tuple[str, Callable[..., Tensor | None]]


class NonFiniteActivations(ValueError):
    """Activations turned inf or NaN under an intervention (the layer and scale named)."""


def _described(interventions: Sequence[Any], n_layers: int) -> dict[int, str]:
    """Layer -> what intervenes there (``Steer``: its scale; ``Ablate``: ablation)."""
    out: dict[int, list[str]] = {}
    for iv in interventions:
        layers = range(n_layers) if iv.layers is None else iv.layers
        scale = getattr(iv, "scale", None)
        what = "ablation" if scale is None else f"steering with scale {scale:g}"
        for ly in layers:
            out.setdefault(int(ly), []).append(what)
    return {ly: " and ".join(whats) for ly, whats in out.items()}


def finite_guard(model: TransformerBridge, interventions: Sequence[Any]) -> list[Hook]:
    """Hooks that raise `NonFiniteActivations` when ``interventions`` make activations inf/NaN.

    Args:
        model: the model the interventions apply to.
        interventions: ``Steer``/``Ablate`` specs (anything with ``layers``, ``None`` for all,
            and for steering a ``scale``).

    Returns:
        (hook name, function) pairs to install after the interventions' own hooks; none for
        no interventions.

    Raises:
        NonFiniteActivations: (from a forward pass) the activations turned non-finite.

    Examples:
        A steer past float32's range overflows the residual stream; the guard raises rather
        than return NaN logits:

        >>> from emlens.core.interventions import hooks_for, steer
        >>> ivs = [steer(em_dir, layers=[12], scale=1e39)]
        >>> tokens = model.to_tokens("Hello")
        >>> with model.hooks(fwd_hooks=hooks_for(model, ivs) + finite_guard(model, ivs)):
        ...     model(tokens)
        Traceback (most recent call last):
        ...
        emlens.core.finite.NonFiniteActivations: ...
    """
    if not interventions:
        return []
    last = model.cfg.n_layers - 1
    where = _described(interventions, model.cfg.n_layers)
    layers = sorted({*where, last})
    flags: list[tuple[int, Tensor]] = []

    def watch(layer: int) -> Callable[..., None]:
        def fn(act: Tensor, **_: object) -> None:
            if layer == layers[0]:
                flags.clear()  # a new forward pass
            flags.append((layer, torch.isfinite(act).all()))
            if layer != last:
                return
            oks = torch.stack([ok.to(act.device) for _, ok in flags]).cpu().tolist()
            bad = [ly for (ly, _), ok in zip(flags, oks, strict=True) if not ok]
            flags.clear()
            if bad:
                raise NonFiniteActivations(_message(bad[0], where, act.dtype))

        return fn

    return [(RESID_POST.format(layer=ly), watch(ly)) for ly in layers]


def _message(layer: int, where: dict[int, str], dtype: torch.dtype) -> str:
    at = f"layer {layer} ({RESID_POST.format(layer=layer)})"
    if layer in where:
        cause = f"under {where[layer]} at layer {layer}"
    else:
        cause = "downstream of " + "; ".join(f"{w} at layer {ly}" for ly, w in where.items())
    return (
        f"activations turned non-finite (inf or NaN) at {at} {cause}, in {dtype}: lower the "
        "scale, or run in float32/bfloat16 (float16 overflows at 65504)"
    )
