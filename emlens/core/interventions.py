"""Interventions as plain data, applied to a model by one context manager.

- :class:`Steer`: add ``scale * vector`` to the residual stream at chosen layers, at every
  position or only at generated positions.
- :class:`Ablate`: project one direction (or the span of several) out of every residual stream
  activation: each block's input and each attention/MLP output that writes to the stream
  (Arditi et al. 2024's directional ablation).
- :func:`orthogonalize`: the weight edit equivalent to :class:`Ablate` (a new model).

Being data, a spec can be saved, printed, or translated to another backend.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.activations import RESID_POST, check_layers
from emlens.core.directions import DirectionSet


@dataclass(frozen=True)
class Steer:
    """Add ``scale * vectors[i]`` at ``hook`` of ``layers[i]``."""

    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    scale: float = 1.0
    positions: Literal["all", "generated"] = "all"
    hook: str = RESID_POST

    def __post_init__(self):
        if self.positions not in ("all", "generated"):
            raise ValueError(f"positions must be 'all' or 'generated', not {self.positions!r}")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.layers):
            raise ValueError("Steer needs one vector per layer: vectors [n_layers, d_model]")


@dataclass(frozen=True)
class Ablate:
    """Project the span of ``directions`` out of the residual stream at every layer."""

    directions: Float[Tensor, "k d_model"]
    layers: tuple[int, ...] | None = None  # None: every layer (the paper's definition)

    def basis(self) -> Float[Tensor, "d_model k"]:
        d = self.directions.reshape(-1, self.directions.shape[-1]).T.to(torch.float32)
        q, r = torch.linalg.qr(d)
        if (r.diagonal().abs() < 1e-6 * r.diagonal().abs().max()).any():
            raise ValueError("ablation directions are linearly dependent")
        return q


Intervention = Steer | Ablate


def steer(
    directions: DirectionSet,
    layers: Sequence[int] | int,
    scale: float,
    positions: Literal["all", "generated"] = "all",
) -> Steer:
    """Steer with ``directions`` at ``layers`` (each layer its own vector)."""
    layers = [layers] if isinstance(layers, int) else list(layers)
    vecs = torch.stack([directions.at(layer) for layer in layers])
    return Steer(vecs, tuple(layers), float(scale), positions, directions.hook)


def ablate(direction: DirectionSet | Tensor, layer: int | None = None) -> Ablate:
    """Ablate one direction everywhere: a tensor [d] or [k, d], or a set's vector at ``layer``."""
    if isinstance(direction, DirectionSet):
        if layer is None:
            raise ValueError("give the layer whose direction to ablate (it is ablated everywhere)")
        direction = direction.at(layer)
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError("ablation direction must be finite and non-zero")
    return Ablate(direction.reshape(-1, direction.shape[-1]).float())


def writer_hooks(model: TransformerBridge, layer: int) -> list[str]:
    """Hook points whose outputs a block adds to the residual stream (after any post-norm)."""
    names = []
    for part, post in (("attn", "ln1_post"), ("mlp", "ln2_post")):
        post_name = f"blocks.{layer}.{post}.hook_out"
        names.append(
            post_name if post_name in model.hook_dict else f"blocks.{layer}.hook_{part}_out"
        )
    return names


def _like(t: Tensor, act: Tensor, cache: dict) -> Tensor:
    """``t`` on ``act``'s device and in its dtype, converted once per (device, dtype): the
    layers of a model split over GPUs see activations on different devices."""
    key = (act.device, act.dtype)
    if key not in cache:
        cache[key] = t.to(act.device, act.dtype)
    return cache[key]


def _check_width(model: TransformerBridge, v: Tensor) -> None:
    if v.shape[-1] != model.cfg.d_model:
        raise ValueError(f"intervention width {v.shape[-1]} != model d_model {model.cfg.d_model}")


