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
from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


ENGINES = ("bridge", "hf")


def engine_model(
    model: TransformerBridge, interventions: Sequence[Intervention]
) -> PreTrainedModel:
    """The plain HF model ``engine="hf"`` generates with: the bridge's weights (shared, not
    copied) in unwrapped modules, its steering written in as ``down_proj`` biases
    (`emlens.core.export.steered_model`), so a steered answer costs what an unsteered one does.

    Raises:
        ValueError: an intervention that is not steering at every position of the residual
            stream (ablation: use ``engine="bridge"``, or `emlens.orthogonalize` first), or
            an architecture whose weights cannot carry it (Gemma 2/3).
    """
    from emlens.core.export import steered_model
    from emlens.core.interventions import Steer

    if others := [type(i).__name__ for i in interventions if not isinstance(i, Steer)]:
        raise ValueError(
            f"engine 'hf' writes steering into the weights; {', '.join(others)} is not a "
            "weight here: use engine='bridge' (or emlens.orthogonalize the model first)"
        )
    return steered_model(model, [i for i in interventions if isinstance(i, Steer)])


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
    engine: str = "bridge",
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
        engine: ``"bridge"`` generates through the hooked bridge with the interventions as
            hooks; ``"hf"`` through a plain HF model with the steering in its weights
            (`engine_model`: Llama, Qwen2, Mistral; steering only), faster, the same answers
            up to float rounding.

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
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    plain = engine_model(model, interventions) if engine == "hf" else None
    tok = model.tokenizer
    jobs = [(q, i) for q in questions for i in range(n)]
    rows = _prompt_rows(tok, [q for q, _ in jobs], system, chat_template_kwargs)
    kwargs = _generate_kwargs(tok, max_new_tokens, temperature, use_kv_cache)
    out = list[Sample]()
    torch.manual_seed(seed)
    chunks = batches(rows, batch_size, tok.pad_token_id, side="left")
    total = math.ceil(len(rows) / batch_size)
    for batch in tqdm(chunks, desc="generate", total=total, disable=not progress):
        out += _answered(model, batch, jobs, interventions, kwargs, plain)
    return out


def _answered(
    model: TransformerBridge,
    batch: TokenBatch,
    jobs: Sequence[tuple[str, int]],
    interventions: Sequence[Intervention],
    kwargs: dict[str, Any],
    plain: PreTrainedModel | None = None,
) -> list[Sample]:
    """One left-padded batch of prompts answered under ``interventions`` (hooked into the
    bridge), or by ``plain``, the model with them in its weights."""
    tok = model.tokenizer
    gen = plain if plain is not None else hf_model(model)
    hf_generate = cast(Callable[..., Tensor], gen.generate)  # HF stubs mistype it
    width = batch.tokens.shape[1]
    with applied(model, () if plain is not None else interventions, prompt_len=width):
        seqs = hf_generate(**batch.inputs(input_device(model)), **kwargs)
    answers = [tok.decode(seq, skip_special_tokens=True).strip() for seq in seqs[:, width:].cpu()]
    return [Sample(jobs[j][0], a, jobs[j][1]) for j, a in zip(batch.index, answers, strict=True)]
