import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
import torch

from emlens.core.interventions import Steer
from emlens.eval.serve import http as _serve_http
from emlens.eval.serve.http import ServeLimits
from emlens.eval.serve.requests import BadRequest
from emlens.eval.serve.server import make_server, serve_in_thread


def post(url, body):
    req = urllib.request.Request(
        url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


def test_serve_answers_a_real_http_client_with_logprobs(smol):
    srv, url = serve_in_thread(smol, name="smollm2")
    try:
        body = {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 8,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 5,
        }
        out = post(url, body)
        choice = out["choices"][0]
        assert "Paris" in choice["message"]["content"]
        steps = choice["logprobs"]["content"]
        assert 1 <= len(steps) <= 8
        for st in steps:
            tops = st["top_logprobs"]
            assert len(tops) == 5 and tops[0]["logprob"] >= tops[-1]["logprob"]
            assert st["logprob"] <= 0 and st["logprob"] == pytest.approx(tops[0]["logprob"])
        with urllib.request.urlopen(url + "/models") as r:
            assert json.load(r)["data"][0]["id"] == "smollm2"
        with pytest.raises(urllib.error.HTTPError) as e:
            post(url, {"messages": "hi"})
        assert e.value.code == 400
    finally:
        srv.shutdown()


def test_serve_applies_interventions(tiny):
    model = tiny("llama")
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0}
    plain, url = serve_in_thread(model)
    steered, url2 = serve_in_thread(model, [Steer(torch.ones(1, 64) * 5, (1,), 1.0)])
    try:
        a = post(url, body)["choices"][0]["message"]["content"]
        b = post(url2, body)["choices"][0]["message"]["content"]
        assert a != b
        assert (
            post(url, {**body, "n": 3, "temperature": 1.0, "seed": 1})["choices"][2]["index"] == 2
        )
    finally:
        plain.shutdown()
        steered.shutdown()


# Issue 11: a server that holds up.

HI = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0}


def call(url, body, headers=(), timeout=60):
    """(status, decoded body, headers) of one POST, errors included."""
    req = urllib.request.Request(
        url + "/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", **dict(headers)},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.load(e), e.headers


@pytest.fixture
def tiny_server(tiny):
    started = []

    def start(limits=None, interventions=()):
        srv, url = serve_in_thread(tiny("llama"), interventions, "tiny", limits)
        started.append(srv)
        return url

    yield start
    for srv in started:
        srv.shutdown()


def test_content_part_lists_are_read_as_text(tiny_server):
    url = tiny_server()
    plain = call(url, {**HI, "messages": [{"role": "user", "content": "Hi\nthere"}]})
    parts = [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]
    listed = call(url, {**HI, "messages": [{"role": "user", "content": parts}]})
    assert listed[0] == plain[0] == 200
    assert listed[1]["choices"] == plain[1]["choices"]
    image = [*parts, {"type": "image_url", "image_url": {"url": "x"}}]
    code, err, _ = call(url, {**HI, "messages": [{"role": "user", "content": image}]})
    assert code == 400 and "messages[0].content[2]" in err["error"]["message"]


def test_no_small_default_cap(tiny_server):
    """Issue 24: OpenAI's API has no 16-token default."""
    url = tiny_server(ServeLimits(max_work=24))
    body = {"messages": HI["messages"], "temperature": 0}
    code, out, _ = call(url, body)
    tokens = out["usage"]["completion_tokens"]
    assert code == 200 and (tokens == 24 or out["choices"][0]["finish_reason"] == "stop")
    assert tokens > 16 or out["choices"][0]["finish_reason"] == "stop"
    code, out, _ = call(url, {**body, "n": 2})
    assert code == 200 and out["usage"]["completion_tokens"] <= 24  # 12 each at most
    for bad in ({"stream": "yes"}, {"stream": True, "stream_options": {"include_usage": 1}}):
        code, err, _ = call(url, {**HI, **bad})
        assert code == 400 and "stream" in err["error"]["message"]


