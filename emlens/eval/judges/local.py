"""A local model as judge: the papers' aggregation over its own next-token distribution.

Numbers are scored whole: p(n) = p(tokens of n) * p(next token is not a digit) for
n = 0..100, so tokenizers that split numbers into digits (SmolLM2, Qwen) give the same kind of
distribution as those with one token per number. The first token's top-k supplies the
non-numeric alternatives (REFUSAL, CODE).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from emlens.core._arch import hf_model
from emlens.core.models import input_device
from emlens.core.tokens import chat_prompt
from emlens.eval.judges.logprob import LogprobJudge
from emlens.eval.judges.top_logprobs import TopLogprobs, as_number, merge_tokens

# A node of the digit-token tree: (number text so far, its log-prob, row of the KV cache,
# next-token log-probs); a child: (number text, its log-prob, parent's cache row, token id).
_Node = tuple[str, float, int, Tensor]
_Child = tuple[str, float, int, int]


class LocalJudge(LogprobJudge):
    """A local model as judge: the same aggregation from its own next-token distribution.

    The numbers' tree of digit tokens is walked with the KV cache, keeping the ``top_k`` most
    likely branches per step. Branches below ``min_prob`` are pruned (their numbers count as
    absent, like numbers outside a top-20).

    Args:
        model: the judge model (may be the evaluated model itself).
        top_k: next tokens kept, as an API's ``top_logprobs``.
        min_prob: branches of the digit tree below this probability are dropped.

    Examples:
        >>> from emlens.eval.judges.logprob import aggregate
        >>> judge = LocalJudge(model)
        >>> (top,) = judge.top_logprobs(["What is 7 times 6? Reply with only the number."])
        >>> s = aggregate(top).score  # the probability-weighted number (None: too little mass)
        >>> s is None or 0 <= s <= 100
        True
    """

    def __init__(self, model: TransformerBridge, top_k: int = 20, min_prob: float = 1e-4):
        self.model = model
        self.name = f"local:{getattr(model.cfg, 'model_name', 'model')}"
        self.k, self.min_logp = top_k, float(np.log(min_prob))
        tok = model.tokenizer
        text = [tok.decode([i]) for i in range(len(tok))]
        self.digit_start = torch.tensor([t[:1].isdigit() for t in text])
        # Tokens that are only digits (the first may carry leading spaces): tree edges.
        self.digits = {
            i: t.strip() for i, t in enumerate(text) if t.strip().isascii() and t.strip().isdigit()
        }
        self.first_ok = {i for i, t in self.digits.items() if as_number(t) is not None}
        self.next_ok = {i for i, t in self.digits.items() if t == text[i]}

    def _prompt(self, prompt: str) -> tuple[Tensor, Any, int]:
        """Run the prompt: first answer token's log-probs (CPU), the KV cache, its length."""
        tok = self.model.tokenizer
        ids = tok(chat_prompt(tok, prompt), add_special_tokens=False, return_tensors="pt")
        out = hf_model(self.model)(**ids.to(input_device(self.model)), use_cache=True)
        # Log-probs on the CPU: the tree walk reads many single entries.
        first = out.logits[0, -1].float().log_softmax(-1).cpu()
        return first, out.past_key_values, ids["input_ids"].shape[1]

    def _children(self, frontier: list[_Node], numbers: dict[int, float]) -> list[_Child]:
        """Score the numbers the frontier ends (into ``numbers``); its ``k`` best children."""
        children = []
        for text, lp, row, dist in frontier:
            if text:
                stop = float(torch.logsumexp(dist[~self.digit_start], 0))
                numbers[int(text)] = float(np.logaddexp(numbers.get(int(text), -np.inf), lp + stop))
            for t in self.next_ok if text else self.first_ok:
                nxt = text + self.digits[t]
                if as_number(nxt) is None or lp + float(dist[t]) < self.min_logp:
                    continue
                children.append((nxt, lp + float(dist[t]), row, t))
        return sorted(children, key=lambda c: -c[1])[: self.k]

    def _step(self, children: list[_Child], cache: Any, length: int) -> tuple[list[_Node], Any]:
        """One forward step of the children's tokens on their parents' cache rows."""
        device = input_device(self.model)
        cache.reorder_cache(torch.tensor([c[2] for c in children]))
        step = hf_model(self.model)(
            input_ids=torch.tensor([[c[3]] for c in children], device=device),
            attention_mask=torch.ones(len(children), length + 1, dtype=torch.long, device=device),
            past_key_values=cache,
            use_cache=True,
        )
        dists = step.logits[:, -1].float().log_softmax(-1).cpu()
        return [(c[0], c[1], i, dists[i]) for i, c in enumerate(children)], step.past_key_values

    @torch.no_grad()
    def _one(self, prompt: str) -> TopLogprobs:
        first, cache, length = self._prompt(prompt)
        top = first.topk(self.k)
        words = [
            (self.model.tokenizer.decode([i]), float(v))
            for v, i in zip(top.values, top.indices, strict=True)
        ]
        result = merge_tokens((w, v) for w, v in words if as_number(w) is None)
        numbers: dict[int, float] = {}
        frontier: list[_Node] = [("", 0.0, 0, first)]
        while children := self._children(frontier, numbers):
            frontier, cache = self._step(children, cache, length)
            length += 1
        result.update({str(n): v for n, v in numbers.items()})
        return result

    def top_logprobs(self, prompts: Sequence[str], progress: bool = False) -> list[TopLogprobs]:
        """The judge's next-token logprobs for each prompt, numbers 0..100 scored whole.

        Args:
            prompts: filled judge prompts (`emlens.eval.judges.logprob.judge_prompts`), each
                put in the judge model's chat template.
            progress: show a progress bar.

        Returns:
            One token -> logprob dict per prompt: the first token's non-numeric top-k and
            every number reached in the digit tree.
        """
        return [self._one(p) for p in tqdm(prompts, disable=not progress, desc="local judge")]
