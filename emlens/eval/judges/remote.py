"""What the remote judges share: the cache, the retries, reply parsing, usage and vetting.

A backend (`emlens.eval.judges.http.HTTPJudge`, `emlens.eval.judges.openai_sdk.OpenAIJudge`) only
sends one request (`RemoteJudge._send`) and reports a failure as `Retry` (may pass: timeouts,
429, 5xx, with the server's ``Retry-After``) or `JudgeRequestError` (will not). This base
retries, waiting what ``Retry-After`` asks (else exponential backoff), caches answers, counts
usage (`emlens.eval.judges.usage.JudgeUsage`), turns a reply without logprobs into an unscored
sample, and refuses a judge whose tokenizer splits numbers into digits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from emlens.eval.judges.logprob import LogprobJudge
from emlens.eval.judges.reply import JudgeRequestError, Reply, Retry
from emlens.eval.judges.top_logprobs import MIN_NUMERIC_MASS, TopLogprobs, as_number, splits_numbers
from emlens.eval.judges.usage import JudgeUsage

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
BUSY_STATUS = {429, 503}  # reachable and serving, just not now
MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After is waited this long, then retried
# the test request: any judge answers 85; a digit-wise tokenizer shows itself as "8", "5"
REACHABILITY_PROMPT = "Reply with one number from 0 to 100 and nothing else: what is 40 plus 45?"
PROBE_TOKENS = 3  # the test request's max_tokens: enough to see "85" arrive as "8", "5"
DIGIT_ADVICE = (
    "the papers' aggregation reads only the first answer token, so it would score 85 as 8. "
    "Use a judge with whole-number tokens (gpt-4o, gpt-4o-mini, gpt-4.1), or a local judge "
    "(--judge local:SPEC, emlens.eval.judges.local.LocalJudge), which reads whole numbers "
    "across digit tokens"
)


class DigitSplitError(JudgeRequestError):
    """The judge's tokenizer splits numbers into digits: its first token is not the score."""


class JudgeCache:
    """An on-disk cache of judge answers keyed by the judge's identity and prompt (sqlite).

    The identity is whatever changes the answer: the endpoint, the model and the request
    parameters (``judge.identity``). Safe to share between threads. Only hashed keys and
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


def _single_digits_only(top: TopLogprobs) -> bool | None:
    """Whether a scored answer's numbers are one-digit only (None: too little numeric mass).

    True: the numbers among ``top`` are all one digit; False: one is 10..100; None: their mass
    is below `MIN_NUMERIC_MASS` (the answer is unscored, so nothing is misread).
    """
    numbers = {t: n for t in top if (n := as_number(t)) is not None}
    if sum(math.exp(top[t]) for t in numbers) < MIN_NUMERIC_MASS:
        return None
    return all(n < 10 for n in numbers.values())


def judge_params(model: str, top_logprobs: int) -> dict[str, Any]:
    """The papers' judge request: one token at temperature 0 with its top logprobs."""
    return {
        "model": model,
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": top_logprobs,
        "seed": 0,
    }


