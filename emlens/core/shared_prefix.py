"""Forward passes that share a prefix: started at a block from a saved residual stream.

An intervention whose first hook is in block k leaves blocks 0..k-1 as they are, so a sweep
of interventions over the same inputs needs those blocks once: `saved_residuals` keeps the
residual stream entering each needed block from one plain pass (stopped after the last one),
and `logits_from` runs block k onwards from it. TransformerBridge's own ``start_at_layer``
still computes blocks 0..k-1 and throws their output away; `logits_from` skips them (each
returns its input unchanged, and block k swaps in the saved residual).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable

from jaxtyping import Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from emlens.core._arch import skipped_blocks
from emlens.core.forward import StopPass, batch_logits, run_batch
from emlens.core.tokens import TokenBatch

__all__ = ["first_block", "logits_from", "saved_residuals"]

_BLOCK = re.compile(r"blocks\.(\d+)\.")


def first_block(hook_names: Iterable[str]) -> int:
    """The lowest block any of ``hook_names`` is in: where a pass with those hooks may start.

    0 when there are no hooks or one is outside the blocks (the embedding, the final norm).
    """
    layers = [_BLOCK.match(name) for name in hook_names]
    if not layers or any(m is None for m in layers):
        return 0
    return min(int(m.group(1)) for m in layers if m is not None)


def saved_residuals(
    model: TransformerBridge, batch: TokenBatch, layers: Collection[int], logits: bool = False
) -> tuple[Float[Tensor, "batch pos vocab"] | None, dict[int, Float[Tensor, "batch pos d_model"]]]:
    """The residual stream entering each of ``layers`` in a plain pass over ``batch``.

    Args:
        model: the model (no hooks of yours should be active).
        batch: a padded batch.
        layers: the blocks whose input to keep.
        logits: run the whole pass and return its logits too; else stop after the last of
            ``layers``, and return None for the logits.

    Returns:
        The logits (or None), and block -> its input residual ``[batch, pos, d_model]``.
    """
    saved: dict[int, Tensor] = {}
    if not layers and not logits:
        return None, saved
    last = max(layers, default=-1)

    def keep(layer: int) -> Callable[..., None]:
        def fn(act: Tensor, **_: object) -> None:
            saved[layer] = act.detach()
            if layer == last and not logits:  # the rest of the plain pass is not needed
                raise StopPass

        return fn

    hooks = [(f"blocks.{k}.hook_resid_pre", keep(k)) for k in sorted(layers)]
    with model.hooks(fwd_hooks=hooks):
        if not logits:
            run_batch(model, batch)  # ended by StopPass after the last of ``layers``
            return None, saved
        return batch_logits(model, batch), saved


def logits_from(
    model: TransformerBridge,
    batch: TokenBatch,
    layer: int,
    residual: Float[Tensor, "batch pos d_model"],
) -> Float[Tensor, "batch pos vocab"]:
    """The logits of ``batch`` with the forward started at block ``layer`` from ``residual``.

    Hooks already installed on ``model`` fire as usual from block ``layer`` on; blocks below
    it do not run, so hooks there do not fire. Equal to the full pass when ``residual`` is the
    plain pass's input to block ``layer`` (`saved_residuals`) and nothing below is hooked.

    Examples:
        >>> from emlens.core.forward import batch_logits
        >>> from emlens.core.interventions import applied, steer
        >>> from emlens.core.tokens import answer_tokens, pad_batch
        >>> rows = [answer_tokens(model.tokenizer, "What is 2+2?", "4.")]
        >>> batch = pad_batch(rows, model.tokenizer.pad_token_id)
        >>> _, saved = saved_residuals(model, batch, [12])
        >>> with applied(model, [steer(em_dir, [12], 4.0)]):
        ...     logits = logits_from(model, batch, 12, saved[12])
        ...     full = batch_logits(model, batch)  # every block run
        >>> torch.allclose(logits, full, atol=1e-5)
        True
    """
    if not 0 <= layer < model.cfg.n_layers:
        n = model.cfg.n_layers
        raise ValueError(f"layer {layer} out of range: the model has layers 0..{n - 1}")
    mask = batch.attention_mask.to(residual.device)
    if residual.shape[:2] != mask.shape:
        raise ValueError(
            f"residual {tuple(residual.shape)} does not match the batch {tuple(mask.shape)}"
        )
    with skipped_blocks(model, layer):
        out: Tensor = model(residual, attention_mask=mask, start_at_layer=layer)
    return out
