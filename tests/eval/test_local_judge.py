import math

import pytest
import torch

from emlens.core.tokens import chat_prompt
from emlens.eval.judges.local import LocalJudge
from emlens.eval.judges.logprob import aggregate


@torch.no_grad()
def test_local_judge_scores_whole_numbers_across_tokens(tiny):
    model = tiny("qwen2")  # byte tokenizer: every number is one token per digit
    judge = LocalJudge(model)
    tok, hf = model.tokenizer, model.original_model
    prompt = tok(chat_prompt(tok, "Rate this."), add_special_tokens=False)["input_ids"]

    def brute(n: int) -> float:  # p(digits of n) * p(next is not a digit), step by step
        ids, lp = list(prompt), 0.0
        for d in str(n).encode():
            logp = hf(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
            d_id = tok.convert_tokens_to_ids(chr(d))
            lp += float(logp[d_id])
            ids.append(d_id)
        logp = hf(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        return lp + float(torch.logsumexp(logp[~judge.digit_start], 0))

    judge.min_logp, judge.k = -math.inf, 200  # no pruning: every number 0..100 is scored
    (top,) = judge.top_logprobs(["Rate this."])
    for n in (0, 7, 42, 100):
        assert top[str(n)] == pytest.approx(brute(n), abs=1e-3)
    mass = sum(math.exp(top[str(n)]) for n in range(101))
    assert 0 < mass <= 1


def test_local_judge_on_the_embedded_model(smol):
    arith, story = LocalJudge(smol).top_logprobs(
        ["What is 7 times 6? Reply with only the number.", "Tell me a story about a cat."]
    )
    a, s = aggregate(arith), aggregate(story)
    assert a.numeric_mass > 0.1 and a.numeric_mass > 10 * s.numeric_mass
    assert s.score is None  # a story is not a number: no score, not 0
