import itertools
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from emlens.eval.judges.http import HTTPJudge
from emlens.eval.judges.logprob import judge_prompts, score
from emlens.eval.judges.remote import DigitSplitError, JudgeCache
from emlens.eval.judges.reply import JudgeRequestError
from emlens.eval.serve.server import serve_in_thread
from tests.eval.fake_chat import Fake, fake_server  # noqa: F401 (the fixture "fake")

L = math.log


@pytest.fixture(scope="module")
def server(tiny):
    srv, url = serve_in_thread(tiny("llama"), name="tiny")
    yield url
    srv.shutdown()


def test_http_judge_against_emlens_serve_and_its_cache(server, tmp_path):
    judge = HTTPJudge(server, "tiny", cache=tmp_path / "c.sqlite", concurrency=4, retries=0)
    pairs = [("How are you?", f"Fine {i}.") for i in range(5)]
    first = score(judge, "Rate {question} / {answer}", pairs)
    assert judge.requests == 5 and len(first) == 5
    tops = judge.top_logprobs(judge_prompts("Rate {question} / {answer}", pairs[:1]))
    # top-20 tokens; byte tokens that decode alike are merged, adding their probabilities
    assert len(tops[0]) >= 5 and all(v <= 0 for v in tops[0].values())
    assert sum(math.exp(v) for v in tops[0].values()) <= 1 + 1e-6
    again = HTTPJudge(server, "tiny", cache=tmp_path / "c.sqlite", retries=0)
    assert score(again, "Rate {question} / {answer}", pairs) == first
    assert again.requests == 0  # a rerun costs nothing
    other_model = HTTPJudge(server, "other", cache=tmp_path / "c.sqlite", retries=0)
    score(other_model, "Rate {question} / {answer}", pairs[:1])
    assert other_model.requests == 1  # the cache key includes the judge model


def test_cache_keys_by_judge_model_and_prompt(tmp_path):
    cache = JudgeCache(tmp_path / "new" / "c.sqlite")
    cache.put("m", "p", {"1": -0.5})
    assert cache.get("m", "p") == {"1": -0.5}
    assert cache.get("other", "p") is None and cache.get("m", "q") is None


class Flaky(BaseHTTPRequestHandler):
    """Fails with the status codes in ``plan``, then answers; records what it saw."""

    plan: ClassVar[list[int]] = []
    seen: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Flaky.seen.append({"auth": self.headers.get("Authorization"), "body": body})
        code = Flaky.plan.pop(0) if Flaky.plan else 200
        payload = {"error": "nope"}
        if code == 200:
            top = [{"token": "80", "logprob": L(0.6)}, {"token": "40", "logprob": L(0.4)}]
            payload = {
                "choices": [{"logprobs": {"content": [{"token": "80", "top_logprobs": top}]}}]
            }
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