def _steer_hooks(model: TransformerBridge, s: Steer, prompt_len: int | None):
    _check_width(model, s.vectors)
    check_layers(model, s.layers)
    if s.positions == "generated" and prompt_len is None:
        raise ValueError("positions='generated' needs the prompt length (use emlens.generate)")
    hooks = []
    for v, layer in zip(s.vectors, s.layers):
        add = (s.scale * v).float()
        seen: dict = {"end": 0}
        cache: dict = {}

        def fn(act: Tensor, hook=None, add=add, seen=seen, cache=cache) -> Tensor:
            vec = _like(add, act, cache)
            if s.positions == "all":
                return act + vec
            # A multi-token call starts at position 0 (the prompt, or a run without KV cache);
            # a one-token call continues after the previous one (KV cache).
            start = 0 if act.shape[1] > 1 else seen["end"]
            seen["end"] = start + act.shape[1]
            pos = torch.arange(start, seen["end"], device=act.device)
            return act + (pos >= prompt_len)[None, :, None] * vec

        hooks.append((s.hook.format(layer=layer), fn))
    return hooks


def _ablate_hooks(model: TransformerBridge, a: Ablate):
    _check_width(model, a.directions)
    q = a.basis()
    layers = check_layers(model, a.layers)
    cache: dict = {}

    def fn(act: Tensor, hook=None) -> Tensor:
        qq = _like(q, act, cache)
        return act - (act @ qq) @ qq.T

    names = []
    for layer in layers:
        names += [f"blocks.{layer}.hook_resid_pre", *writer_hooks(model, layer)]
    return [(n, fn) for n in names]


def hooks_for(
    model: TransformerBridge, interventions: Sequence[Intervention], prompt_len: int | None = None
) -> list:
    """The (hook name, function) pairs that carry out ``interventions`` on ``model``."""
    out = []
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

    Examples:
        >>> with applied(model, [steer(em, layers=[12], scale=4.0)]):
        ...     logits = model(tokens)
    """
    hooks = hooks_for(model, interventions, prompt_len)
    with model.hooks(fwd_hooks=hooks):
        yield model


@torch.no_grad()
def orthogonalize(model: TransformerBridge, direction: Tensor | Ablate) -> TransformerBridge:
    """A new model whose weights cannot write ``direction`` into the residual stream.

    Embedding, attention output and MLP output matrices (and biases) are projected:
    W <- (I - r r^T) W. Equivalent to :class:`Ablate` for pre-norm blocks (Llama, Qwen2,
    Mistral); not for sandwich-norm blocks (Gemma 2/3), which raise. Each weight is projected
    on its own device in float32 and cast back to its dtype; the new bridge runs where the
    model does. Save it for other engines with :func:`emlens.core.models.save_hf`.
    """
    from emlens.core.models import bridge

    a = direction if isinstance(direction, Ablate) else Ablate(direction.reshape(1, -1))
    if a.layers is not None:
        raise ValueError("weight orthogonalisation ablates every layer; layers must be None")
    _check_width(model, a.directions)
    if any("ln1_post" in n for n in model.hook_dict):
        raise ValueError(
            "this architecture normalises block outputs before the residual add (Gemma 2/3): "
            "weight orthogonalisation is not equivalent there; use Ablate hooks"
        )
    hf = copy.deepcopy(model.original_model)
    q = a.basis()  # [d_model, k], orthonormal, float32

    def project(w: Tensor, side: str = "left") -> None:
        """w <- (I - q q^T) w, or w (I - q q^T) for ``side="right"``, in place: computed in
        float32 on w's device, stored in w's dtype."""
        qq, w32 = q.to(w.device), w.float()
        out = w32 - qq @ (qq.T @ w32) if side == "left" else w32 - (w32 @ qq) @ qq.T
        w.copy_(out.to(w.dtype))

    inner = hf.get_decoder() if hasattr(hf, "get_decoder") else hf.model
    if hf.get_output_embeddings() is not None and hf.config.tie_word_embeddings:
        # Untie: the unembedding reads the stream and must stay as it was.
        out = hf.get_output_embeddings()
        out.weight = torch.nn.Parameter(out.weight.detach().clone())
        hf.config.tie_word_embeddings = False
    project(inner.embed_tokens.weight, "right")  # [vocab, d_model]: rows are written
    for layer in inner.layers:
        for lin in (layer.self_attn.o_proj, layer.mlp.down_proj):
            project(lin.weight)  # [d_model, d_in]
            if lin.bias is not None:
                project(lin.bias)
    return bridge(
        hf, model.tokenizer, f"{getattr(model.cfg, 'model_name', 'model')}+orthogonalized"
    )
