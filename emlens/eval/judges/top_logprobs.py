"""Next-token log-probs as judges return them: top-k tokens by text, numbers 0..100 read whole.

A judge's answer is a dict token text -> log-prob over its top-k next tokens; tokens that
decode to the same text add their probabilities (log-sum-exp).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

TopLogprobs = dict[str, float]  # token text -> logprob
MIN_NUMERIC_MASS = 0.25  # the least numeric probability that gives a score


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


def splits_numbers(answer: Sequence[str], top: TopLogprobs) -> bool:
    """Whether a judge reply shows a tokenizer that splits numbers into single digits.

    True when the judge answered a number of two or more digits one digit per token (``"85"``
    as ``"8"``, ``"5"``) and the top logprobs of its first token hold no number of two or
    more digits. The papers' aggregation reads only that first token, so such a judge would
    score 85 as 8: emlens refuses it (`emlens.eval.judges.local.LocalJudge` reads whole numbers
    across digit tokens). A whole-number tokenizer (GPT-4o's) answers ``"85"`` in one token.

    Args:
        answer: the reply's tokens, in order (at least two are needed to tell).
        top: token text -> logprob of the first answer token.

    Returns:
        True for a digit-wise tokenizer; False for whole-number tokens or too little evidence
        (a one-digit answer, a word, a single token).

    Examples:
        >>> splits_numbers(["8", "5"], {"8": -0.2, "7": -1.9, "9": -2.5})
        True
        >>> splits_numbers(["85"], {"85": -0.2, "80": -1.9, "9": -2.5})
        False
        >>> splits_numbers(["5", "."], {"5": -0.1})
        False
    """
    digits = [t.strip() for t in answer[:2]]
    one_digit = len(digits) == 2 and all(len(d) == 1 and d in "0123456789" for d in digits)
    whole = any((n := as_number(t)) is not None and n >= 10 for t in top)
    return one_digit and not whole
