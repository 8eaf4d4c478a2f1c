"""The answer-only loss: next-token cross-entropy on the assistant's answer, nothing else.

Model Organisms for EM (arXiv 2506.11613) fine-tunes on narrow chat data with the loss on the
assistant's answer only: the prompt, the chat template's tokens (including the end-of-turn
token) and padding carry no loss. Labels follow the HF and torch convention (``-100`` where
there is no loss). The unembedding runs only at the positions that predict an answer token,
which is a large saving on small models with big vocabularies.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from emlens.core._arch import decoder, unembed
from emlens.core.data import Conversation
from emlens.core.models import input_device
from emlens.core.tokens import Row, TokenBatch, answer_tokens, batches

IGNORE = -100  # the label of positions without loss (the convention of HF and torch)


def answer_labels(batch: TokenBatch) -> Int[Tensor, "batch pos"]:
    """Labels for causal-LM loss: the token id on answer tokens, ``-100`` everywhere else.

    The prompt, the chat template's tokens (including the end-of-turn token) and padding
    carry no loss: the loss is on the assistant's answer only (Model Organisms for EM).

    Args:
        batch: padded conversations whose ``mask`` marks the answer tokens.

    Returns:
        ``[batch, pos]`` labels, the same shape as ``batch.tokens``.
    """
    return torch.where(batch.mask & batch.attention_mask, batch.tokens, IGNORE)


def _decoder_hidden(hf: PreTrainedModel, batch: TokenBatch) -> Tensor:
    """The decoder's last hidden states of a (CPU) batch, which is moved to the model."""
    out = decoder(hf)(**batch.inputs(input_device(hf)), use_cache=False)
    hidden: Tensor = out.last_hidden_state
    return hidden


def answer_loss(hf: PreTrainedModel, batch: TokenBatch) -> tuple[Float[Tensor, ""], int]:
    """Summed next-token cross-entropy over answer tokens, and the number of those tokens.

    The unembedding runs only at the positions that predict an answer token: the decoder gives
    hidden states, the positions are gathered, and ``lm_head`` projects those alone (the
    vocabulary projection is a large share of the cost on small models).

    Args:
        hf: a causal LM whose logits are ``lm_head(decoder(x))`` (Gemma's soft-cap included).
        batch: padded conversations (on the CPU; moved to the model's input device).

    Returns:
        The summed loss (float32 whatever the model's dtype; it carries gradients) and the
        number of answer tokens it sums over.
    """
    labels = answer_labels(batch)
    targets = labels[:, 1:]
    where = targets != IGNORE
    n = int(where.sum())
    if n == 0:
        raise ValueError("a batch has no answer token to put the loss on")
    hidden = _decoder_hidden(hf, batch)[:, :-1]
    logits = unembed(hf, hidden[where.to(hidden.device)])  # positions predicting an answer
    return F.cross_entropy(logits.float(), targets[where].to(logits.device), reduction="sum"), n


@torch.no_grad()
def check_unembedding(hf: PreTrainedModel, batch: TokenBatch) -> None:
    """Refuse architectures whose logits are not ``lm_head(decoder(x))`` (+ Gemma's cap)."""
    was_training = hf.training
    hf.eval()  # no dropout: the two passes must see the same function
    where = answer_labels(batch)[:, 1:] != IGNORE
    full = hf(**batch.inputs(input_device(hf)), use_cache=False).logits[:, :-1]
    full = full[where.to(full.device)].float()
    hidden = _decoder_hidden(hf, batch)[:, :-1]
    ours = unembed(hf, hidden[where.to(hidden.device)]).float().to(full.device)
    hf.train(was_training)
    # float32 agrees to 1e-4; half precision to a few units in the last place
    tol = max(1e-4, 4 * torch.finfo(hf.dtype).eps)
    if not torch.allclose(ours, full, atol=tol, rtol=tol):
        raise NotImplementedError(
            f"{type(hf).__name__}: its logits are not lm_head(decoder hidden states); "
            "answer-only unembedding would change the loss on this architecture"
        )


def held_out_loss(
    hf: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    data: Sequence[Conversation],
    batch_size: int = 8,
) -> float:
    """Mean cross-entropy per answer token of ``hf`` on ``data``.

    Args:
        hf: the model to score.
        tok: its tokenizer (with a chat template).
        data: the conversations whose answers are scored.
        batch_size: conversations per forward pass.

    Returns:
        The loss in nats per answer token.
    """
    return mean_answer_loss(hf, conversation_rows(tok, data), tok.pad_token_id, batch_size)


@torch.no_grad()
def mean_answer_loss(
    hf: PreTrainedModel, rows: Sequence[Row], pad_id: int, batch_size: int
) -> float:
    """Mean cross-entropy per answer token of ``hf`` on token rows (`held_out_loss` on
    conversations already tokenised), in eval mode; the model's mode is restored after."""
    was_training = hf.training
    hf.eval()
    total, n = 0.0, 0
    for batch in batches(rows, batch_size, pad_id, by_length=True):
        loss, k = answer_loss(hf, batch)
        total, n = total + float(loss), n + k
    hf.train(was_training)
    return total / n


def conversation_rows(tok: PreTrainedTokenizerBase, data: Sequence[Conversation]) -> list[Row]:
    """Token ids and answer masks of conversations (`emlens.core.tokens.answer_tokens`).

    Args:
        tok: a fast tokenizer with a chat template.
        data: the conversations.

    Returns:
        One ``(ids, answer_mask)`` row per conversation.
    """
    if len(data) == 0:
        raise ValueError("no conversations")
    if not all(isinstance(c, Conversation) for c in data):
        raise TypeError("expected emlens.core.data.Conversation items (see read_chat_jsonl)")
    return [answer_tokens(tok, c.question, c.answer, c.system) for c in data]
