"""An OpenAI-compatible Chat Completions server for a local model, with interventions.

The OpenAI API's ``POST /v1/chat/completions`` (messages, max_tokens, temperature, top_p,
seed, n, logprobs, top_logprobs) and ``GET /v1/models``, answered by a model emlens loads,
optionally steered or ablated, so external harnesses (and emlens's own HTTP judge) can query
it. Requests are served one at a time (one model). The command is ``emlens serve``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import torch
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase

from emlens.core.interventions import Intervention, applied
from emlens.core.models import input_device


class BadRequest(ValueError):
    """A Chat Completions request body emlens cannot answer (HTTP 400)."""


@dataclass(frozen=True)
class _Request:
    """The fields of a Chat Completions body that `complete` uses, validated."""

    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float
    n: int
    top_logprobs: int  # 0: no logprobs
    top_p: float
    seed: int | None


def _parse(body: dict[str, Any]) -> _Request:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of {role, content}")
    if not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        raise BadRequest("each message needs 'role' and 'content'")
    temperature = float(body.get("temperature", 1.0))
    req = _Request(
        messages=msgs,
        max_tokens=int(body.get("max_tokens") or body.get("max_completion_tokens") or 16),
        temperature=temperature,
        n=int(body.get("n", 1)),
        top_logprobs=int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0,
        top_p=float(body.get("top_p", 1)) if temperature > 0 else 1.0,  # greedy: unused
        seed=None if body.get("seed") is None else int(body["seed"]),
    )
    if not (
        1 <= req.max_tokens <= 4096
        and 0 <= req.temperature
        and 1 <= req.n <= 64
        and 0 <= req.top_logprobs <= 20
    ):
        raise BadRequest("need 1<=max_tokens<=4096, temperature>=0, 1<=n<=64, top_logprobs<=20")
    return req


def _generate(
    model: TransformerBridge, req: _Request, interventions: Sequence[Intervention]
) -> tuple[int, Tensor, list[Tensor]]:
    """Sample the request's completions: prompt length, new tokens (CPU), per-step logits."""
    tok, hf = model.tokenizer, cast(Any, model.original_model)  # an HF model: has .generate
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
) -> dict[str, Any]:
    """Answer one Chat Completions request body, as the OpenAI API would.

    Args:
        model: the model that answers, under ``interventions``.
        body: the request (messages, max_tokens, temperature, seed, n, logprobs,
            top_logprobs, top_p).
        interventions: applied to every completion.
        name: the model name reported in the answer.

    Returns:
        The response body: ``choices`` (message, finish_reason, logprobs when asked) and
        ``usage``. Log-probs are the model's own (raw logits, before temperature).

    Raises:
        BadRequest: the body is not a request emlens can answer.
    """
    req, tok = _parse(body), model.tokenizer
    prompt_len, new, logits = _generate(model, req, interventions)
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
) -> ThreadingHTTPServer:
    """An HTTP server answering with `complete` (not yet serving).

    Args:
        model: the model that answers, under ``interventions``.
        interventions: applied to every completion.
        host: the address to bind.
        port: the port to bind; 0 picks a free one (``server.server_port``).
        name: the model name ``/v1/models`` lists and answers report.

    Returns:
        The server; ``server.serve_forever()`` serves.
    """
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        """Routes ``/v1/models`` and ``/v1/chat/completions`` (to `complete`); JSON errors."""

        def _send(self, code: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # quiet; never logs headers (API keys)
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with lock:
                    self._send(200, complete(model, body, interventions, name))
            except (BadRequest, json.JSONDecodeError, TypeError, ValueError) as e:
                self._send(400, {"error": {"message": str(e), "type": "invalid_request_error"}})

    return ThreadingHTTPServer((host, port), Handler)


def serve_in_thread(
    model: TransformerBridge, interventions: Sequence[Intervention] = (), name: str = "emlens"
) -> tuple[ThreadingHTTPServer, str]:
    """Serve on a free loopback port in a daemon thread.

    Returns:
        The server (``server.shutdown()`` stops it) and its base URL, ``http://.../v1``.

    Example:
        >>> server, url = serve_in_thread(model, name="smollm2")
        >>> judge = HTTPJudge(url, "smollm2", api_key_env="NONE")
    """
    host = "127.0.0.1"
    server = make_server(model, interventions, host=host, port=0, name=name)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_port}/v1"
