"""An OpenAI-compatible Chat Completions server for a local model, with interventions.

The OpenAI API's ``POST /v1/chat/completions`` (messages, max_tokens, temperature, top_p,
seed, n, logprobs, top_logprobs, stream; `emlens.eval.serve.requests`) and ``GET /v1/models``,
answered by a model emlens loads, optionally steered or ablated, so external harnesses (and emlens's
own HTTP judge) can query it. The command is ``emlens serve``.

The server holds up under load (`ServeLimits`): requests are answered one at a time (one
model) from a bounded queue (503 with ``Retry-After`` when full); one request's work
(``n x max_tokens``) and body size are capped (400, 413); generation stops when its client
has gone; a slow client times out without holding the model; and a bearer token (from an
environment variable) is required when bound to anything but loopback.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from http.server import ThreadingHTTPServer
from typing import Any, cast

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase, StoppingCriteria, StoppingCriteriaList

from emlens.core._arch import hf_model
from emlens.core.interventions import Intervention, applied
from emlens.core.models import input_device
from emlens.eval.serve.http import ServeLimits, http_server
from emlens.eval.serve.requests import MAX_WORK, ChatRequest, parse_request

__all__ = [
    "ClientGone",
    "complete",
    "make_server",
    "serve_in_thread",
]


class ClientGone(RuntimeError):
    """The client closed its connection; generation for it stopped early."""


class _Until(StoppingCriteria):
    """Stops every sequence once ``stop()`` is true (checked once per new token)."""

    def __init__(self, stop: Callable[[], bool]):
        self.stop = stop

    def __call__(self, input_ids: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # noqa: ARG002
        done = self.stop()
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _generate(
    model: TransformerBridge,
    req: ChatRequest,
    interventions: Sequence[Intervention],
    stop: Callable[[], bool] | None = None,
) -> tuple[int, Tensor, list[Tensor]]:
    """Sample the request's completions: prompt length, new tokens (CPU), per-step logits."""
    tok, hf = model.tokenizer, cast(Any, hf_model(model))  # has .generate
    text = tok.apply_chat_template(req.messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].repeat(req.n, 1)
    ids = ids.to(input_device(model))
    if req.seed is not None:
        torch.manual_seed(req.seed)
    sampling: dict[str, Any] = (
        {"do_sample": True, "temperature": req.temperature, "top_k": 0, "top_p": req.top_p}
        if req.temperature > 0
        else {"do_sample": False, "temperature": None, "top_k": None, "top_p": None}
    )
    with applied(model, interventions, prompt_len=ids.shape[1]):
        out = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=req.max_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            stopping_criteria=StoppingCriteriaList([_Until(stop)] if stop else []),
            **sampling,
        )
    return ids.shape[1], out.sequences[:, ids.shape[1] :].cpu(), list(out.logits)


def _logprobs(
    tok: PreTrainedTokenizerBase, steps: list[int], logps: list[Tensor], i: int, k: int
) -> list[dict[str, Any]]:
    """The ``logprobs.content`` of completion ``i``: each token with its top ``k``."""
    entries = []
    for j, t in enumerate(steps):
        lp = logps[j][i]
        top = lp.topk(k)
        entries.append(
            {
                "token": tok.decode([t]),
                "logprob": float(lp[t]),
                "top_logprobs": [
                    {"token": tok.decode([int(x)]), "logprob": float(v)}
                    for v, x in zip(top.values, top.indices, strict=True)
                ],
            }
        )
    return entries


