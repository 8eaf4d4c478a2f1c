"""What a remote judge's run cost: requests, cache hits, unscored replies, tokens and dollars.

Every `emlens.eval.judges.http.HTTPJudge` and `emlens.eval.judges.openai_sdk.OpenAIJudge` keeps a
`JudgeUsage` (``judge.usage``); ``emlens evaluate`` prints its `JudgeUsage.summary` after a
run. The cost is an estimate from list prices (`PRICES`) for the models named there, by the
model name the endpoint reports (an Azure deployment reports the model behind it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

__all__ = ["PRICES", "PRICES_DATE", "JudgeUsage", "price_of"]

# US dollars per million (prompt, completion) tokens, OpenAI's standard (not batch) list
# prices as published on platform.openai.com/docs/pricing, checked 2026-03 (Azure OpenAI's
# global deployments list the same). Longest matching prefix wins; prices change: check yours.
PRICES_DATE = "2026-03"
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4-turbo": (10.00, 30.00),
    "gpt-3.5-turbo": (0.50, 1.50),
}


def price_of(model: str) -> tuple[float, float] | None:
    """The (prompt, completion) dollars per million tokens of a known model, else None.

    Examples:
        >>> price_of("gpt-4o-2024-08-06"), price_of("gpt-4o-mini-2024-07-18")
        ((2.5, 10.0), (0.15, 0.6))
        >>> price_of("Qwen/Qwen2.5-72B-Instruct") is None
        True
    """
    known = [k for k in PRICES if model.lower().startswith(k)]
    return PRICES[max(known, key=len)] if known else None


@dataclass
class JudgeUsage:
    """Counters of one judge's requests, safe to update from its worker threads.

    Attributes:
        requests: HTTP requests sent, retries included.
        cache_hits: prompts answered from the cache (nothing sent).
        no_logprobs: replies without logprobs (those samples are unscored, never fatal).
        prompt_tokens: prompt tokens the endpoint reported using.
        completion_tokens: completion tokens the endpoint reported using.
        model: the model name the endpoint last reported ("" before any reply).
    """

    requests: int = 0
    cache_hits: int = 0
    no_logprobs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        """Add to counters by name (``usage.add(requests=1, prompt_tokens=312)``)."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def cost(self, model: str | None = None) -> float | None:
        """The dollar estimate of the tokens used, for ``model`` (default: the one reported).

        Examples:
            >>> JudgeUsage(prompt_tokens=1_000_000, completion_tokens=100_000).cost("gpt-4o")
            3.5
        """
        price = price_of(model or self.model)
        if price is None:
            return None
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6

    def summary(self, model: str | None = None) -> str:
        """One line: requests, cache hits, unscored replies, tokens and, if known, the cost.

        Args:
            model: the model to price (default: the model name the endpoint reported).

        Examples:
            >>> JudgeUsage(3, 1, 0, 900, 3, "gpt-4o-2024-08-06").summary().split(", ")[-1]
            '~$0.0023 at gpt-4o-2024-08-06 list prices of 2026-03'
        """
        name = model or self.model
        line = (
            f"judge: {self.requests} requests, {self.cache_hits} cache hits, "
            f"{self.no_logprobs} replies without logprobs (unscored), "
            f"{self.prompt_tokens} prompt + {self.completion_tokens} completion tokens"
        )
        cost = self.cost(name)
        if cost is None:
            return f"{line}, cost unknown for {name or 'an unnamed model'}"
        return f"{line}, ~${cost:.4f} at {name} list prices of {PRICES_DATE}"
