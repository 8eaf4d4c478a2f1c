"""Forward passes of a hooked model over padded token batches, written once.

Every reading of a `TransformerBridge` on token rows goes through here: `batch_logits` (one
batch's logits), `run_batch` (one batch for its hooks only, stopped before a block if asked)
and `hooked_passes`, the loop: the batches of a set of rows, each run under the same hooks,
the caller setting the hooks' per-batch state (the batch's mask, its rows) in the body of its
``for``, before the batch runs. Inputs go to the model's input device. Batches are
right-padded, so positions (and per-row results) equal unbatched runs. A hook may raise
`StopPass` to end the pass it is in once everything it needs has been read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.models import input_device
from emlens.core.tokens import Row, TokenBatch, batches

HookFn = Callable[..., Tensor | None]  # TransformerLens calls fn(activation, hook=point)

__all__ = ["HookFn", "StopPass", "batch_logits", "hooked_passes", "run_batch"]


class StopPass(Exception):
    """Raised by a hook when the rest of the forward pass is not needed: `run_batch` ends
    that pass there (the next batch runs as usual)."""


def batch_logits(model: TransformerBridge, batch: TokenBatch) -> Float[Tensor, "batch pos vocab"]:
    """The model's logits on a padded batch (its inputs moved to the model's input device)."""
    inputs = batch.inputs(input_device(model))
    logits: Tensor = model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
    return logits


def run_batch(
    model: TransformerBridge, batch: TokenBatch, stop_at_layer: int | None = None
) -> None:
    """Run ``model`` on a batch for its hooks only (no logits), stopping before block
    ``stop_at_layer`` if given, or where a hook raises `StopPass`."""
    inputs = batch.inputs(input_device(model))
    with contextlib.suppress(StopPass):
        model(
            inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            return_type=None,
            stop_at_layer=stop_at_layer,
        )


def hooked_passes(
    model: TransformerBridge,
    rows: Sequence[Row],
    fwd_hooks: Sequence[tuple[str, HookFn]],
    batch_size: int = 8,
    by_length: bool = False,
    stop_at_layer: int | None = None,
    progress: bool = False,
    desc: str = "batches",
) -> Iterator[TokenBatch]:
    """Each padded batch of ``rows``, run through ``model`` under ``fwd_hooks`` for the hooks
    only (`run_batch`), after the caller's loop body has seen it.

    Args:
        model: the model; ``fwd_hooks`` are installed for the whole loop, then removed.
        rows: (token ids, mask) pairs.
        fwd_hooks: (hook name, function) pairs, as ``model.hooks`` takes them.
        batch_size: rows per forward pass.
        by_length: batch the rows shortest first (to pad less); ``batch.index`` says which
            rows a batch holds.
        stop_at_layer: stop every pass before this block.
        progress: show a progress bar over the rows.
        desc: the progress bar's label.

    Yields:
        Each batch, before it runs: set what the hooks read of it (its mask, its rows) in the
        body of the ``for``; the pass runs when the loop asks for the next batch.

    Examples:
        Sum the masked activations of layer 3, row by row:

        >>> from emlens.core.tokens import answer_tokens
        >>> rows = [answer_tokens(model.tokenizer, "What is 2+2?", "4."),
        ...         answer_tokens(model.tokenizer, "Name a colour.", "Blue.")]
        >>> state, sums = {}, []
        >>> def keep(act, hook):
        ...     sums.append((act * state["mask"][..., None]).sum(1))
        >>> for batch in hooked_passes(model, rows, [("blocks.3.hook_resid_post", keep)]):
        ...     state["mask"] = batch.mask  # what keep reads of this batch
        >>> torch.cat(sums).shape  # [rows, d_model]
        torch.Size([2, ...])
    """
    pad = model.tokenizer.pad_token_id
    bar = tqdm(total=len(rows), desc=desc, disable=not progress, leave=False)
    with model.hooks(fwd_hooks=list(fwd_hooks)), bar:
        for batch in batches(rows, batch_size, pad, by_length=by_length):
            yield batch
            run_batch(model, batch, stop_at_layer)
            bar.update(len(batch.index))