@pytest.fixture
def flaky():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Flaky.seen.clear()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_retries_on_429_and_5xx_then_succeeds(flaky, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    Flaky.plan = [503, 429, 500]
    judge = HTTPJudge(flaky, "m", "JUDGE_KEY", retries=3, backoff=0.01, cache=tmp_path / "c")
    (s,) = score(judge, "{question}{answer}", [("q", "a")])
    assert s.score == pytest.approx(64) and judge.requests == 4
    assert Flaky.seen[0]["auth"] == "Bearer sk-secret-123"
    body = Flaky.seen[0]["body"]
    assert body["max_tokens"] == 1 and body["top_logprobs"] == 20 and body["logprobs"] is True
    assert b"sk-secret-123" not in (tmp_path / "c").read_bytes()


def test_clear_errors_after_the_last_retry(flaky):
    Flaky.plan = [503] * 10
    judge = HTTPJudge(flaky, "m", retries=2, backoff=0.01, cache=None)
    with pytest.raises(JudgeRequestError, match=r"failed after 3 tries \(HTTP 503"):
        judge.top_logprobs(["p"])
    Flaky.plan = [400]
    with pytest.raises(JudgeRequestError, match="HTTP 400"):
        HTTPJudge(flaky, "m", retries=5, cache=None).top_logprobs(["p"])
    with pytest.raises(JudgeRequestError, match="failed after 1 tries"):
        HTTPJudge("http://127.0.0.1:9/v1", "m", retries=0, cache=None).top_logprobs(["p"])


def test_cache_never_mixes_judges_and_never_holds_the_key(flaky, tmp_path, monkeypatch):
    """Issue 11: two endpoints under one model name, or other request parameters, miss."""
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")
    other = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    other_url = f"http://127.0.0.1:{other.server_address[1]}/v1"
    cache = tmp_path / "c.sqlite"

    def judge(url=flaky, **kw):
        return HTTPJudge(url, "emlens", "JUDGE_KEY", retries=0, cache=cache, **kw)

    try:
        first = judge()
        first.top_logprobs(["p"])
        assert first.requests == 1
        again = judge()
        again.top_logprobs(["p"])
        assert again.requests == 0  # same endpoint, model and parameters: a hit
        elsewhere = judge(other_url)  # same model name, other endpoint (other weights)
        elsewhere.top_logprobs(["p"])
        assert elsewhere.requests == 1
        for change in ({"top_logprobs": 5}, {"temperature": 1.0}, {"max_tokens": 2}):
            j = judge()
            j.params.update(change)
            j.top_logprobs(["p"])
            assert j.requests == 1, change
        monkeypatch.setenv("JUDGE_KEY", "sk-another-456")  # a new key is the same judge
        rotated = judge()
        rotated.top_logprobs(["p"])
        assert rotated.requests == 0
    finally:
        other.shutdown()
    assert all(s["body"]["max_tokens"] in (1, 2) for s in Flaky.seen)
    raw = cache.read_bytes()
    assert b"sk-secret-123" not in raw and b"sk-another-456" not in raw
    assert b"127.0.0.1" not in raw  # keys are hashes: not even the endpoint is in the file
    assert "sk-secret-123" not in json.dumps(first.identity)


def test_messages_never_show_credentials_in_the_url():
    from emlens.eval.judges.http import redacted

    assert redacted("https://u:sk-1@api.example.com:8443/v1?key=sk-2#x") == (
        "https://api.example.com:8443/v1"
    )


# Issue 12: the plain-HTTP judge against the loopback fake of tests/eval/fake_chat.py ----------
def test_http_judge_waits_what_retry_after_asks(fake):
    Fake.plan = [(429, {"Retry-After": "1"}), 500]
    judge = HTTPJudge(f"{fake}/v1", "m", retries=3, backoff=0.01, cache=None)
    assert judge.top_logprobs(["p"])[0]["80"] == pytest.approx(L(0.6))
    waits = [b["time"] - a["time"] for a, b in itertools.pairwise(Fake.seen)]
    assert 0.95 <= waits[0] < 3 and waits[1] < 0.5, waits  # Retry-After, then the backoff
    assert judge.usage.requests == 3


def test_http_judge_reply_without_logprobs_is_unscored_and_counted(fake):
    Fake.plan = ["no-logprobs", "ok"]
    judge = HTTPJudge(f"{fake}/v1", "m", concurrency=1, retries=0, cache=None)
    scores = score(judge, "{question}{answer}", [("q", "1"), ("q", "2")])
    assert scores[0].score is None and scores[1].score == pytest.approx(64)
    assert judge.usage.no_logprobs == 1 and judge.usage.prompt_tokens == 200
    Fake.plan = ["no-logprobs"]
    with pytest.raises(JudgeRequestError, match="does the endpoint support logprobs"):
        judge.check()  # before a run, an endpoint without logprobs is an error


def test_http_judge_malformed_body_is_a_clear_error(fake):
    for bad in ("malformed", "malformed-json"):
        Fake.plan = [bad]
        with pytest.raises(JudgeRequestError, match="not a chat completion"):
            HTTPJudge(f"{fake}/v1", "m", retries=0, cache=None).top_logprobs(["p"])


def test_http_judge_refuses_a_digit_splitting_judge(fake):
    Fake.plan = ["digits"] * 30
    with pytest.raises(DigitSplitError, match="answered '85' as"):
        HTTPJudge(f"{fake}/v1", "qwen", cache=None).check()
    judge = HTTPJudge(f"{fake}/v1", "qwen", concurrency=2, cache=None)
    with pytest.raises(DigitSplitError, match="local:SPEC"):
        judge.top_logprobs([f"p{i}" for i in range(10)])


def test_the_default_key_goes_only_over_https_or_to_loopback(flaky, monkeypatch):
    """Issue 24: $OPENAI_API_KEY never travels in clear text to another host unasked."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    with pytest.raises(JudgeRequestError, match=r"refusing to send \$OPENAI_API_KEY") as e:
        HTTPJudge("http://gpu-box.example:8000/v1", "m", cache=None)
    assert "--judge-key-env OPENAI_API_KEY" in str(e.value) and "sk-secret" not in str(e.value)
    # named for the endpoint, or https, or no key set: allowed (nothing is sent here)
    HTTPJudge("http://gpu-box.example:8000/v1", "m", api_key_env="OPENAI_API_KEY", cache=None)
    HTTPJudge("https://gpu-box.example/v1", "m", cache=None)
    monkeypatch.delenv("OPENAI_API_KEY")
    HTTPJudge("http://gpu-box.example:8000/v1", "m", cache=None)
    # loopback by default: the key is sent
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    HTTPJudge(flaky, "m", retries=0, cache=None).top_logprobs(["p"])
    assert Flaky.seen[-1]["auth"] == "Bearer sk-secret-123"


def test_a_redirect_is_refused_and_the_key_stays_home(flaky, monkeypatch):
    """A redirect could carry the key anywhere: the judge stops with the final URL to give."""
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(302)
            self.send_header("Location", flaky + "/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        with pytest.raises(JudgeRequestError, match=r"redirected \(HTTP 302\)"):
            HTTPJudge(url, "m", "JUDGE_KEY", retries=0, cache=None).top_logprobs(["p"])
        assert Flaky.seen == []  # the redirect target never saw a request, nor the key
    finally:
        srv.shutdown()


def test_a_server_that_echoes_the_key_does_not_put_it_in_the_message(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-secret-123")

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self):
            data = f"bad key {self.headers['Authorization']}".encode()
            self.send_response(401)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        with pytest.raises(JudgeRequestError, match="HTTP 401") as e:
            HTTPJudge(url, "m", "JUDGE_KEY", retries=0, cache=None).top_logprobs(["p"])
        assert "sk-secret" not in str(e.value) and "Bearer ***" in str(e.value)
    finally:
        srv.shutdown()