@torch.no_grad()
def complete(
    model: TransformerBridge,
    body: dict[str, Any],
    interventions: Sequence[Intervention] = (),
    name: str = "emlens",
    max_work: int = MAX_WORK,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Answer one Chat Completions request body, as the OpenAI API would.

    Args:
        model: the model that answers, under ``interventions``.
        body: the request (messages, max_tokens, temperature, seed, n, logprobs,
            top_logprobs, top_p); message content a string or a list of text parts.
        interventions: applied to every completion.
        name: the model name reported in the answer.
        max_work: the most ``n x max_tokens`` the request may ask for.
        stop: checked after every new token; true stops generating (the client has gone).

    Returns:
        The response body: ``choices`` (message, finish_reason, logprobs when asked) and
        ``usage``. Log-probs are the model's own (raw logits, before temperature).

    Raises:
        BadRequest: the body is not a request emlens can answer.
        ClientGone: ``stop`` turned true before the answer was complete.
    """
    req, tok = parse_request(body, max_work), model.tokenizer
    prompt_len, new, logits = _generate(model, req, interventions, stop)
    if stop is not None and stop():
        raise ClientGone("the client closed its connection before its answer was complete")
    k = req.top_logprobs
    logps = [step.float().log_softmax(-1).cpu() for step in logits] if k else []
    choices, n_completion = [], 0
    for i in range(req.n):
        toks = new[i].tolist()
        steps = toks[: toks.index(tok.eos_token_id)] if tok.eos_token_id in toks else toks
        n_completion += len(steps)
        choice: dict[str, Any] = {
            "index": i,
            "message": {
                "role": "assistant",
                "content": tok.decode(steps, skip_special_tokens=True),
            },
            "finish_reason": "stop" if len(steps) < len(toks) else "length",
        }
        if k:
            choice["logprobs"] = {"content": _logprobs(tok, steps, logps, i, k)}
        choices.append(choice)
    return {
        "id": f"chatcmpl-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": choices,
        "usage": {"prompt_tokens": prompt_len, "completion_tokens": n_completion},
    }


def make_server(
    model: TransformerBridge,
    interventions: Sequence[Intervention] = (),
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "emlens",
    limits: ServeLimits | None = None,
) -> ThreadingHTTPServer:
    """An HTTP server answering with `complete` (not yet serving).

    Args:
        model: the model that answers, under ``interventions``.
        interventions: applied to every completion.
        host: the address to bind; anything but loopback needs ``limits.token_env`` set.
        port: the port to bind; 0 picks a free one (``server.server_port``).
        name: the model name ``/v1/models`` lists and answers report.
        limits: the server's bounds (default `ServeLimits()`).

    Returns:
        The server; ``server.serve_forever()`` serves.

    Raises:
        ValueError: ``host`` is not loopback and no bearer token is set.

    Examples:
        >>> server = make_server(model, port=0, limits=ServeLimits(max_queue=4))
        >>> server.server_address[0]  # loopback; server.serve_forever() serves
        '127.0.0.1'
        >>> server.server_close()

        Any other address needs a bearer token in ``$EMLENS_SERVE_TOKEN``
        (``limits.token_env``):

        >>> make_server(model, host="0.0.0.0", limits=ServeLimits(max_queue=4))
        Traceback (most recent call last):
        ...
        ValueError: serving on '0.0.0.0' (not loopback) needs a bearer token: ...
    """
    limits = limits or ServeLimits()

    def answer(body: Any, stop: Callable[[], bool]) -> dict[str, Any]:
        return complete(model, body, interventions, name, limits.max_work, stop)

    def check(body: Any) -> ChatRequest:
        return parse_request(body, limits.max_work)

    return http_server(answer, check, name, host, port, limits)


def serve_in_thread(
    model: TransformerBridge,
    interventions: Sequence[Intervention] = (),
    name: str = "emlens",
    limits: ServeLimits | None = None,
) -> tuple[ThreadingHTTPServer, str]:
    """Serve `complete` on a free loopback port in a daemon thread.

    Args:
        model: the model that answers, under ``interventions``.
        interventions: applied to every completion.
        name: the model name ``/v1/models`` lists and answers report.
        limits: the server's bounds (default `ServeLimits()`).

    Returns:
        The server (``server.shutdown()`` stops it) and its base URL, ``http://.../v1``.

    Examples:
        >>> from emlens.eval.judges.http import HTTPJudge
        >>> server, url = serve_in_thread(model, name="tiny")
        >>> judge = HTTPJudge(url, "tiny", cache=None)
        >>> judge.check()  # the endpoint answers with logprobs
        >>> server.shutdown()
    """
    host = "127.0.0.1"
    server = make_server(model, interventions, host, 0, name, limits)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_port}/v1"
