"""The HTTP side of `emlens.eval.serve.server`: routes, bearer token, caps, bounded queue.

Knows nothing of models: it answers ``POST /v1/chat/completions`` with a callable
``answer(body, stop) -> response`` and checks everything it can before that callable runs, in
this order: route, token (401), body size (413), body arrival (408 for a slow client), JSON
and request fields (400), a place in the queue (503 with ``Retry-After``), then the model's
turn. A client that
leaves while waiting is skipped; one that leaves while answered stops its generation
(``stop()`` is true once its socket is closed).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import select
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from emlens.eval.serve.requests import MAX_WORK, BadRequest

Answer = Callable[[Any, Callable[[], bool]], dict[str, Any]]  # (body, stop) -> response


@dataclass(frozen=True)
class ServeLimits:
    """What one `emlens serve` process bounds.

    Attributes:
        max_work: the most ``n x max_tokens`` one request may ask for (else 400).
        max_queue: requests waiting for the model beyond the one answered (else 503).
        max_body: the largest request body, bytes (else 413).
        timeout: seconds a client may take to send its request (else 408, connection closed).
        retry_after: seconds a 503 asks the client to wait (``Retry-After``).
        token_env: environment variable holding the bearer token; when it is set every
            request needs ``Authorization: Bearer <token>``, and a server bound to anything but
            loopback refuses to start without it.
    """

    max_work: int = MAX_WORK
    max_queue: int = 8
    max_body: int = 1 << 20
    timeout: float = 30.0
    retry_after: int = 5
    token_env: str = "EMLENS_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Examples:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to a public address
        return False


def client_gone(sock: socket.socket) -> bool:
    """Whether the peer has closed ``sock`` (readable, and a peek reads end-of-file)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):  # reset, or already closed
        return True


class _Server(ThreadingHTTPServer):
    """A threading server that carries what its handlers share."""

    daemon_threads = True
    # the listen backlog (socketserver's default is 5): a burst of clients beyond it had its
    # connections reset instead of answered or refused with 503
    request_queue_size = 256

    def __init__(
        self,
        addr: tuple[str, int],
        answer: Answer,
        check: Callable[[Any], object],
        name: str,
        limits: ServeLimits,
    ):
        super().__init__(addr, _Handler)
        self.answer, self.check, self.name, self.limits = answer, check, name, limits
        self.token = os.environ.get(limits.token_env) or None
        self.places = threading.Semaphore(limits.max_queue + 1)  # waiting + answered
        self.turn = threading.Lock()  # one model: one answer at a time


def completion_chunks(
    response: dict[str, Any], include_usage: bool = False
) -> list[dict[str, Any]]:
    """A chat completion as the chunks OpenAI streams (``"stream": true``): per choice its role,
    its content (with its logprobs) and its finish reason; then the usage when asked. The
    completion is generated whole first: streaming here is the format, not earlier tokens."""
    head = {k: response[k] for k in ("id", "created", "model")}
    head["object"] = "chat.completion.chunk"
    chunks = []
    for c in response["choices"]:
        i, content = c["index"], c["message"]["content"]
        delta: dict[str, Any] = {"index": i, "delta": {"role": "assistant", "content": ""}}
        text: dict[str, Any] = {"index": i, "delta": {"content": content}}
        if "logprobs" in c:
            text["logprobs"] = c["logprobs"]
        end = {"index": i, "delta": {}, "finish_reason": c["finish_reason"]}
        chunks += [head | {"choices": [x | {"finish_reason": None}]} for x in (delta, text)]
        chunks.append(head | {"choices": [end]})
    if include_usage:
        u = response["usage"]
        usage = u | {"total_tokens": u["prompt_tokens"] + u["completion_tokens"]}
        chunks.append(head | {"choices": [], "usage": usage})
    return chunks


