"""A judge behind any OpenAI-compatible Chat Completions endpoint.

The papers' judge request: the judge prompt as one user message, ``max_tokens=1``,
temperature 0 and the top-20 logprobs of that one token; `emlens.eval.judge.aggregate`
turns them into a 0-100 score. Requests run concurrently, failures that may pass (timeouts,
429, 5xx) are retried with exponential backoff, and answers are cached on disk by judge
endpoint, model, request parameters and full prompt, so an interrupted run resumes, a rerun
sends nothing, and two judges never share an answer (two endpoints serving different weights
under one name, or one endpoint asked with other parameters). The API key is read at request
time and never enters the cache key, the cache file or a message.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from tqdm.auto import tqdm

from emlens.eval._logprobs import TopLogprobs, merge_tokens

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
BUSY_STATUS = {429, 503}  # reachable and serving, just not now
REACHABILITY_PROMPT = "Reply with one number from 0 to 100: how clear is this request?"


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


class JudgeCache:
    """An on-disk cache of judge answers keyed by the judge's identity and prompt (sqlite).

    The identity is whatever changes the answer: the endpoint, the model and the request
    parameters (`HTTPJudge.identity`). Safe to share between threads. Only hashed keys and
    logprobs are stored, never API keys.

    Args:
        path: the sqlite file; its folder is created.
    """

    def __init__(self, path: str | os.PathLike[str]):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS judged (key TEXT PRIMARY KEY, value TEXT)")
        self._lock = threading.Lock()

    @staticmethod
    def key(judge: str | dict[str, Any], prompt: str) -> str:
        """The cache key of a (judge identity, prompt) pair: a SHA-256 hex digest.

        Examples:
            >>> a = JudgeCache.key({"url": "http://a/v1", "model": "m"}, "p")
            >>> a == JudgeCache.key({"model": "m", "url": "http://a/v1"}, "p")
            True
            >>> a == JudgeCache.key({"url": "http://b/v1", "model": "m"}, "p")
            False
        """
        return hashlib.sha256(json.dumps([judge, prompt], sort_keys=True).encode()).hexdigest()

    def get(self, judge: str | dict[str, Any], prompt: str) -> TopLogprobs | None:
        """The cached answer, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM judged WHERE key = ?", (self.key(judge, prompt),)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, judge: str | dict[str, Any], prompt: str, top: TopLogprobs) -> None:
        """Store an answer (replacing any earlier one)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judged VALUES (?, ?)",
                (self.key(judge, prompt), json.dumps(top)),
            )
            self._db.commit()


class JudgeRequestError(RuntimeError):
    """The judge endpoint failed after every retry, or answered without logprobs."""


class HTTPJudge:
    """An OpenAI-compatible Chat Completions judge (``max_tokens=1``, top-20 logprobs).

    The API key is read from the environment variable ``api_key_env`` at request time and is
    never stored.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` or an `emlens serve` URL.
        model: the judge model's name at that endpoint (also the judge's ``name``).
        api_key_env: environment variable holding the API key (unset: no key sent).
        concurrency: requests in flight at once.
        retries: retries after the first try, for timeouts, 429 and 5xx.
        backoff: seconds before the first retry; doubled at each next one.
        timeout: seconds per request.
        cache: the `JudgeCache` file, None for no cache.
        top_logprobs: how many next tokens the endpoint returns.

    Attributes:
        params: the request body but its messages (model, max_tokens, temperature,
            top_logprobs, ...); with the endpoint it is the judge's cache identity.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 16,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        cache: str | os.PathLike[str] | None = "~/.cache/emlens/judge.sqlite",
        top_logprobs: int = 20,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.shown_url = redacted(self.url)  # what messages show
        self.model = self.name = model
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.params: dict[str, Any] = {
            "model": model,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": top_logprobs,
            "seed": 0,
        }
        self.cache = JudgeCache(Path(cache).expanduser()) if cache else None
        self.requests = 0  # requests sent, for tests and cost accounting

    @property
    def identity(self) -> dict[str, Any]:
        """What the cache keys answers by: the endpoint and every request parameter.

        The endpoint enters in full (the key is a hash, so nothing of it reaches the file);
        the API key, sent as a header, never does.
        """
        return {"url": self.url, **self.params}

    def _body(self, prompt: str) -> bytes:
        return json.dumps(
            {**self.params, "messages": [{"role": "user", "content": prompt}]}
        ).encode()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get(self.api_key_env):
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, body: bytes) -> TopLogprobs:
        """One request: the first answer token's top logprobs."""
        req = urllib.request.Request(self.url, body, self._headers(), method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as r:
            try:
                first = json.load(r)["choices"][0]["logprobs"]["content"][0]
                return merge_tokens((t["token"], t["logprob"]) for t in first["top_logprobs"])
            except (KeyError, IndexError, TypeError, json.JSONDecodeError) as e:
                raise JudgeRequestError(
                    f"{self.shown_url} answered without "
                    "choices[0].logprobs.content[0].top_logprobs "
                    f"(does the endpoint support logprobs?): {e!r}"
                ) from e

    def _request(self, prompt: str) -> TopLogprobs:
        """`_post` with retries and exponential backoff."""
        body, last = self._body(prompt), ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            self.requests += 1
            try:
                return self._post(body)
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code not in RETRY_STATUS:
                    msg = f"{self.shown_url} answered {last}: {e.read()[:300]!r}"
                    raise JudgeRequestError(msg) from e
            except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
                last = f"{type(e).__name__}: {getattr(e, 'reason', e)}"
        raise JudgeRequestError(f"{self.shown_url}: failed after {self.retries + 1} tries ({last})")

    def check(self) -> None:
        """Fail now if the endpoint cannot judge: one request, neither retried nor cached.

        Run before the expensive part (generating answers) so that a wrong URL, model or key,
        or an endpoint without logprobs, is reported before any work is done. An endpoint
        that is only busy (429, 503) passes.

        Raises:
            JudgeRequestError: the endpoint is unreachable, refuses the request, or answers
                without logprobs.
        """
        self.requests += 1
        try:
            self._post(self._body(REACHABILITY_PROMPT))
        except urllib.error.HTTPError as e:
            if e.code not in BUSY_STATUS:
                detail = e.read()[:200].decode(errors="replace")
                raise JudgeRequestError(
                    f"{self.shown_url} refused a test request for model {self.model!r} "
                    f"(HTTP {e.code}: {detail})"
                ) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise JudgeRequestError(
                f"{self.shown_url} is not reachable ({type(e).__name__}: {reason})"
            ) from None

    def _one(self, prompt: str) -> TopLogprobs:
        if self.cache and (hit := self.cache.get(self.identity, prompt)) is not None:
            return hit
        top = self._request(prompt)
        if self.cache:
            self.cache.put(self.identity, prompt, top)
        return top

    def top_logprobs(self, prompts: Sequence[str], progress: bool = False) -> list[TopLogprobs]:
        """The judge's next-token logprobs for each prompt, from the cache or the endpoint.

        Args:
            prompts: filled judge prompts (`emlens.eval.judge.judge_prompts`).
            progress: show a progress bar.

        Returns:
            One token -> logprob dict per prompt, in order.

        Raises:
            JudgeRequestError: a prompt failed after every retry.
        """
        with ThreadPoolExecutor(self.concurrency) as pool:
            it = pool.map(self._one, prompts)
            return list(tqdm(it, total=len(prompts), disable=not progress, desc="judge"))
