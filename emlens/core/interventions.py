"""Interventions as plain data, applied to a model by one context manager.

- ``Steer``: add ``scale * vector`` to the residual stream at chosen layers, at every
  position or only at generated positions.
- ``Ablate``: project one direction (or the span of several) out of every residual stream
  activation: each block's input and each attention/MLP output that writes to the stream
  (Arditi et al. 2024's directional ablation), at every layer or at chosen ones; or, layer by
  layer, each layer's own direction at that layer only.
- ``emlens.core.orthogonalization.orthogonalize``: the weight edit equivalent to an
  every-layer ``Ablate`` (a new model).

Being data, a spec can be saved, printed, or translated to another backend.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core._arch import writer_hooks
from emlens.core.ablation import clamp
from emlens.core.activations import RESID_POST, check_layers
from emlens.core.direction_set import DirectionSet
from emlens.core.finite import finite_guard
from emlens.core.forward import HookFn

Hook = tuple[str, HookFn]


@dataclass(frozen=True)
class Steer:
    """Add ``scale * vectors[i]`` at ``hook`` of ``layers[i]``, at all or generated positions.

    Build one with ``steer``; apply it with ``applied`` or ``generate``.
    """

    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    scale: float = 1.0
    positions: Literal["all", "generated"] = "all"
    hook: str = RESID_POST

    def __post_init__(self) -> None:
        if self.positions not in ("all", "generated"):
            raise ValueError(f"positions must be 'all' or 'generated', not {self.positions!r}")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.layers):
            raise ValueError("Steer needs one vector per layer: vectors [n_layers, d_model]")


@dataclass(frozen=True)
class Ablate:
    """Project directions out of the residual stream (block inputs and block outputs).

    With ``per_layer=False``, the span of the rows of ``directions`` is removed at every layer
    of ``layers`` (``None``: every layer, the paper's definition). With ``per_layer=True``,
    row ``i`` is removed at ``layers[i]`` only (layer-wise ablation). ``reference`` (one mean
    block input per ablated layer, from ``emlens.core.ablation.reference_means``) sets the
    block input's component to the reference's instead of zero; ``skip_first`` leaves
    position 0 (the attention sink) alone. Zero-ablation steers on models with massive
    activations (see ``emlens.core.ablation``). Build one with ``ablate``.
    """

    directions: Float[Tensor, "k d_model"]
    layers: tuple[int, ...] | None = None
    per_layer: bool = False
    reference: Float[Tensor, "n_layers d_model"] | None = None
    skip_first: bool = False

    def __post_init__(self) -> None:
        rows = self.directions.reshape(-1, self.directions.shape[-1]).shape[0]
        if self.per_layer and (self.layers is None or len(self.layers) != rows):
            raise ValueError(
                f"a per-layer Ablate needs one direction per layer: got {rows} directions "
                f"for layers {self.layers}"
            )
        ref = self.reference
        if ref is not None and (ref.ndim != 2 or ref.shape[-1] != self.directions.shape[-1]):
            raise ValueError(f"reference must be [n_layers, d_model], got {tuple(ref.shape)}")

    def basis(self) -> Float[Tensor, "d_model k"]:
        """An orthonormal basis of the span of ``directions`` (not for per-layer ablation)."""
        if self.per_layer:
            raise ValueError("a per-layer Ablate has one direction per layer, not one span")
        return _orthonormal(self.directions)


Intervention = Steer | Ablate


def _orthonormal(directions: Tensor) -> Float[Tensor, "d_model k"]:
    d = directions.reshape(-1, directions.shape[-1]).T.to(torch.float32)
    if not torch.isfinite(d).all() or (d.norm(dim=0) == 0).any():
        raise ValueError("ablation directions must be finite and non-zero")
    q, r = cast(tuple[Tensor, Tensor], torch.linalg.qr(d))
    if (r.diagonal().abs() < 1e-6 * r.diagonal().abs().max()).any():
        raise ValueError("ablation directions are linearly dependent")
    return q


def steer(
    directions: DirectionSet,
    layers: Sequence[int] | int,
    scale: float,
    positions: Literal["all", "generated"] = "all",
) -> Steer:
    """Steer with ``directions`` at ``layers``, each layer with its own vector.

    Args:
        directions: A set holding a non-zero vector for every layer in ``layers``.
        layers: One layer or several.
        scale: The multiple of each vector to add (vectors are not normalized first).
        positions: ``"all"`` positions, or only ``"generated"`` ones (needs ``generate``).

    Returns:
        A ``Steer`` to pass to ``applied`` or ``generate``.

    Examples:
        >>> tokens = model.to_tokens("Hello")
        >>> with applied(model, [steer(em_dir, layers=[12], scale=4.0)]):
        ...     logits = model(tokens)
        >>> logits.shape  # [batch, pos, d_vocab]
        torch.Size([1, ...])
    """
    layers = [layers] if isinstance(layers, int) else list(layers)
    if not math.isfinite(scale):
        raise ValueError(f"the steering scale must be a finite number, not {scale}")
    directions.check_nonzero(layers, "steer")
    vecs = torch.stack([directions.at(layer) for layer in layers])
    return Steer(vecs, tuple(layers), float(scale), positions, directions.hook)


def ablate(
    direction: DirectionSet | Tensor,
    layer: int | None = None,
    layers: Sequence[int] | None = None,
    reference: Tensor | None = None,
    skip_first: bool = False,
) -> Ablate:
    """Directional ablation of one direction (or a span), everywhere or layer by layer.

    Zero-ablation (no ``reference``) moves every token whose projection is far from 0 (on
    SmolLM2, ordinary tokens sit at -9 to -13 on the layer-15 EM direction): prefer a
    ``reference`` and ``skip_first=True``.

    Args:
        direction: A tensor ``[d_model]`` or ``[k, d_model]`` (ablate its span), or a set.
        layer: With a set, the layer whose direction to ablate (at every layer, or at
            ``layers``).
        layers: Where to ablate (default: every layer). With a set and no ``layer``: each
            listed layer's own direction, at that layer only.
        reference: Mean block inputs ``[n_layers, d_model]`` of the ablated layers (all of
            them if ``layers`` is None), from ``reference_means``: ablate to their projection.
        skip_first: Leave position 0 (BOS / attention sink) unchanged.

    Returns:
        One ``Ablate`` to pass to ``applied``, ``generate`` or (every layer) ``orthogonalize``.

    Examples:
        >>> everywhere = ablate(em_dir, layer=15)  # L15's direction at every layer
        >>> early = ablate(em_dir, layer=15, layers=[3, 4])  # L15's direction at 3 and 4
        >>> layerwise = ablate(em_dir, layers=[10, 12])  # L10's at 10, L12's at 12
        >>> from emlens.core.ablation import reference_means, reference_rows
        >>> rows = reference_rows(model.tokenizer, ["Hello there.", "What is 2+2?"])
        >>> ref = reference_means(model, rows, [15])
        >>> to_mean = ablate(em_dir, layers=[15], reference=ref, skip_first=True)
    """
    where = None if layers is None else tuple(int(ly) for ly in layers)
    if where == ():
        raise ValueError("layers is empty: give the layers to ablate at, or None for all")
    ref = None if reference is None else reference.float()
    if isinstance(direction, DirectionSet):
        a = _ablate_set(direction, layer, where)
        return Ablate(a.directions, a.layers, a.per_layer, ref, skip_first)
    if layer is not None:
        raise ValueError("layer= picks a DirectionSet's direction; this is a tensor")
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError("ablation direction must be finite and non-zero")
    return Ablate(direction.reshape(-1, direction.shape[-1]).float(), where, False, ref, skip_first)


def _ablate_set(ds: DirectionSet, layer: int | None, where: tuple[int, ...] | None) -> Ablate:
    """``ablate`` for a direction set: one layer's direction, or each layer's own."""
    if layer is not None:
        ds.check_nonzero([layer], "ablate")
        return Ablate(ds.at(layer)[None], where)
    if where is None:
        raise ValueError(
            "give layer= (that layer's direction, ablated at every layer or at layers=) "
            "or layers= (each layer's own direction, at that layer only)"
        )
    ds.check_nonzero(where, "ablate")
    return Ablate(torch.stack([ds.at(ly) for ly in where]), where, per_layer=True)


def _like(t: Tensor, act: Tensor, cache: dict[tuple[torch.device, torch.dtype], Tensor]) -> Tensor:
    """``t`` on ``act``'s device and in its dtype, converted once per (device, dtype): the
    layers of a model split over GPUs see activations on different devices."""
    key = (act.device, act.dtype)
    if key not in cache:
        cache[key] = t.to(act.device, act.dtype)
    return cache[key]


def check_width(model: TransformerBridge, v: Tensor) -> None:
    """Raise unless the intervention vectors ``v`` are as wide as the model's stream."""
    if v.shape[-1] != model.cfg.d_model:
        raise ValueError(f"intervention width {v.shape[-1]} != model d_model {model.cfg.d_model}")


def _adder(add: Tensor, prompt_len: int | None) -> HookFn:
    """A hook adding ``add`` at every position, or (``prompt_len`` set) after the prompt."""
    seen = {"end": 0}
    cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def fn(act: Tensor, **_: object) -> Tensor:
        vec = _like(add, act, cache)
        if prompt_len is None:
            return act + vec
        # A multi-token call starts at position 0 (the prompt, or a run without KV cache);
        # a one-token call continues after the previous one (KV cache).
        start = 0 if act.shape[1] > 1 else seen["end"]
        seen["end"] = start + act.shape[1]
        pos = torch.arange(start, seen["end"], device=act.device)
        return act + (pos >= prompt_len)[None, :, None] * vec

    return fn


def _steer_hooks(model: TransformerBridge, s: Steer, prompt_len: int | None) -> list[Hook]:
    check_width(model, s.vectors)
    check_layers(model, s.layers)
    if s.positions == "generated" and prompt_len is None:
        raise ValueError("positions='generated' needs the prompt length (use emlens.generate)")
    start = prompt_len if s.positions == "generated" else None
    return [
        (s.hook.format(layer=layer), _adder((s.scale * v).float(), start))
        for v, layer in zip(s.vectors, s.layers, strict=True)
    ]


def _ablate_hooks(model: TransformerBridge, a: Ablate) -> list[Hook]:
    check_width(model, a.directions)
    layers = check_layers(model, a.layers)
    qs = [_orthonormal(r) for r in a.directions] if a.per_layer else [a.basis()] * len(layers)
    refs: list[Tensor | None] = [None] * len(layers)
    if a.reference is not None:
        if a.reference.shape[0] != len(layers):
            raise ValueError(f"reference has {a.reference.shape[0]} rows for layers {layers}")
        refs = list(a.reference)
    out: list[Hook] = []
    for layer, q, ref in zip(layers, qs, refs, strict=True):  # writers add nothing along q
        out.append((f"blocks.{layer}.hook_resid_pre", clamp(q, ref, a.skip_first)))
        out += [(name, clamp(q, None, a.skip_first)) for name in writer_hooks(model, layer)]
    return out


def hooks_for(
    model: TransformerBridge, interventions: Sequence[Intervention], prompt_len: int | None = None
) -> list[Hook]:
    """The (hook name, function) pairs that carry out ``interventions`` on ``model``."""
    out: list[Hook] = []
    for iv in interventions:
        if isinstance(iv, Steer):
            out += _steer_hooks(model, iv, prompt_len)
        elif isinstance(iv, Ablate):
            out += _ablate_hooks(model, iv)
        else:
            raise TypeError(f"not an intervention: {iv!r} (expected Steer or Ablate)")
    return out


@contextlib.contextmanager
def applied(
    model: TransformerBridge,
    interventions: Sequence[Intervention],
    prompt_len: int | None = None,
) -> Iterator[TransformerBridge]:
    """Apply ``interventions`` inside the block; hooks are removed on exit, also on errors.

    Args:
        model: The model to intervene on (changed only inside the block).
        interventions: ``Steer`` and ``Ablate`` specs, applied together.
        prompt_len: The padded prompt length, for steering at generated positions only.

    Returns:
        A context manager yielding ``model`` with the hooks installed.

    Examples:
        >>> tokens = model.to_tokens("Hello")
        >>> with applied(model, [steer(em_dir, layers=[12], scale=4.0)]):
        ...     steered = model(tokens)
        >>> torch.equal(steered, model(tokens))  # the hooks are gone after the block
        False
    """
    # a forward pass whose activations turn inf/NaN stops, naming the layer and scale
    hooks = hooks_for(model, interventions, prompt_len) + finite_guard(model, interventions)
    with model.hooks(fwd_hooks=hooks):
        yield model
