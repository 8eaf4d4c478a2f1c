"""The papers' judge on OpenAI or Azure OpenAI, through the official ``openai`` SDK.

The same request as `emlens.eval.judges.http.HTTPJudge` (the judge prompt as one user message,
``max_tokens=1``, temperature 0, top-20 logprobs), the same aggregation
(`emlens.eval.judges.logprob.aggregate`), cache, retries (waiting what ``Retry-After`` asks), usage
counts and refusal of digit-wise tokenizers (`emlens.eval.judges.remote.RemoteJudge`); the
SDK builds the request: OpenAI's, or Azure's (endpoint, deployment, ``api-version``, the
``api-key`` header). Needs the optional extra: ``pip install 'emlens[openai]'``.

The API key is read from its environment variable when the judge is made, kept only by the
SDK client, and never enters the cache key, the cache file or a message.
"""

from __future__ import annotations

import os
from typing import Any

from emlens.eval.judges.http import key_allowed, redacted
from emlens.eval.judges.remote import RETRY_STATUS, RemoteJudge, judge_params
from emlens.eval.judges.reply import JudgeRequestError, Reply, Retry, parse_reply, retry_after

__all__ = ["AZURE_API_VERSION", "OpenAIJudge"]

AZURE_API_VERSION = "2024-10-21"  # Azure OpenAI's GA inference API (logprobs supported)


def _openai() -> Any:
    try:
        import openai
    except ImportError as e:
        raise ImportError(
            "the OpenAI / Azure OpenAI judge needs the openai package: "
            "pip install 'emlens[openai]' (or use an http(s) URL judge, no SDK needed)"
        ) from e
    return openai


def _api_key(env: str) -> str:
    key = os.environ.get(env)
    if not key:
        raise ValueError(
            f"the judge's API key: environment variable {env} is not set or empty (set it, "
            "or name the variable that holds the key with api_key_env / --judge-key-env)"
        )
    return key


class OpenAIJudge(RemoteJudge):
    """The papers' judge (GPT-4o) through the ``openai`` SDK, on OpenAI or Azure OpenAI.

    Args:
        model: the model on OpenAI (e.g. ``gpt-4o-2024-08-06``), or the deployment on Azure
            (e.g. ``gpt-4o``).
        base_url: an OpenAI-compatible API root (default: OpenAI's, or ``$OPENAI_BASE_URL``).
        azure_endpoint: an Azure OpenAI resource, e.g. ``https://NAME.openai.azure.com``;
            set, the judge is Azure's.
        api_version: Azure's ``api-version`` (Azure only).
        api_key_env: environment variable holding the key (default ``OPENAI_API_KEY``, or
            ``AZURE_OPENAI_API_KEY`` on Azure).
        concurrency: requests in flight at once.
        retries: retries after the first try, for timeouts, 429 and 5xx.
        backoff: seconds before the first retry without ``Retry-After``; doubled at each next.
        timeout: seconds per request.
        cache: the `emlens.eval.judges.http.JudgeCache` file, None for no cache.
        top_logprobs: how many next tokens the judge returns.

    Attributes:
        params: the request but its messages; with the endpoint, the judge's cache identity.
        usage: requests, cache hits, replies without logprobs, tokens, cost
            (`emlens.eval.judges.usage.JudgeUsage`).

    Raises:
        ImportError: the ``openai`` package is not installed.
        ValueError: the key's environment variable is unset, or an argument is out of range.

    Examples:
        These need an OpenAI or Azure OpenAI key and the network, so they are not run here:

        >>> judge = OpenAIJudge("gpt-4o-2024-08-06")  # key from $OPENAI_API_KEY  # doctest: +SKIP
        >>> judge = OpenAIJudge(
        ...     "gpt-4o", azure_endpoint="https://my-resource.openai.azure.com",
        ...     api_version="2024-10-21")  # key from $AZURE_OPENAI_API_KEY  # doctest: +SKIP
        >>> judge.check()  # one test request: reachable, logprobs, whole-number tokens
        ... # doctest: +SKIP
        >>> print(judge.usage.summary())  # after a run: requests, cache hits, tokens, cost
        ... # doctest: +SKIP
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str = AZURE_API_VERSION,
        api_key_env: str | None = None,
        concurrency: int = 16,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 60.0,
        cache: str | os.PathLike[str] | None = "~/.cache/emlens/judge.sqlite",
        top_logprobs: int = 20,
    ):
        super().__init__(concurrency, retries, backoff, cache)
        if not model:
            raise ValueError("an OpenAI judge needs a model (Azure: the deployment), e.g. gpt-4o")
        if base_url and azure_endpoint:
            raise ValueError("an OpenAI judge takes base_url (OpenAI) or azure_endpoint, not both")
        openai = _openai()
        env = api_key_env or ("AZURE_OPENAI_API_KEY" if azure_endpoint else "OPENAI_API_KEY")
        common: dict[str, Any] = {"api_key": _api_key(env), "max_retries": 0, "timeout": timeout}
        self.extra: dict[str, Any] = {}
        if azure_endpoint:
            if not azure_endpoint.startswith(("http://", "https://")):
                raise ValueError(f"an Azure endpoint is an https:// URL, not {azure_endpoint!r}")
            self._client = openai.AzureOpenAI(
                azure_endpoint=azure_endpoint, api_version=api_version, **common
            )
            root = f"{azure_endpoint.rstrip('/')}/openai/deployments/{model}"
            self.extra = {"api_version": api_version}
        else:
            self._client = openai.OpenAI(base_url=base_url, **common)
            root = str(self._client.base_url).rstrip("/")
        self.url = f"{root}/chat/completions"
        self.shown_url = redacted(self.url)
        if not key_allowed(self.url, named=api_key_env is not None):
            raise ValueError(
                f"refusing to send ${env} over plain http to {self.shown_url}: use https, or "
                f"name the variable for this endpoint (api_key_env={env!r}, --judge-key-env "
                f"{env}) to send it anyway"
            )
        self.model = self.name = model
        self.api_key_env = env
        self.params = judge_params(model, top_logprobs)

    @property
    def identity(self) -> dict[str, Any]:
        """What the cache keys answers by: the endpoint, Azure's api-version, the parameters.

        OpenAI's endpoint is the same as `HTTPJudge`'s for the same URL, so the two share
        answers; the API key never enters.
        """
        return {"url": self.url, **self.extra, **self.params}

    def _send(self, prompt: str, max_tokens: int | None) -> Reply:
        """One SDK call (its own retries off): `Retry` for timeouts, 429 and 5xx."""
        openai = _openai()
        kw = {**self.params, "messages": [{"role": "user", "content": prompt}]}
        if max_tokens is not None:
            kw["max_tokens"] = max_tokens
        try:
            resp = self._client.chat.completions.create(**kw)
        except openai.APIStatusError as e:
            code = e.status_code
            if code in RETRY_STATUS:
                raise Retry(f"HTTP {code}", code, retry_after(e.response.headers)) from None
            detail = str(e.message)[:300]
            raise JudgeRequestError(f"{self.shown_url} answered HTTP {code}: {detail}") from None
        except openai.APIConnectionError as e:  # timeouts too
            raise Retry(f"{type(e).__name__}: {e}") from None
        except (openai.APIResponseValidationError, ValueError) as e:
            raise JudgeRequestError(
                f"{self.shown_url} answered a body that is not a chat completion: {e}"
            ) from None
        body = resp.model_dump() if hasattr(resp, "model_dump") else resp
        return parse_reply(body, self.shown_url)
