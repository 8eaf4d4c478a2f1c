"""Batched chat generation with interventions (left padding, KV cache, seeded sampling)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.interventions import Intervention, applied
from emlens.core.models import input_device
from emlens.core.tokens import chat_prompt, pad_batch


@dataclass
class Sample:
    question: str
    answer: str
    sample: int  # index among the n samples of this question


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
) -> list[Sample]:
    """Answer each question ``n`` times under ``interventions``.

    ``temperature=0`` is greedy; otherwise samples, seeded by ``seed`` (the same seed and batch
    give the same samples). Returns one :class:`Sample` per (question, sample), in order.
    """
    if not questions:
        raise ValueError("no questions to answer")
    if n < 1 or max_new_tokens < 1 or temperature < 0:
        raise ValueError("need n >= 1, max_new_tokens >= 1 and temperature >= 0")
    tok = model.tokenizer
    jobs = [(q, i) for q in questions for i in range(n)]
    prompts = [
        tok(chat_prompt(tok, q, system), add_special_tokens=False)["input_ids"] for q, _ in jobs
    ]
    hf, device = model.original_model, input_device(model)
    eos = tok.eos_token_id
    out: list[Sample] = []
    torch.manual_seed(seed)
    for b in tqdm(range(0, len(jobs), batch_size), disable=not progress, desc="generate"):
        chunk = prompts[b : b + batch_size]
        batch = pad_batch([(ids, [True] * len(ids)) for ids in chunk], tok.pad_token_id, "left")
        width = batch.tokens.shape[1]
        sampling = (
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            if temperature > 0
            else dict(do_sample=False, temperature=None, top_k=None, top_p=None)
        )
        with applied(model, interventions, prompt_len=width):
            seqs = hf.generate(
                input_ids=batch.tokens.to(device),
                attention_mask=batch.attention_mask.long().to(device),
                max_new_tokens=max_new_tokens,
                use_cache=use_kv_cache,
                pad_token_id=tok.pad_token_id,
                eos_token_id=eos,
                **sampling,
            )
        for (q, i), seq in zip(jobs[b : b + batch_size], seqs[:, width:].cpu()):
            out.append(Sample(q, tok.decode(seq, skip_special_tokens=True).strip(), i))
    return out
