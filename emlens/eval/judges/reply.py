"""A judge API's replies as emlens reads them: completions, failures worth a retry, waits.

`parse_reply` reads a Chat Completions body (a choice without logprobs is a reply with no
scores, not an error), `Retry` marks a failure that may pass, and `retry_after` reads the
wait a server asks for (``retry-after-ms``, or ``Retry-After`` in seconds or as a date).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emlens.eval.judges.top_logprobs import TopLogprobs, merge_tokens


class JudgeRequestError(RuntimeError):
    """The judge endpoint failed after every retry, or answered what is not a completion."""


class Retry(Exception):
    """A failure that may pass: ``reason`` for messages, ``wait`` from ``Retry-After``."""

    def __init__(self, reason: str, status: int | None = None, wait: float | None = None):
        super().__init__(reason)
        self.reason, self.status, self.wait = reason, status, wait


def retry_after(headers: Mapping[str, str] | Any) -> float | None:
    """Seconds a response's ``retry-after-ms`` or ``Retry-After`` header asks to wait.

    Examples:
        >>> retry_after({"Retry-After": "2"}), retry_after({"retry-after-ms": "250"})
        (2.0, 0.25)
        >>> retry_after({}) is None
        True
    """
    lower = {str(k).lower(): str(v) for k, v in dict(headers or {}).items()}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = lower.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            date = email.utils.parsedate_to_datetime(value) if name == "retry-after" else None
            if date is not None:
                return max(0.0, date.timestamp() - time.time())
    return None


@dataclass
class Reply:
    """One parsed completion: the first token's top logprobs (None: none sent) and usage."""

    top: TopLogprobs | None
    answer: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""


def parse_reply(body: Any, where: str) -> Reply:
    """A Chat Completions body as a `Reply`; a choice without logprobs has ``top`` None.

    Raises:
        JudgeRequestError: ``body`` is not a chat completion (no ``choices[0]``).
    """
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError) as e:
        raise JudgeRequestError(
            f"{where} answered a body that is not a chat completion (expected JSON with "
            f"choices[0]): {str(body)[:200]!r}"
        ) from e
    usage = body.get("usage") or {}
    content = (choice.get("logprobs") or {}).get("content") or []
    top = None
    if content and content[0].get("top_logprobs"):
        top = merge_tokens((t["token"], t["logprob"]) for t in content[0]["top_logprobs"])
    return Reply(
        top,
        [str(t.get("token", "")) for t in content],
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        str(body.get("model") or ""),
    )
