"""A Chat Completions request body, validated and bounded, as `emlens serve` answers it.

The OpenAI API's ``messages`` (content a string or a list of ``{"type": "text", "text": ...}``
parts, as many clients send), ``max_tokens`` (or ``max_completion_tokens``), ``temperature``,
``top_p``, ``seed``, ``n``, ``logprobs`` and ``top_logprobs``. The work of one request is
bounded: ``n x max_tokens`` at most ``max_work`` tokens, so one request cannot starve the
others; a request without a limit gets what the bound allows (OpenAI's API has no small
default cap: a completion ends at the end of its turn). ``"stream": true`` (and
``stream_options.include_usage``) answers as server-sent events in OpenAI's chunk format
(`emlens.eval.serve.http.completion_chunks`). Anything else is a `BadRequest` (HTTP 400) naming
the field and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_TOKENS, MAX_N, MAX_TOP_LOGPROBS = 4096, 64, 20
MAX_WORK = 8192  # n x max_tokens of one request (the default of ``emlens serve --max-work``)


class BadRequest(ValueError):
    """A Chat Completions request body emlens cannot answer (HTTP 400)."""


@dataclass(frozen=True)
class ChatRequest:
    """The fields of a Chat Completions body that `emlens.eval.serve.server.complete` uses.

    Attributes:
        messages: ``{"role", "content"}`` dicts, content as one string.
        max_tokens: new tokens per completion.
        temperature: sampling temperature; 0 is greedy.
        n: completions.
        top_logprobs: top tokens reported per step; 0: no logprobs.
        top_p: nucleus sampling mass (1 when greedy).
        seed: the sampling seed, or None.
    """

    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    n: int
    top_logprobs: int
    top_p: float
    seed: int | None


def message_text(content: Any, where: str) -> str:
    """A message's content as one string: a string, or its text parts joined by newlines.

    Args:
        content: the message's ``content``.
        where: the message's place in the body, for the error (``messages[0].content``).

    Returns:
        The text.

    Raises:
        BadRequest: neither a string nor a list of text parts.

    Examples:
        >>> message_text([{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}], "m")
        'Hi\\nthere'
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"{where}: expected a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type", "text") if isinstance(part, dict) else None
        if kind != "text":
            raise BadRequest(f"{where}[{j}]: only text parts are supported, not {kind!r}")
        if not isinstance(part.get("text"), str):
            raise BadRequest(f'{where}[{j}]: expected {{"type": "text", "text": "..."}}')
        texts.append(part["text"])
    return "\n".join(texts)


def _messages(msgs: Any) -> list[dict[str, str]]:
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m):
            raise BadRequest(f"messages[{i}]: expected {{'role': str, 'content': ...}}")
        out.append(
            {"role": m["role"], "content": message_text(m["content"], f"messages[{i}].content")}
        )
    return out


def _number(body: dict[str, Any], key: str, default: Any, kind: type) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"'{key}' must be a number, not {value!r}")
    if kind is int and value != int(value):
        raise BadRequest(f"'{key}' must be a whole number, not {value!r}")
    if not math.isfinite(value):
        raise BadRequest(f"'{key}' must be finite, not {value!r}")
    return kind(value)


def parse_request(body: Any, max_work: int = MAX_WORK) -> ChatRequest:
    """Validate a Chat Completions body and bound its work.

    Args:
        body: the decoded JSON body.
        max_work: the most ``n x max_tokens`` one request may ask for.

    Returns:
        The request.

    Raises:
        BadRequest: a field is missing, of the wrong kind or out of range, or the request
            asks for more than ``max_work`` tokens.

    Examples:
        >>> hi = {"messages": [{"role": "user", "content": "Hi"}]}
        >>> parse_request(hi).max_tokens  # no limit asked: the server's bound
        4096
        >>> parse_request(hi | {"n": 4}).max_tokens  # max_work // n
        2048
    """
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if not isinstance(body.get("stream", False), bool):
        raise BadRequest(f"'stream' must be true or false, not {body['stream']!r}")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise BadRequest("'stream_options' must be an object like {\"include_usage\": true}")
    temperature = _number(body, "temperature", 1.0, float)
    n = _number(body, "n", 1, int)
    max_tokens = _number(body, "max_tokens", None, int)
    if max_tokens is None:
        bound = min(MAX_TOKENS, max_work // max(n, 1))
        max_tokens = _number(body, "max_completion_tokens", bound, int)
    req = ChatRequest(
        messages=_messages(body.get("messages")),
        max_tokens=max_tokens,
        temperature=temperature,
        n=n,
        top_logprobs=_number(body, "top_logprobs", 0, int) if body.get("logprobs") else 0,
        top_p=_number(body, "top_p", 1.0, float) if temperature > 0 else 1.0,  # greedy: unused
        seed=_number(body, "seed", None, int),
    )
    if not (
        1 <= req.max_tokens <= MAX_TOKENS
        and 0 <= req.temperature
        and 1 <= req.n <= MAX_N
        and 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS
        and 0 < req.top_p <= 1
    ):
        raise BadRequest(
            f"need 1<=max_tokens<={MAX_TOKENS}, temperature>=0, 1<=n<={MAX_N}, "
            f"top_logprobs<={MAX_TOP_LOGPROBS}, 0<top_p<=1"
        )
    if req.n * req.max_tokens > max_work:
        raise BadRequest(
            f"n x max_tokens = {req.n} x {req.max_tokens} = {req.n * req.max_tokens} tokens is "
            f"over this server's limit of {max_work} per request (emlens serve --max-work)"
        )
    return req
