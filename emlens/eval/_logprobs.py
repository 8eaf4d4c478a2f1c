"""Next-token log-probs as judges return them: top-k tokens by text, numbers 0..100 read whole.

A judge's answer is a dict token text -> log-prob over its top-k next tokens; tokens that
decode to the same text add their probabilities (log-sum-exp).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

TopLogprobs = dict[str, float]  # token text -> logprob


def as_number(token: str) -> int | None:
    """The integer 0..100 a token spells (surrounding spaces allowed), else None.

    Examples:
        >>> as_number(" 42"), as_number("07"), as_number("101")
        (42, None, None)
    """
    t = token.strip()
    if not t.isascii() or not t.isdigit() or (len(t) > 1 and t[0] == "0"):
        return None
    n = int(t)
    return n if n <= 100 else None


def merge_tokens(pairs: Iterable[tuple[str, float]]) -> TopLogprobs:
    """(token text, logprob) pairs as a dict; tokens that decode alike add their probability."""
    out: TopLogprobs = {}
    for t, lp in pairs:
        out[t] = float(np.logaddexp(out[t], lp)) if t in out else float(lp)
    return out