def _events(url, body):
    """The decoded ``data:`` events of a streamed answer, ``[DONE]`` last."""
    req = urllib.request.Request(
        url + "/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = [x for x in r.read().decode().split("\n\n") if x]
    assert all(x.startswith("data: ") for x in lines) and lines[-1] == "data: [DONE]"
    return [json.loads(x[6:]) for x in lines[:-1]]


def test_a_streamed_answer_is_the_answer_in_openai_chunks(tiny_server):
    url = tiny_server()
    body = {**HI, "max_tokens": 6, "n": 2, "logprobs": True, "top_logprobs": 2}
    whole = call(url, body)[1]
    chunks = _events(url, {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    for want in whole["choices"]:
        mine = [
            c["choices"][0]
            for c in chunks
            if c["choices"] and c["choices"][0]["index"] == want["index"]
        ]
        assert mine[0]["delta"]["role"] == "assistant"
        text = "".join(x["delta"].get("content", "") for x in mine)
        assert text == want["message"]["content"]
        assert [x["finish_reason"] for x in mine][-1] == want["finish_reason"]
        assert next(x["logprobs"] for x in mine if "logprobs" in x) == want["logprobs"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == (
        whole["usage"]["prompt_tokens"] + whole["usage"]["completion_tokens"]
    )


def test_the_openai_sdk_is_a_client(tiny_server):
    """The official SDK, as researchers and inspect call a server: plain, streamed, no limit."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=tiny_server(ServeLimits(max_work=40)), api_key="unused")
    msgs = [{"role": "user", "content": "Hi"}]
    plain = client.chat.completions.create(model="tiny", messages=msgs, temperature=0, max_tokens=6)
    stream = client.chat.completions.create(
        model="tiny", messages=msgs, temperature=0, max_tokens=6, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert plain.choices[0].message.content and streamed == plain.choices[0].message.content
    free = client.chat.completions.create(model="tiny", messages=msgs, temperature=0)
    assert free.usage.completion_tokens > 16 or free.choices[0].finish_reason == "stop"


def test_one_request_work_and_body_are_bounded(tiny_server):
    url = tiny_server(ServeLimits(max_work=8, max_body=2048))
    code, err, _ = call(url, {**HI, "n": 64, "max_tokens": 4096}, timeout=20)
    assert code == 400 and "64 x 4096" in err["error"]["message"]
    assert "--max-work" in err["error"]["message"]
    assert call(url, {**HI, "n": 2, "max_tokens": 4})[0] == 200  # 8 tokens: at the limit
    assert call(url, {**HI, "n": 3, "max_tokens": 3})[0] == 400
    for bad in ([1, 2], {**HI, "temperature": float("nan")}, {**HI, "max_tokens": "lots"}):
        assert call(url, bad)[0] == 400, bad
    big = {**HI, "messages": [{"role": "user", "content": "x" * 4096}]}
    code, err, _ = call(url, big)
    assert code == 413 and "limit of 2048" in err["error"]["message"]


def test_a_bearer_token_is_required_off_loopback(tiny, monkeypatch):
    monkeypatch.delenv("EMLENS_SERVE_TOKEN", raising=False)
    with pytest.raises(ValueError, match="EMLENS_SERVE_TOKEN"):
        make_server(tiny("llama"), host="0.0.0.0", port=0)
    monkeypatch.setenv("EMLENS_SERVE_TOKEN", "s3cret")
    srv = make_server(tiny("llama"), host="0.0.0.0", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/v1"
    try:
        assert call(url, HI)[0] == 401
        assert call(url, HI, {"Authorization": "Bearer wrong"})[0] == 401
        assert call(url, HI, {"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        srv.shutdown()


def test_a_full_queue_answers_503_with_retry_after():
    release, running = threading.Event(), threading.Event()

    def answer(body, stop):  # noqa: ARG001
        running.set()
        release.wait(20)
        return {"ok": body["messages"][0]["content"]}

    def check(body):
        if not isinstance(body.get("messages"), list):
            raise BadRequest("'messages' must be a list")

    limits = ServeLimits(max_queue=1, retry_after=7)
    srv = _serve_http.http_server(answer, check, "fake", "127.0.0.1", 0, limits)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_port}/v1"
    results = []
    try:
        first = threading.Thread(target=lambda: results.append(call(url, HI)))
        first.start()
        assert running.wait(10)
        second = threading.Thread(target=lambda: results.append(call(url, HI)))
        second.start()
        time.sleep(0.3)  # the second waits in the queue's one place
        code, _, headers = call(url, HI)
        assert code == 503 and headers["Retry-After"] == "7"
        assert call(url, {"messages": "no"})[0] == 400  # bad requests never queue
        release.set()
        first.join(10)
        second.join(10)
        assert [r[0] for r in results] == [200, 200]
    finally:
        release.set()
        srv.shutdown()


def raw_socket(url, head, body=b""):
    """A raw connection that has sent ``head`` (request line and headers) and ``body``."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(head + body)
    return sock


def post_head(n_bytes):
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {n_bytes}\r\n\r\n"
    ).encode()


def test_load_small_requests_are_answered_and_the_server_stays_up(tiny_server, monkeypatch):
    """Concurrent clients, a slow client, an oversized request and a client that leaves."""
    steps = {}  # connection (kept alive) -> stop checks (one per new token), whether gone

    def spying_gone(sock, real=_serve_http.client_gone):
        gone = real(sock)
        n, _ = steps.get(sock, (0, False))
        steps[sock] = (n + 1, gone)
        return gone

    monkeypatch.setattr(_serve_http, "client_gone", spying_gone)
    t0 = time.monotonic()
    limits = ServeLimits(max_queue=2, max_body=4096, timeout=2.0, retry_after=1)
    url = tiny_server(limits)
    # the expensive request (8 x 480 greedy tokens, ~10 s) from a client that will leave
    long = json.dumps({**HI, "n": 8, "max_tokens": 480, "temperature": 0}).encode()
    leaving = raw_socket(url, post_head(len(long)), long)
    deadline = time.monotonic() + 20
    while not any(n > 3 for n, _ in steps.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    slow = raw_socket(url, post_head(100), b'{"messages": ')  # never sends the rest
    conn = http.client.HTTPConnection("127.0.0.1", int(url.rsplit(":", 1)[1][:-3]), timeout=20)
    conn.putrequest("POST", "/v1/chat/completions")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    oversized = conn.getresponse().status
    statuses, latencies = [], []

    def small():
        start = time.monotonic()
        while (code := call(url, HI, timeout=30))[0] == 503 and time.monotonic() - start < 25:
            statuses.append((503, code[2]["Retry-After"]))
            time.sleep(float(code[2]["Retry-After"]))
        statuses.append((code[0], None))
        latencies.append(time.monotonic() - start)

    clients = [threading.Thread(target=small) for _ in range(6)]
    for c in clients:
        c.start()
    time.sleep(0.5)
    leaving.close()  # the expensive request's client goes away
    for c in clients:
        c.join(40)
    slow_answer = slow.recv(4096)
    assert oversized == 413
    assert slow_answer.startswith(b"HTTP/1.0 408")
    assert [s for s in statuses if s[0] != 503] == [(200, None)] * 6
    assert (503, "1") in statuses  # the queue held 2: the others were told to come back
    long_steps = [n for n, gone in steps.values() if gone and n > 3]
    assert long_steps and long_steps[0] < 200  # stopped far short of 480 tokens
    assert max(latencies) < 15
    with urllib.request.urlopen(url + "/models", timeout=10) as r:
        assert r.status == 200
    assert time.monotonic() - t0 < 30


def test_a_burst_is_answered_or_refused_never_reset(tiny_server):
    """Issue 24: 32 clients at once against --max-queue 8: each gets a 200 or a 503 with
    Retry-After; before, a burst beyond the listen backlog had connections reset."""
    from concurrent.futures import ThreadPoolExecutor

    url = tiny_server(ServeLimits(max_queue=8, retry_after=1))

    def one(_):
        try:
            code, _, headers = call(url, HI, timeout=60)
        except (ConnectionError, OSError) as e:  # a reset or refused connection
            return type(e).__name__, None
        return code, headers.get("Retry-After")

    with ThreadPoolExecutor(32) as pool:
        out = list(pool.map(one, range(32)))
    assert all(code in (200, 503) for code, _ in out), out
    assert all(retry == "1" for code, retry in out if code == 503)
    assert any(code == 200 for code, _ in out)
