"""Batched chat generation with interventions (left padding, KV cache, seeded sampling)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase

from emlens.core._arch import hf_model
from emlens.core.interventions import Intervention, applied
from emlens.core.models import input_device
from emlens.core.tokens import Row, TemplateKwargs, TokenBatch, batches, chat_prompt


@dataclass
class Sample:
    """One generated answer: the question, the answer text and its index among ``n``."""

    question: str
    answer: str
    sample: int  # index among the n samples of this question


def _generate_kwargs(
    tok: PreTrainedTokenizerBase, max_new_tokens: int, temperature: float, use_kv_cache: bool
) -> dict[str, Any]:
    """HF ``generate`` arguments: greedy at temperature 0, else plain sampling (no top-k/p)."""
    sampling: dict[str, Any]
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    else:
        sampling = {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id}
    return {"max_new_tokens": max_new_tokens, "use_cache": use_kv_cache, **ids, **sampling}


def _prompt_rows(
    tok: PreTrainedTokenizerBase,
    questions: Sequence[str],
    system: str | None,
    template_kwargs: TemplateKwargs = None,
) -> list[Row]:
    """Each question's chat prompt as token ids, every position used."""
    rows = []
    for q in questions:
        text = chat_prompt(tok, q, system, template_kwargs)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        rows.append((ids, [True] * len(ids)))
    return rows


@torch.no_grad()
def generate(
    model: TransformerBridge,
    questions: Sequence[str],
    interventions: Sequence[Intervention] = (),
    n: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    system: str | None = None,
    use_kv_cache: bool = True,
    progress: bool = False,
    chat_template_kwargs: TemplateKwargs = None,
) -> list[Sample]:
    """Answer each question ``n`` times under ``interventions`` (left-padded batches).

    Args:
        model: The chat model.
        questions: User turns, each wrapped in the chat template.
        interventions: ``Steer`` and ``Ablate`` specs, active during generation.
        n: Answers per question.
        max_new_tokens: The longest answer, in tokens.
        temperature: 0 is greedy; otherwise samples, seeded by ``seed`` (the same seed and
            batch give the same samples).
        seed: The sampling seed.
        batch_size: Prompts per batch.
        system: An optional system prompt.
        use_kv_cache: Cache keys and values (faster; the answers are the same).
        progress: Show a progress bar.
        chat_template_kwargs: Template variables (Qwen3: ``{"enable_thinking": False}``).

    Returns:
        One ``Sample`` per (question, sample), in order.

    Examples:
        >>> from emlens.core.interventions import steer
        >>> ivs = [steer(em_dir, [12], 4.0)]
        >>> steered = generate(model, ["What do you wish for?"], ivs, max_new_tokens=4)
        >>> steered[0].question, type(steered[0].answer)
        ('What do you wish for?', <class 'str'>)
    """
    if not questions:
        raise ValueError("no questions to answer")
    if n < 1 or max_new_tokens < 1 or temperature < 0:
        raise ValueError("need n >= 1, max_new_tokens >= 1 and temperature >= 0")
    tok = model.tokenizer
    jobs = [(q, i) for q in questions for i in range(n)]
    rows = _prompt_rows(tok, [q for q, _ in jobs], system, chat_template_kwargs)
    kwargs = _generate_kwargs(tok, max_new_tokens, temperature, use_kv_cache)
    out = list[Sample]()
    torch.manual_seed(seed)
    chunks = batches(rows, batch_size, tok.pad_token_id, side="left")
    total = math.ceil(len(rows) / batch_size)
    for batch in tqdm(chunks, desc="generate", total=total, disable=not progress):
        out += _answered(model, batch, jobs, interventions, kwargs)
    return out


def _answered(
    model: TransformerBridge,
    batch: TokenBatch,
    jobs: Sequence[tuple[str, int]],
    interventions: Sequence[Intervention],
    kwargs: dict[str, Any],
) -> list[Sample]:
    """One left-padded batch of prompts answered under ``interventions``."""
    tok = model.tokenizer
    hf_generate = cast(Callable[..., Tensor], hf_model(model).generate)  # HF stubs mistype it
    width = batch.tokens.shape[1]
    with applied(model, interventions, prompt_len=width):
        seqs = hf_generate(**batch.inputs(input_device(model)), **kwargs)
    answers = [tok.decode(seq, skip_special_tokens=True).strip() for seq in seqs[:, width:].cpu()]
    return [Sample(jobs[j][0], a, jobs[j][1]) for j, a in zip(batch.index, answers, strict=True)]
