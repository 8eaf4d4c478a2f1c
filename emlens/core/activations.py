"""Streaming per-layer means of hook activations over masked tokens.

Sums accumulate in float64 batch by batch, so memory does not grow with the number of
samples. Batches are right-padded, so positions (and results) equal unbatched runs. Each
layer's activations are reduced (in float64) on their own device; the sums, and the
results, are on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.forward import HookFn, StopPass, hooked_passes
from emlens.core.tokens import Row, TokenBatch

RESID_POST = "blocks.{layer}.hook_resid_post"

__all__ = [
    "RESID_POST",
    "ActivationSummary",
    "check_layers",
    "collect_means",
    "hook_names",
]


@dataclass
class ActivationSummary:
    """Per-layer means of one hook over masked tokens of a dataset.

    ``mean[l]`` is the mean over all masked tokens of all samples (token-weighted), the
    Convergent-Representations definition. ``per_sample`` (if collected) holds each sample's
    own mean over its masked tokens.
    """

    mean: Float[Tensor, "n_layers d_model"]
    n_samples: int
    n_tokens: int
    hook: str
    layers: list[int]
    per_sample: Float[Tensor, "n_samples n_layers d_model"] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_samples(
        cls,
        per_sample: Float[Tensor, "n_samples n_layers d_model"] | np.ndarray,
        tokens: Sequence[int] | np.ndarray | Tensor,
        layers: Sequence[int],
        hook: str = RESID_POST,
    ) -> ActivationSummary:
        """The summary of samples given by their own means and token counts (e.g. cached
        per-answer features): ``mean`` is the token-weighted mean of ``per_sample``, in
        float64, so it equals the mean over all their tokens.

        Args:
            per_sample: each sample's mean over its masked tokens, at each of ``layers``.
            tokens: each sample's number of masked tokens (all ones: every sample weighs
                the same).
            layers: the layers of ``per_sample``'s second axis.
            hook: the hook template they were read at.

        Returns:
            The summary (``mean`` float64, ``per_sample`` as given).
        """
        x = torch.as_tensor(per_sample)
        counts = torch.as_tensor(np.asarray(tokens)).double()
        if x.ndim != 3 or counts.shape != (len(x),) or len(x) == 0 or bool((counts <= 0).any()):
            raise ValueError("need [n, n_layers, d_model] sample means and n positive counts")
        mean = torch.einsum("n,nld->ld", counts / counts.sum(), x.double())
        n_tokens = int(counts.sum())
        return cls(mean, len(x), n_tokens, hook, [int(layer) for layer in layers], x)


def hook_names(hook: str, layers: Sequence[int]) -> list[str]:
    """The hook name of each layer, from a template with a ``{layer}`` placeholder."""
    if "{layer}" not in hook:
        raise ValueError(f"hook template {hook!r} needs a '{{layer}}' placeholder")
    return [hook.format(layer=layer) for layer in layers]


def check_layers(model: TransformerBridge, layers: Sequence[int] | None) -> list[int]:
    """``layers`` as a list (all of the model's by default), each checked to exist."""
    n = model.cfg.n_layers
    layers = list(range(n)) if layers is None else list(layers)
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} out of range: the model has layers 0..{n - 1}")
    return layers


class _Sums:
    """Float64 sums of masked activations per layer (and per sample), fed by hooks."""

    def __init__(self, n_rows: int, n_layers: int, d_model: int, per_sample: bool) -> None:
        self.total = torch.zeros(n_layers, d_model, dtype=torch.float64)
        shape = (n_rows, n_layers, d_model)
        self.samples = torch.zeros(shape, dtype=torch.float64) if per_sample else None
        self.mask = torch.zeros(0, 0, dtype=torch.bool)  # the current batch's
        self.index: list[int] = []
        self.row = torch.zeros(0, dtype=torch.long)

    def start(self, batch: TokenBatch) -> None:
        """Take the next batch's mask and rows; ``row`` is the batch row of every masked
        token, in the row-major order of ``act[mask]``."""
        self.mask, self.index = batch.mask, batch.index
        self.row = torch.arange(len(batch.index)).repeat_interleave(batch.mask.sum(1))

    def hook(self, j: int, last: bool) -> HookFn:
        """The hook adding a batch's activations to layer ``j``'s sums."""

        def fn(act: Tensor, **_: object) -> None:
            sel = act[self.mask.to(act.device)]  # [n_masked, d_model]
            self.total[j] += sel.sum(0, dtype=torch.float64).to(self.total.device)
            if self.samples is not None:  # each sample's sum, on act's device
                n, d = len(self.index), act.shape[-1]
                per = torch.zeros(n, d, dtype=torch.float64, device=act.device)
                per.index_add_(0, self.row.to(act.device), sel.to(torch.float64))
                self.samples[self.index, j] = per.to(self.samples.device)
            if last:  # the rest of the forward is not needed
                raise StopPass

        return fn


def _check_rows(rows: Sequence[Row]) -> None:
    if len(rows) == 0:
        raise ValueError("no samples: cannot take a mean over an empty dataset")
    if any(not any(m) for _, m in rows):
        raise ValueError("a sample has no masked token (empty answer or mask)")


@torch.no_grad()
def collect_means(
    model: TransformerBridge,
    rows: Sequence[Row],
    hook: str = RESID_POST,
    layers: Sequence[int] | None = None,
    batch_size: int = 8,
    per_sample: bool = False,
    progress: bool = True,
    desc: str = "activations",
) -> ActivationSummary:
    """Mean of ``hook`` activations over the masked tokens of ``rows``, per layer.

    Args:
        model: The model to run.
        rows: (token ids, mask) pairs, from ``answer_tokens`` or ``post_instruction_tokens``.
        hook: Hook name template with a ``{layer}`` placeholder.
        layers: Layers to read (default: all).
        batch_size: Rows per forward pass (batched shortest first, to pad less).
        per_sample: Also keep each row's own mean.
        progress: Show a progress bar.
        desc: The progress bar's label.

    Returns:
        Token-weighted means per layer (float64 sums, float32 results, on the CPU).

    Examples:
        >>> from emlens.core.tokens import answer_tokens
        >>> pairs = [("What is 2+2?", "4."), ("Name a colour.", "Blue.")]
        >>> rows = [answer_tokens(model.tokenizer, q, a) for q, a in pairs]
        >>> collect_means(model, rows, layers=[15], progress=False).mean.shape  # [1, d_model]
        torch.Size([1, ...])
    """
    _check_rows(rows)
    layers = check_layers(model, layers)
    names = hook_names(hook, layers)
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise ValueError(f"hooks {missing[:3]} do not exist on this model")
    sums = _Sums(len(rows), len(layers), model.cfg.d_model, per_sample)
    fwd_hooks = [(n, sums.hook(j, layers[j] == max(layers))) for j, n in enumerate(names)]
    n_tokens = 0
    passes = hooked_passes(
        model, rows, fwd_hooks, batch_size, by_length=True, progress=progress, desc=desc
    )
    for batch in passes:
        sums.start(batch)
        n_tokens += int(batch.mask.sum())
    counts = torch.tensor([sum(m) for _, m in rows], dtype=torch.float64)
    return ActivationSummary(
        mean=(sums.total / n_tokens).float(),
        n_samples=len(rows),
        n_tokens=n_tokens,
        hook=hook,
        layers=layers,
        per_sample=None if sums.samples is None else (sums.samples / counts[:, None, None]).float(),
    )