class _Handler(BaseHTTPRequestHandler):
    """Routes ``/v1/models`` and ``/v1/chat/completions``; JSON errors; never logs headers."""

    server: _Server

    def setup(self) -> None:
        self.request.settimeout(self.server.limits.timeout)  # a slow client cannot stall
        super().setup()

    def _send(self, code: int, obj: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: list[dict[str, Any]]) -> None:
        """Send ``chunks`` as server-sent events, ``data: [DONE]`` last; the connection then
        closes (HTTP/1.0), which ends the body."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        kind = "invalid_request_error" if code < 500 else "server_error"
        self._send(code, {"error": {"message": message, "type": kind}}, headers)

    def log_message(self, *args: Any) -> None:  # quiet; never logs headers (API keys)
        pass

    def _authorised(self) -> bool:
        token = self.server.token
        sent = self.headers.get("Authorization", "")
        if token is None or hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
            return True
        self._error(401, "a bearer token is required (Authorization: Bearer ...)")
        return False

    def do_GET(self) -> None:
        if not self._authorised():
            return
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            data = [{"id": self.server.name, "object": "model"}]
            self._send(200, {"object": "list", "data": data})
        else:
            self._error(404, f"no route {self.path}")

    def _body(self) -> Any:
        """The decoded JSON body; an error is sent and None returned when there is none."""
        size, cap = self.headers.get("Content-Length", ""), self.server.limits.max_body
        if not size.isdigit():
            self._error(411, "a Content-Length header (a whole number of bytes) is required")
            return None
        if int(size) > cap:
            self._error(413, f"the request body of {size} bytes is over the limit of {cap}")
            return None
        try:
            return json.loads(self.rfile.read(int(size)))
        except TimeoutError:
            wait = self.server.limits.timeout
            self._error(408, f"the request body did not arrive within {wait} s")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._error(400, f"the body is not JSON: {e}")
        return None

    def do_POST(self) -> None:
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._error(404, f"no route {self.path}")
            return
        if not self._authorised() or (body := self._body()) is None:
            return
        srv = self.server
        try:
            srv.check(body)  # a bad request never waits in the queue
        except BadRequest as e:
            self._error(400, str(e))
            return
        if not srv.places.acquire(blocking=False):
            retry = str(srv.limits.retry_after)
            self._error(503, "the server is busy: retry later", {"Retry-After": retry})
            return
        try:
            with srv.turn:
                if client_gone(self.connection):
                    return
                answer = srv.answer(body, lambda: client_gone(self.connection))
                if body.get("stream"):
                    usage = (body.get("stream_options") or {}).get("include_usage", False)
                    self._stream(completion_chunks(answer, usage))
                else:
                    self._send(200, answer)
        except BadRequest as e:
            self._error(400, str(e))
        except Exception as e:  # an answer that failed: the server stays up
            if not client_gone(self.connection):
                self._error(500, f"{type(e).__name__}: {e}")
        finally:
            srv.places.release()


def http_server(
    answer: Answer,
    check: Callable[[Any], object],
    name: str,
    host: str,
    port: int,
    limits: ServeLimits,
) -> ThreadingHTTPServer:
    """A server answering Chat Completions with ``answer`` under ``limits`` (not yet serving).

    Args:
        answer: ``answer(body, stop)``, the response body; raises `BadRequest` for a 400.
        check: validates a body before it queues; raises `BadRequest` for a 400.
        name: the model name ``/v1/models`` lists.
        host: the address to bind.
        port: the port; 0 picks a free one.
        limits: the bounds.

    Returns:
        The server.

    Raises:
        ValueError: ``host`` is not loopback and ``limits.token_env`` is unset.
    """
    if not is_loopback(host) and not os.environ.get(limits.token_env):
        raise ValueError(
            f"serving on {host!r} (not loopback) needs a bearer token: set the environment "
            f"variable {limits.token_env} (clients send Authorization: Bearer <token>)"
        )
    return _Server((host, port), answer, check, name, limits)
