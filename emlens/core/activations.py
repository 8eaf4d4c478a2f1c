"""Streaming per-layer means of hook activations over masked tokens.

Sums accumulate in float64 batch by batch, so memory does not grow with the number of
samples. Batches are right-padded, so positions (and results) equal unbatched runs. Each
layer's activations are reduced (in float64) on their own device; the sums, and the
results, are on the CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.models import input_device
from emlens.core.tokens import TokenBatch, pad_batch

RESID_POST = "blocks.{layer}.hook_resid_post"

Row = tuple[list[int], list[bool]]  # token ids and the mask of positions to average


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
    meta: dict = field(default_factory=dict)


def hook_names(hook: str, layers: Sequence[int]) -> list[str]:
    if "{layer}" not in hook:
        raise ValueError(f"hook template {hook!r} needs a '{{layer}}' placeholder")
    return [hook.format(layer=layer) for layer in layers]


def check_layers(model: TransformerBridge, layers: Sequence[int] | None) -> list[int]:
    n = model.cfg.n_layers
    layers = list(range(n)) if layers is None else list(layers)
    bad = [layer for layer in layers if not 0 <= layer < n]
    if bad or not layers:
        raise ValueError(f"layers {bad or layers} out of range: the model has layers 0..{n - 1}")
    return layers


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

    ``rows`` come from :func:`emlens.core.tokens.answer_tokens` or ``post_instruction_tokens``.
    Sorting by length keeps padding small; sums are float64.
    """
    if len(rows) == 0:
        raise ValueError("no samples: cannot take a mean over an empty dataset")
    if any(not any(m) for _, m in rows):
        raise ValueError("a sample has no masked token (empty answer or mask)")
    layers = check_layers(model, layers)
    names = hook_names(hook, layers)
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise ValueError(f"hooks {missing[:3]} do not exist on this model")
    d = model.cfg.d_model
    total = torch.zeros(len(layers), d, dtype=torch.float64)
    samples = torch.zeros(len(rows), len(layers), d, dtype=torch.float64) if per_sample else None
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    pad_id = model.tokenizer.pad_token_id
    device = input_device(model)
    state: dict = {}

    last = max(layers)

    class _Done(Exception):
        """Raised by the last hook: the rest of the forward (and the unembedding) is not needed."""

    def make_hook(j: int):
        def fn(act: Tensor, hook=None) -> None:
            sel = act[state["mask"].to(act.device)]  # [n_masked, d_model]
            total[j] += sel.sum(0, dtype=torch.float64).to(total.device)
            if samples is not None:  # each sample's sum, on act's device: [batch, d_model]
                per = torch.zeros(len(state["idx"]), d, dtype=torch.float64, device=act.device)
                per.index_add_(0, state["row"].to(act.device), sel.to(torch.float64))
                samples[state["idx"], j] = per.to(samples.device)
            if layers[j] == last:
                raise _Done

        return fn

    fwd_hooks = [(name, make_hook(j)) for j, name in enumerate(names)]
    counts = torch.tensor([sum(m) for _, m in rows], dtype=torch.float64)
    n_tokens = 0
    bar = tqdm(total=len(rows), desc=desc, disable=not progress, leave=False)
    with model.hooks(fwd_hooks=fwd_hooks):
        for b in range(0, len(rows), batch_size):
            idx = order[b : b + batch_size]
            batch: TokenBatch = pad_batch([rows[i] for i in idx], pad_id)
            state["mask"], state["idx"] = batch.mask, torch.tensor(idx)
            # the batch row of every masked token, row-major like act[mask]
            state["row"] = torch.arange(len(idx)).repeat_interleave(batch.mask.sum(1))
            n_tokens += int(batch.mask.sum())
            tokens, attention = batch.tokens.to(device), batch.attention_mask.long().to(device)
            try:
                model(tokens, attention_mask=attention, return_type=None)
            except _Done:
                pass
            bar.update(len(idx))
    bar.close()
    return ActivationSummary(
        mean=(total / n_tokens).float(),
        n_samples=len(rows),
        n_tokens=n_tokens,
        hook=hook,
        layers=layers,
        per_sample=None if samples is None else (samples / counts[:, None, None]).float(),
    )
