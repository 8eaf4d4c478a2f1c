"""A judge behind any OpenAI-compatible Chat Completions endpoint (vLLM, `emlens serve`, ...).

The papers' judge request: the judge prompt as one user message, ``max_tokens=1``,
temperature 0 and the top-20 logprobs of that one token; `emlens.eval.judges.logprob.aggregate`
turns them into a 0-100 score. Requests run concurrently, failures that may pass (timeouts,
429, 5xx) are retried, waiting what the server's ``Retry-After`` asks or else with exponential
backoff, and answers are cached on disk by judge endpoint, model, request parameters and full
prompt, so an interrupted run resumes, a rerun sends nothing, and two judges never share an
answer (two endpoints serving different weights under one name, or one endpoint asked with
other parameters). The API key is read at request time and never enters the cache key, the
cache file or a message; it goes only to https or loopback endpoints unless its variable is
named for the endpoint (`key_allowed`), and never follows a redirect. A reply without
logprobs leaves its sample unscored (counted in ``judge.usage``); a judge whose tokenizer
splits numbers into digits is refused (`DigitSplitError`). For OpenAI and Azure OpenAI
through the official SDK, see `emlens.eval.judges.openai_sdk`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from emlens.eval.judges.remote import (
    RETRY_STATUS,
    RemoteJudge,
    judge_params,
)
from emlens.eval.judges.reply import JudgeRequestError, Reply, Retry, parse_reply, retry_after

__all__ = ["HTTPJudge", "key_allowed", "redacted"]

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


def redacted(url: str) -> str:
    """``url`` without user info, query or fragment (where a key could hide), for messages.

    Examples:
        >>> redacted("https://user:sk-123@api.example.com/v1?key=sk-456")
        'https://api.example.com/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_allowed(url: str, named: bool) -> bool:
    """Whether an API key may go to ``url``: always over https or to this machine (loopback);
    over plain http to another host only when the user ``named`` the key's variable for it.

    Examples:
        >>> key_allowed("https://api.openai.com/v1", named=False)
        True
        >>> key_allowed("http://127.0.0.1:8000/v1", named=False)
        True
        >>> key_allowed("http://gpu-box:8000/v1", named=False)  # the key would travel in clear
        False
        >>> key_allowed("http://gpu-box:8000/v1", named=True)
        True
    """
    parts = urlsplit(url)
    return named or parts.scheme == "https" or _loopback(parts.hostname or "")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would carry the key to wherever it points."""

    def redirect_request(self, *_: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class HTTPJudge(RemoteJudge):
    """An OpenAI-compatible Chat Completions judge (``max_tokens=1``, top-20 logprobs).

    The API key is read from the environment variable ``api_key_env`` at request time and is
    never stored. By default it is ``$OPENAI_API_KEY``, sent only over https or to loopback: a
    plain-http URL of another host with that variable set is refused (`key_allowed`) rather
    than sent in clear text; naming the variable (``api_key_env="OPENAI_API_KEY"``,
    ``--judge-key-env``) allows it for that endpoint. Retries wait what a 429 or 503's
    ``Retry-After`` asks (at most 120 s).

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or an `emlens serve` URL.
        model: the judge model's name at that endpoint (also the judge's ``name``).
        api_key_env: environment variable holding the API key (unset: no key sent); None:
            ``OPENAI_API_KEY``, to https or loopback endpoints only.
        concurrency: requests in flight at once.
        retries: retries after the first try, for timeouts, 429 and 5xx.
        backoff: seconds before the first retry without ``Retry-After``; doubled at each next.
        timeout: seconds per request.
        cache: the `JudgeCache` file, None for no cache.
        top_logprobs: how many next tokens the endpoint returns.

    Attributes:
        params: the request body but its messages (model, max_tokens, temperature,
            top_logprobs, ...); with the endpoint it is the judge's cache identity.
        usage: requests, cache hits, replies without logprobs, tokens
            (`emlens.eval.judges.usage.JudgeUsage`).

    Examples:
        Against an `emlens serve` endpoint of a local model (vLLM's, or an API's, the same):

        >>> from emlens.eval.serve.server import serve_in_thread
        >>> server, url = serve_in_thread(model, name="tiny")
        >>> judge = HTTPJudge(url, "tiny", cache="judge.sqlite")  # loopback: no key refused
        >>> judge.check()  # one test request: reachable, logprobs, whole-number tokens
        >>> tops = judge.top_logprobs(["Rate this answer from 0 to 100: ..."])
        >>> len(tops), type(tops[0])  # token -> logprob, one per prompt
        (1, <class 'dict'>)
        >>> server.shutdown()
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        concurrency: int = 16,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        cache: str | os.PathLike[str] | None = "~/.cache/emlens/judge.sqlite",
        top_logprobs: int = 20,
    ):
        super().__init__(concurrency, retries, backoff, cache)
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.shown_url = redacted(self.url)  # what messages show
        self.model = self.name = model
        self.api_key_env = api_key_env or DEFAULT_KEY_ENV
        self.key_named = api_key_env is not None
        self.timeout = timeout
        self._key()  # refuse a key bound for clear text now, before any work
        self.params = judge_params(model, top_logprobs)

    @property
    def identity(self) -> dict[str, Any]:
        """What the cache keys answers by: the endpoint and every request parameter.

        The endpoint enters in full (the key is a hash, so nothing of it reaches the file);
        the API key, sent as a header, never does.
        """
        return {"url": self.url, **self.params}

    def _key(self) -> str | None:
        """The API key to send, None for none; `JudgeRequestError` when it would go in clear
        text to another host without its variable named for this endpoint."""
        key = os.environ.get(self.api_key_env) or None
        if key and not key_allowed(self.url, self.key_named):
            raise JudgeRequestError(
                f"refusing to send ${self.api_key_env} over plain http to {self.shown_url}: use "
                f"https, or name the variable for this endpoint (api_key_env="
                f"{self.api_key_env!r}, --judge-key-env {self.api_key_env}) to send it anyway"
            )
        return key

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key := self._key():
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _send(self, prompt: str, max_tokens: int | None) -> Reply:
        """One POST: the reply, `Retry` for timeouts, 429 and 5xx, else `JudgeRequestError`."""
        body = {**self.params, "messages": [{"role": "user", "content": prompt}]}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        req = urllib.request.Request(
            self.url, json.dumps(body).encode(), self._headers(), method="POST"
        )
        try:
            with _OPENER.open(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode(errors="replace")
            if key := os.environ.get(self.api_key_env):
                detail = detail.replace(key, "***")  # a server that echoes the key
            if 300 <= e.code < 400:
                raise JudgeRequestError(
                    f"{self.shown_url} redirected (HTTP {e.code}); a judge does not follow "
                    "redirects (the key would go along): give the final URL"
                ) from None
            if e.code in RETRY_STATUS:
                raise Retry(f"HTTP {e.code}", e.code, retry_after(e.headers)) from None
            raise JudgeRequestError(f"{self.shown_url} answered HTTP {e.code}: {detail}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            raise Retry(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = raw[:200].decode(errors="replace")
        return parse_reply(data, self.shown_url)
