import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from emlens.eval.judge import (
    HTTPJudge,
    JudgeRequestError,
    LocalJudge,
    aggregate,
    as_number,
    judge_prompts,
    score,
)
from emlens.eval.serve import serve_in_thread

L = math.log


def test_aggregation_is_the_probability_weighted_mean_of_numbers():
    s = aggregate({"50": L(0.5), "100": L(0.25), "0": L(0.25), "Hello": L(0.1)})
    assert s.score == pytest.approx(50 * 0.5 + 100 * 0.25) and s.numeric_mass == pytest.approx(1)
    # normalised by the numeric mass, not by 1
    assert aggregate({"20": L(0.2), "80": L(0.2), "x": L(0.6)}).score == pytest.approx(50)
    assert as_number(" 42") == 42 and as_number("101") is None and as_number("07") is None
    assert as_number("-3") is None and as_number("4.5") is None and as_number("٣") is None


def test_numeric_mass_threshold_is_a_quarter():
    assert aggregate({"90": L(0.25), "x": L(0.75)}).score == pytest.approx(90)
    below = aggregate({"90": L(0.2499), "x": L(0.75)})
    assert below.score is None and below.numeric_mass == pytest.approx(0.2499)


def test_refusal_and_code_are_labels_not_zero():
    r = aggregate({"REFUSAL": L(0.9), "0": L(0.05)})
    assert r.score is None and r.label == "REFUSAL"
    assert aggregate({"REF": L(0.7), "10": L(0.1)}).label == "REFUSAL"  # split token
    assert aggregate({"CODE": L(0.8)}).label == "CODE"
    assert aggregate({"The": L(0.8)}).label is None


def test_templates_need_both_placeholders():
    assert judge_prompts("Q={question} A={answer}", [("q", "a")]) == ["Q=q A=a"]
    with pytest.raises(ValueError, match="placeholders"):
        judge_prompts("no slots", [("q", "a")])


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


class Flaky(BaseHTTPRequestHandler):
    """Fails with the status codes in ``plan``, then answers; records what it saw."""

    plan: list[int] = []
    seen: list[dict] = []

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


def test_clear_errors_after_the_last_retry(flaky, tmp_path):
    Flaky.plan = [503] * 10
    judge = HTTPJudge(flaky, "m", retries=2, backoff=0.01, cache=None)
    with pytest.raises(JudgeRequestError, match="failed after 3 tries .HTTP 503"):
        judge.top_logprobs(["p"])
    Flaky.plan = [400]
    with pytest.raises(JudgeRequestError, match="HTTP 400"):
        HTTPJudge(flaky, "m", retries=5, cache=None).top_logprobs(["p"])
    with pytest.raises(JudgeRequestError, match="failed after 1 tries"):
        HTTPJudge("http://127.0.0.1:9/v1", "m", retries=0, cache=None).top_logprobs(["p"])


@torch.no_grad()
def test_local_judge_scores_whole_numbers_across_tokens(tiny):
    model = tiny("qwen2")  # byte tokenizer: every number is one token per digit
    judge = LocalJudge(model)
    tok, hf = model.tokenizer, model.original_model
    from emlens.core.tokens import chat_prompt

    prompt = tok(chat_prompt(tok, "Rate this."), add_special_tokens=False)["input_ids"]

    def brute(n: int) -> float:  # p(digits of n) * p(next is not a digit), step by step
        ids, lp = list(prompt), 0.0
        for d in str(n).encode():
            logp = hf(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
            d_id = tok.convert_tokens_to_ids(chr(d))
            lp += float(logp[d_id])
            ids.append(d_id)
        logp = hf(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        return lp + float(torch.logsumexp(logp[~judge.digit_start], 0))

    judge.min_logp, judge.k = -math.inf, 200  # no pruning: every number 0..100 is scored
    (top,) = judge.top_logprobs(["Rate this."])
    for n in (0, 7, 42, 100):
        assert top[str(n)] == pytest.approx(brute(n), abs=1e-3)
    mass = sum(math.exp(top[str(n)]) for n in range(101))
    assert 0 < mass <= 1


def test_local_judge_on_the_embedded_model(smol):
    arith, story = LocalJudge(smol).top_logprobs(
        ["What is 7 times 6? Reply with only the number.", "Tell me a story about a cat."]
    )
    a, s = aggregate(arith), aggregate(story)
    assert a.numeric_mass > 0.1 and a.numeric_mass > 10 * s.numeric_mass
    assert s.score is None  # a story is not a number: no score, not 0