class RemoteJudge(LogprobJudge):
    """A judge behind an API: retried, cached, counted and vetted (see the module docstring).

    Subclasses set ``name``, ``shown_url`` (for messages) and ``params`` (the request but its
    messages), and implement ``identity`` and ``_send``.

    Args:
        concurrency: requests in flight at once.
        retries: retries after the first try, for timeouts, 429 and 5xx.
        backoff: seconds before the first retry without ``Retry-After``; doubled at each next.
        cache: the `JudgeCache` file, None for no cache.
    """

    name: str
    shown_url: str
    params: dict[str, Any]

    def __init__(
        self,
        concurrency: int,
        retries: int,
        backoff: float,
        cache: str | os.PathLike[str] | None,
    ):
        if concurrency < 1 or retries < 0 or backoff < 0:
            raise ValueError(
                "a judge needs concurrency >= 1, retries >= 0 and backoff >= 0, "
                f"not {concurrency}, {retries}, {backoff}"
            )
        self.concurrency, self.retries, self.backoff = concurrency, retries, backoff
        self.cache = JudgeCache(Path(cache).expanduser()) if cache else None
        self.usage = JudgeUsage()
        self._vetted = False  # whole numbers seen, or the digit probe sent
        self._refusal: DigitSplitError | None = None
        self._vet_lock = threading.Lock()

    @property
    def requests(self) -> int:
        """HTTP requests sent so far, retries included (``usage.requests``)."""
        return self.usage.requests

    @property
    def identity(self) -> dict[str, Any]:
        """What the cache keys answers by: the endpoint and every request parameter."""
        raise NotImplementedError

    def _send(self, prompt: str, max_tokens: int | None) -> Reply:
        """One request; raises `Retry` for what may pass, `JudgeRequestError` otherwise."""
        raise NotImplementedError

    def _attempt(self, prompt: str, max_tokens: int | None = None) -> Reply:
        self.usage.add(requests=1)
        reply = self._send(prompt, max_tokens)
        self.usage.add(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        self.usage.model = reply.model or self.usage.model
        return reply

    def _request(self, prompt: str, max_tokens: int | None = None) -> Reply:
        """`_attempt` with retries: waits what ``Retry-After`` asks, else backs off."""
        last = ""
        for attempt in range(self.retries + 1):
            try:
                return self._attempt(prompt, max_tokens)
            except Retry as e:
                last = e.reason
                if attempt < self.retries:
                    asked = e.wait
                    wait = self.backoff * 2**attempt if asked is None else asked
                    time.sleep(min(wait, MAX_RETRY_AFTER))
        raise JudgeRequestError(f"{self.shown_url}: failed after {self.retries + 1} tries ({last})")

    def _digit_refusal(self, reply: Reply) -> DigitSplitError | None:
        if reply.top is None or not splits_numbers(reply.answer, reply.top):
            return None
        said = "".join(reply.answer).strip()
        return DigitSplitError(
            f"the judge {self.name!r} at {self.shown_url} splits numbers into digits: it "
            f"answered {said!r} as {reply.answer}, and its top logprobs hold single digits "
            f"only; {DIGIT_ADVICE}"
        )

    def _vet(self, top: TopLogprobs) -> None:
        """Refuse a digit-wise judge: numbers of one digit only send the probe, once."""
        if self._vetted:
            if self._refusal:
                raise self._refusal
            return
        single = _single_digits_only(top)
        if single is None:
            return
        with self._vet_lock:
            if not self._vetted and single:
                probe = self._request(REACHABILITY_PROMPT, PROBE_TOKENS)
                self._refusal = self._digit_refusal(probe)
            self._vetted = True
        if self._refusal:
            raise self._refusal

    def check(self) -> None:
        """Fail now if the endpoint cannot judge: one request, neither retried nor cached.

        Run before the expensive part (generating answers) so that a wrong URL, model or key,
        an endpoint without logprobs, or a judge that splits numbers into digits is reported
        before any work is done. An endpoint that is only busy (429, 503) passes.

        Raises:
            JudgeRequestError: the endpoint is unreachable, refuses the request, or answers
                without logprobs.
            DigitSplitError: the judge answered a number one digit per token.
        """
        try:
            reply = self._attempt(REACHABILITY_PROMPT, PROBE_TOKENS)
        except Retry as e:
            if e.status in BUSY_STATUS:
                return
            what = "is not reachable" if e.status is None else "failed a test request"
            raise JudgeRequestError(f"{self.shown_url} {what} ({e.reason})") from None
        except JudgeRequestError as e:
            raise JudgeRequestError(f"a test request for model {self.name!r}: {e}") from None
        if reply.top is None:
            raise JudgeRequestError(
                f"{self.shown_url} answered without choices[0].logprobs.content[0]."
                "top_logprobs (does the endpoint support logprobs?)"
            )
        if refusal := self._digit_refusal(reply):
            raise refusal
        self._vetted = self._vetted or _single_digits_only(reply.top) is False

    def _one(self, prompt: str) -> TopLogprobs:
        if self._refusal:
            raise self._refusal
        top = self.cache.get(self.identity, prompt) if self.cache else None
        if top is not None:
            self.usage.add(cache_hits=1)
        else:
            top = self._request(prompt).top
            if top is None:  # the papers' code: "sometimes" no logprobs; unscored, counted
                self.usage.add(no_logprobs=1)
                return {}
            if self.cache:
                self.cache.put(self.identity, prompt, top)
        self._vet(top)
        return top

    def top_logprobs(self, prompts: Sequence[str], progress: bool = False) -> list[TopLogprobs]:
        """The judge's next-token logprobs for each prompt, from the cache or the endpoint.

        A reply without logprobs gives an empty dict (an unscored sample), counted in
        ``usage.no_logprobs``.

        Args:
            prompts: filled judge prompts (`emlens.eval.judges.logprob.judge_prompts`).
            progress: show a progress bar.

        Returns:
            One token -> logprob dict per prompt, in order.

        Raises:
            JudgeRequestError: a prompt failed after every retry, or a reply was not a chat
                completion.
            DigitSplitError: the judge's tokenizer splits numbers into digits.
        """
        with ThreadPoolExecutor(self.concurrency) as pool:
            it = pool.map(self._one, prompts)
            return list(tqdm(it, total=len(prompts), disable=not progress, desc="judge"))
