"""A loopback fake of the Chat Completions API for the remote judges' tests.

``Fake`` answers each POST as the next ``Fake.plan`` item says: ``"ok"`` (whole-number
logprobs, score 64), an int status, a ``(status, headers)`` pair (429 with ``Retry-After``),
``"no-logprobs"``, ``"malformed"`` (HTML), ``"malformed-json"``, ``"digits"`` (a judge whose
tokenizer splits "85" into "8", "5") or ``"five"`` (a whole-number judge answering 5). It
records each request's arrival time, path, headers (lower-cased) and body in ``Fake.seen``.
"""

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

L = math.log
KEY = "sk-test-secret-789"


def completion(top, answer, model="gpt-4o-2024-08-06"):
    """A Chat Completions body: ``answer`` tokens, the first with ``top`` logprobs."""
    content = [{"token": t, "logprob": -0.1, "top_logprobs": []} for t in answer]
    if content and top is not None:
        content[0]["top_logprobs"] = [{"token": t, "logprob": lp} for t, lp in top]
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(answer)},
                "finish_reason": "length",
                "logprobs": None if top is None else {"content": content},
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": len(answer), "total_tokens": 101},
    }


WHOLE = [("80", L(0.6)), ("40", L(0.4))]  # score 64
DIGITS = [("8", L(0.6)), ("7", L(0.3)), ("9", L(0.1))]  # "85" arriving as "8", "5"


class Fake(BaseHTTPRequestHandler):
    """Answers each POST as the next ``plan`` item says (default "ok"); records requests."""

    plan: ClassVar[list] = []
    seen: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Fake.seen.append(
            {
                "time": time.monotonic(),
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        step = Fake.plan.pop(0) if Fake.plan else "ok"
        kind, headers = "application/json", {}
        if isinstance(step, tuple):  # (status, headers)
            code, headers = step
            data = json.dumps({"error": {"message": "slow down", "code": str(code)}}).encode()
        elif isinstance(step, int):
            code, data = step, json.dumps({"error": {"message": "boom"}}).encode()
        else:
            code, data, kind = 200, *self.reply(step, body)
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    @staticmethod
    def reply(step, body):
        if step == "malformed":
            return b"<html>502 Bad Gateway (proxy)</html>", "text/html"
        if step == "malformed-json":
            return b'{"choices": [', "application/json"
        if step == "no-logprobs":
            return json.dumps(completion(None, ["80"])).encode(), "application/json"
        if step == "digits":
            answer = ["8", "5"][: body["max_tokens"]]
            return json.dumps(completion(DIGITS, answer, "qwen")).encode(), "application/json"
        if step == "five":  # a whole-number judge that answers one digit
            five = [("5", L(0.9)), ("6", L(0.1))]
            return json.dumps(completion(five, ["5"])).encode(), "application/json"
        return json.dumps(completion(WHOLE, ["80"])).encode(), "application/json"

    def log_message(self, *a):
        pass


@pytest.fixture(name="fake")
def fake_server(monkeypatch):
    """The fake's root URL (``/v1`` is added for OpenAI), with the test key in the env."""
    monkeypatch.setenv("JUDGE_KEY", KEY)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Fake.seen.clear()
    Fake.plan = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
