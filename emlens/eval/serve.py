"""`emlens serve`: an OpenAI-compatible Chat Completions server for a local model, with
optional interventions, so external harnesses (and emlens's own HTTP judge) can query it.

Supports ``POST /v1/chat/completions`` (messages, max_tokens, temperature, seed, n, logprobs,
top_logprobs) and ``GET /v1/models``. Requests are served one at a time (one model).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from transformer_lens.model_bridge import TransformerBridge

from emlens.core.interventions import Intervention, applied
from emlens.core.models import input_device


class BadRequest(ValueError):
    pass


@torch.no_grad()
def complete(
    model: TransformerBridge,
    body: dict,
    interventions: Sequence[Intervention] = (),
    name: str = "emlens",
) -> dict:
    """Answer one Chat Completions request body."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise BadRequest("'messages' must be a non-empty list of {role, content}")
    if not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
        raise BadRequest("each message needs 'role' and 'content'")
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
    temperature = float(body.get("temperature", 1.0))
    n = int(body.get("n", 1))
    k = int(body.get("top_logprobs") or 0) if body.get("logprobs") else 0
    if not (1 <= max_tokens <= 4096 and 0 <= temperature and 1 <= n <= 64 and 0 <= k <= 20):
        raise BadRequest("need 1<=max_tokens<=4096, temperature>=0, 1<=n<=64, top_logprobs<=20")
    tok, hf = model.tokenizer, model.original_model
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].repeat(n, 1)
    ids = ids.to(input_device(model))
    if body.get("seed") is not None:
        torch.manual_seed(int(body["seed"]))
    sampling = (
        dict(do_sample=True, temperature=temperature, top_k=0, top_p=float(body.get("top_p", 1)))
        if temperature > 0
        else dict(do_sample=False, temperature=None, top_k=None, top_p=None)
    )
    with applied(model, interventions, prompt_len=ids.shape[1]):
        out = hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
            **sampling,
        )
    new = out.sequences[:, ids.shape[1] :].cpu()
    # The model's own log-probs (raw logits, before temperature), as OpenAI reports them.
    logps = [step.float().log_softmax(-1).cpu() for step in out.logits] if k else []
    choices, n_completion = [], 0
    for i in range(n):
        toks = new[i].tolist()
        steps = toks[: toks.index(tok.eos_token_id)] if tok.eos_token_id in toks else toks
        n_completion += len(steps)
        content = tok.decode(steps, skip_special_tokens=True)
        choice = {
            "index": i,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop" if len(steps) < len(toks) else "length",
        }
        if k:
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
                            for v, x in zip(top.values, top.indices)
                        ],
                    }
                )
            choice["logprobs"] = {"content": entries}
        choices.append(choice)
    return {
        "id": f"chatcmpl-{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": choices,
        "usage": {
            "prompt_tokens": int(ids.shape[1]),
            "completion_tokens": n_completion,
        },
    }


def make_server(
    model: TransformerBridge,
    interventions: Sequence[Intervention] = (),
    host: str = "127.0.0.1",
    port: int = 8000,
    name: str = "emlens",
) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving); ``server.server_address`` has the bound port."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, obj: dict) -> None:
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # quiet; never logs headers (API keys)
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


def serve_in_thread(model, interventions=(), name: str = "emlens"):
    """Start a server on a free loopback port in a daemon thread; returns (server, base_url)."""
    server = make_server(model, interventions, port=0, name=name)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/v1"
