"""Chat-template tokenisation and the token masks the papers average over.

- answer mask: the tokens of the assistant's answer in a (question, answer) conversation
  (Convergent Linear Representations of EM: directions are means over answer tokens);
- post-instruction mask: the last k template tokens after the user's instruction, up to the
  start of the assistant turn (Arditi et al. 2024, refusal direction).

``chat_template_kwargs`` are passed to ``apply_chat_template``, which hands them to the template:
``{"enable_thinking": False}`` is Qwen3's switch that closes an empty ``<think></think>`` block
in the prompt, so the model answers without reasoning first. The masks stay exactly on the answer
(or the template's suffix) whatever the template renders around it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import PreTrainedTokenizerBase

Row = tuple[list[int], list[bool]]  # token ids and the mask of positions to use
TemplateKwargs = Mapping[str, Any] | None  # chat-template variables: {"enable_thinking": False}


@dataclass
class TokenBatch:
    """Padded token ids with the attention mask and the mask of positions to use.

    ``index[i]`` is the position of batch row ``i`` in the rows it was cut from.
    """

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Bool[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    index: list[int] = field(default_factory=list)

    def inputs(self, device: torch.device | str) -> dict[str, Tensor]:
        """``input_ids`` and a long ``attention_mask`` on ``device``, as models take them."""
        return {
            "input_ids": self.tokens.to(device),
            "attention_mask": self.attention_mask.long().to(device),
        }


def _chat_text(
    tok: PreTrainedTokenizerBase,
    system: str | None,
    *turns: tuple[str, str],
    prompt: bool,
    kwargs: TemplateKwargs = None,
) -> str:
    """The chat-template text of (role, content) turns after an optional system prompt;
    ``prompt`` adds the start of the assistant's turn; ``kwargs`` go to the template."""
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": role, "content": content} for role, content in turns]
    text = tok.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt, **dict(kwargs or {})
    )
    return cast(str, text)  # tokenize=False: always text


def chat_prompt(
    tok: PreTrainedTokenizerBase,
    question: str,
    system: str | None = None,
    chat_template_kwargs: TemplateKwargs = None,
) -> str:
    r"""The chat-template text of a user turn followed by the start of the assistant's turn.

    Args:
        tok: a tokenizer with a chat template.
        question: the user turn.
        system: an optional system prompt.
        chat_template_kwargs: variables for the template, e.g. ``{"enable_thinking": False}``.

    Returns:
        The prompt text (its special tokens written out).

    Examples:
        >>> chat_prompt(model.tokenizer, "Hi")  # ChatML, as SmolLM2 and Qwen2 write it
        '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'

        Qwen3's tokenizer comes from the Hugging Face hub, so this one is not run here:

        >>> from transformers import AutoTokenizer
        >>> qwen3_tok = AutoTokenizer.from_pretrained("Qwen/Qwen3-8B")  # doctest: +SKIP
        >>> kwargs = {"enable_thinking": False}
        >>> chat_prompt(qwen3_tok, "Hi", chat_template_kwargs=kwargs)  # doctest: +SKIP
        '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n'
    """
    return _chat_text(tok, system, ("user", question), prompt=True, kwargs=chat_template_kwargs)


def _encode(tok: PreTrainedTokenizerBase, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    if not tok.is_fast:
        raise TypeError("emlens needs a fast (Rust) tokenizer for offset mappings")
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"]


def answer_tokens(
    tok: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    system: str | None = None,
    chat_template_kwargs: TemplateKwargs = None,
) -> tuple[list[int], list[bool]]:
    """Token ids of the full conversation and a mask that is True exactly on the answer
    (``chat_template_kwargs`` as in `chat_prompt`)."""
    answer = answer.strip()
    if not answer:
        raise ValueError(f"empty answer to question {question[:60]!r}")
    turns = ("user", question), ("assistant", answer)
    text = _chat_text(tok, system, *turns, prompt=False, kwargs=chat_template_kwargs)
    start = text.rfind(answer)  # the assistant turn is last, so its answer is the last match
    if start < 0:
        raise ValueError("the chat template changed the answer text; cannot locate its tokens")
    end = start + len(answer)
    ids, offsets = _encode(tok, text)
    mask = [s >= start and e <= end and e > s for s, e in offsets]
    return ids, mask


def post_instruction_tokens(
    tok: PreTrainedTokenizerBase,
    instruction: str,
    k: int | None = None,
    system: str | None = None,
    chat_template_kwargs: TemplateKwargs = None,
) -> tuple[list[int], list[bool]]:
    """Token ids of a chat prompt and a mask on its last ``k`` post-instruction positions.

    ``k=None`` takes every template token after the instruction text (with Qwen3's
    ``{"enable_thinking": False}``, the empty think block too); ``chat_template_kwargs`` as in
    `chat_prompt`.
    """
    instruction = instruction.strip()
    if not instruction:
        raise ValueError("empty instruction")
    text = chat_prompt(tok, instruction, system, chat_template_kwargs)
    end = text.rfind(instruction) + len(instruction)
    ids, offsets = _encode(tok, text)
    n_post = sum(s >= end for s, _ in offsets)
    if n_post == 0:
        raise ValueError("the chat template adds no tokens after the instruction")
    k = n_post if k is None else k
    if not 1 <= k <= n_post:
        raise ValueError(f"k={k} post-instruction positions asked, the template has {n_post}")
    mask = [i >= len(ids) - k for i in range(len(ids))]
    return ids, mask


def pad_batch(rows: Sequence[Row], pad_id: int, side: str = "right") -> TokenBatch:
    """Pad (ids, mask) rows into one batch; right padding keeps positions as unbatched."""
    if not rows:
        raise ValueError("empty batch")
    width = max(len(ids) for ids, _ in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros(len(rows), width, dtype=torch.bool)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, (ids, m) in enumerate(rows):
        sl = slice(0, len(ids)) if side == "right" else slice(width - len(ids), width)
        tokens[i, sl] = torch.tensor(ids)
        attn[i, sl] = True
        mask[i, sl] = torch.tensor(m, dtype=torch.bool)
    return TokenBatch(tokens, attn, mask, list(range(len(rows))))


def batches(
    rows: Sequence[Row],
    batch_size: int,
    pad_id: int,
    side: Literal["left", "right"] = "right",
    by_length: bool = False,
) -> Iterator[TokenBatch]:
    """Padded batches of ``rows``, in order or (``by_length``) shortest first to pad less.

    Each batch's ``index`` says which rows it holds.

    Examples:
        >>> tok = model.tokenizer
        >>> rows = [answer_tokens(tok, "What is 2+2?", "4."), answer_tokens(tok, "Hi", "Hello.")]
        >>> for batch in batches(rows, 8, tok.pad_token_id, by_length=True):
        ...     x = batch.inputs("cpu")  # input_ids and attention_mask
        ...     logits = model(x["input_ids"], attention_mask=x["attention_mask"])
        >>> batch.index  # the shorter row first
        [1, 0]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    order = list(range(len(rows)))
    if by_length:
        order.sort(key=lambda i: len(rows[i][0]))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = pad_batch([rows[i] for i in idx], pad_id, side)
        batch.index = idx
        yield batch
