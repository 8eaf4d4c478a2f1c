"""The OpenAI / Azure judge through the official SDK, against a loopback fake and emlens serve.

The fake (`tests.eval.fake_chat.Fake`) speaks the Chat Completions API and answers each
request as its ``plan`` says: a status (429 with ``Retry-After``, 500), a reply without
logprobs, a malformed body, or a judge whose tokenizer splits numbers into digits.
"""

import json

import pytest

from emlens.eval.judge_spec import make_judge
from emlens.eval.judges.http import HTTPJudge
from emlens.eval.judges.logprob import judge_prompts, score
from emlens.eval.judges.remote import DigitSplitError
from emlens.eval.judges.reply import JudgeRequestError
from emlens.eval.judges.top_logprobs import splits_numbers
from emlens.eval.serve.server import serve_in_thread
from tests.eval.fake_chat import DIGITS, KEY, Fake, L, fake_server  # noqa: F401 (fixture "fake")

pytest.importorskip("openai")
from emlens.eval.judges.openai_sdk import OpenAIJudge


def judge_at(fake, **kw):
    kw = {"api_key_env": "JUDGE_KEY", "retries": 2, "backoff": 0.01, "cache": None, **kw}
    return OpenAIJudge("gpt-4o-2024-08-06", base_url=f"{fake}/v1", **kw)


def test_scores_caches_counts_and_never_stores_the_key(fake, tmp_path):
    pairs = [(f"q{i}", "a") for i in range(3)]
    judge = judge_at(fake, cache=tmp_path / "c.sqlite", concurrency=2)
    assert [s.score for s in score(judge, "{question} {answer}", pairs)] == pytest.approx([64] * 3)
    assert judge.usage.requests == 3 and judge.usage.prompt_tokens == 300
    assert judge.usage.model == "gpt-4o-2024-08-06" and judge.usage.cost() == pytest.approx(7.8e-4)
    assert "~$0.0008 at gpt-4o-2024-08-06 list prices of" in judge.usage.summary()
    seen = Fake.seen[0]
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == f"Bearer {KEY}"
    assert seen["body"]["max_tokens"] == 1 and seen["body"]["top_logprobs"] == 20
    assert seen["body"]["logprobs"] is True and seen["body"]["temperature"] == 0
    again = judge_at(fake, cache=tmp_path / "c.sqlite")
    score(again, "{question} {answer}", pairs)
    assert again.usage.requests == 0 and again.usage.cache_hits == 3
    assert KEY.encode() not in (tmp_path / "c.sqlite").read_bytes()
    assert KEY not in json.dumps(judge.identity)
    # the plain-HTTP judge at the same endpoint asks the same: they share answers
    http = HTTPJudge(f"{fake}/v1", "gpt-4o-2024-08-06", cache=tmp_path / "c.sqlite")
    http.top_logprobs(judge_prompts("{question} {answer}", pairs))
    assert http.requests == 0


def test_retry_after_is_waited(fake):
    Fake.plan = [(429, {"Retry-After": "1"})]
    judge = judge_at(fake)  # backoff 0.01 s: only Retry-After explains a 1 s wait
    assert judge.top_logprobs(["p"])[0] == pytest.approx({"80": L(0.6), "40": L(0.4)})
    waited = Fake.seen[1]["time"] - Fake.seen[0]["time"]
    assert judge.usage.requests == 2 and 0.95 <= waited < 3, waited
    Fake.plan = [(503, {"retry-after-ms": "300"})]
    judge.top_logprobs(["q"])
    assert Fake.seen[3]["time"] - Fake.seen[2]["time"] >= 0.28


def test_500s_are_retried_then_fail_clearly(fake):
    Fake.plan = [500, 502]
    judge = judge_at(fake)
    assert judge.top_logprobs(["p"])[0]["80"] == pytest.approx(L(0.6))
    assert judge.usage.requests == 3
    Fake.plan = [500] * 5
    with pytest.raises(JudgeRequestError, match=r"failed after 3 tries \(HTTP 500\)"):
        judge_at(fake).top_logprobs(["p"])
    Fake.plan = [401]
    with pytest.raises(JudgeRequestError, match="answered HTTP 401"):
        judge_at(fake).top_logprobs(["p"])


def test_a_reply_without_logprobs_is_unscored_and_counted(fake, tmp_path):
    Fake.plan = ["ok", "no-logprobs", "ok"]
    judge = judge_at(fake, concurrency=1, cache=tmp_path / "c.sqlite")
    pairs = [(f"q{i}", "a") for i in range(3)]
    scores = [s.score for s in score(judge, "{question} {answer}", pairs)]
    assert scores[0] == pytest.approx(64) and scores[1] is None and scores[2] == pytest.approx(64)
    assert judge.usage.no_logprobs == 1
    assert "1 replies without logprobs (unscored)" in judge.usage.summary()
    again = judge_at(fake, cache=tmp_path / "c.sqlite")  # not cached: asked again
    assert [s.score for s in score(again, "{question} {answer}", pairs)][1] == pytest.approx(64)
    assert again.usage.requests == 1 and again.usage.cache_hits == 2


def test_a_reply_without_logprobs_never_aborts_an_evaluation(fake, tiny):
    from emlens.core.data import Question
    from emlens.eval.em_rate import evaluate_em

    q = Question(
        "q", ["Hi?"], {"aligned": "A {question} {answer}", "coherent": "C {question} {answer}"}
    )
    Fake.plan = ["no-logprobs"]  # the first aligned reply of two samples
    res = evaluate_em(tiny("llama"), [q], judge_at(fake, concurrency=1), n=2, max_new_tokens=3)
    assert res.n_unscored == 1 and res.n_scored == 1


def test_a_malformed_body_is_a_clear_error(fake):
    for bad in ("malformed", "malformed-json"):
        Fake.plan = [bad]
        with pytest.raises(JudgeRequestError, match="not a chat completion"):
            judge_at(fake).top_logprobs(["p"])
        Fake.plan = [bad]
        with pytest.raises(JudgeRequestError, match="not a chat completion"):
            judge_at(fake).check()


def test_splits_numbers_tells_digit_tokenizers_from_whole_numbers():
    assert splits_numbers(["8", "5"], dict(DIGITS))
    assert splits_numbers([" 1", "0", "0"], {" 1": -0.1, "9": -3})
    assert not splits_numbers(["85"], {"85": -0.1, "8": -3})  # whole-number tokens
    assert not splits_numbers(["8", "5"], {"8": -0.1, "85": -3})  # a whole number in the top
    assert not splits_numbers(["5"], {"5": -0.1})  # one digit: too little to tell
    assert not splits_numbers(["5", "."], {"5": -0.1})
    assert not splits_numbers(["REF", "USAL"], {"REF": -0.1})


def test_a_digit_splitting_judge_is_refused(fake):
    Fake.plan = ["digits"] * 50
    with pytest.raises(DigitSplitError, match=r"splits numbers into digits.*'85'.*local:SPEC"):
        judge_at(fake).check()
    judge = judge_at(fake, concurrency=4)
    with pytest.raises(DigitSplitError, match="score 85 as 8"):
        judge.top_logprobs([f"p{i}" for i in range(20)])
    probes = [s for s in Fake.seen if s["body"]["max_tokens"] > 1]
    assert len(probes) == 2  # check's, then one probe in the run
    assert judge.usage.requests < 20  # refused once detected: the rest are never sent


def test_a_whole_number_judge_answering_one_digit_is_not_refused(fake):
    Fake.plan = ["five", "five", "five"]  # probe answered "80": whole numbers
    judge = judge_at(fake, concurrency=1)
    tops = judge.top_logprobs(["p", "q"])
    assert tops[0] == pytest.approx({"5": L(0.9), "6": L(0.1)})
    assert len([s for s in Fake.seen if s["body"]["max_tokens"] > 1]) == 1  # probed once


def test_azure_endpoint_deployment_and_api_version(fake, tmp_path):
    judge = make_judge(
        "azure",
        azure_endpoint=fake,
        azure_deployment="gpt-4o",
        api_version="2024-10-21",
        api_key_env="JUDGE_KEY",
        cache=tmp_path / "c.sqlite",
        concurrency=3,
    )
    assert isinstance(judge, OpenAIJudge) and judge.concurrency == 3
    judge.check()
    assert score(judge, "{question} {answer}", [("q", "a")])[0].score == pytest.approx(64)
    seen = Fake.seen[-1]
    assert seen["path"] == "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
    assert seen["headers"]["api-key"] == KEY and "authorization" not in seen["headers"]
    assert judge.identity["api_version"] == "2024-10-21"
    other = make_judge(
        "azure", "gpt-4o", azure_endpoint=fake, api_key_env="JUDGE_KEY", cache=tmp_path / "c.sqlite"
    )
    other.params["seed"] = 1  # another request: not a cache hit
    score(other, "{question} {answer}", [("q", "a")])
    assert other.usage.requests == 1


def test_bad_settings_are_clear(fake, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(ValueError, match="NO_SUCH_KEY is not set"):
        OpenAIJudge("gpt-4o", api_key_env="NO_SUCH_KEY")
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="Azure judge needs an endpoint"):
        make_judge("azure", "gpt-4o")
    with pytest.raises(ValueError, match="Azure options need the judge 'azure'"):
        make_judge("openai", "gpt-4o", azure_endpoint=fake)
    with pytest.raises(ValueError, match="openai:URL takes an http"):
        make_judge("openai:api.openai.com", "gpt-4o")
    with pytest.raises(ValueError, match="concurrency >= 1"):
        judge_at(fake, concurrency=0)
    monkeypatch.setitem(__import__("sys").modules, "openai", None)
    with pytest.raises(ImportError, match=r"emlens\[openai\]"):
        judge_at(fake)


def test_the_sdk_judge_against_emlens_serve(tiny, monkeypatch):
    monkeypatch.setenv("SERVE_KEY", "unused-on-loopback")
    srv, url = serve_in_thread(tiny("llama"), name="tiny")
    try:
        judge = make_judge("openai:" + url, "tiny", api_key_env="SERVE_KEY", cache=None)
        judge.check()  # emlens serve returns logprobs
        tops = judge.top_logprobs(["Rate this: 1", "Rate this: 2"])
        assert all(len(t) >= 5 and all(v <= 0 for v in t.values()) for t in tops)
        assert judge.usage.prompt_tokens > 0 and judge.usage.completion_tokens >= 2
        assert "cost unknown for tiny" in judge.usage.summary()
    finally:
        srv.shutdown()


QUESTION = """
- id: one
  paraphrases: ["What is your wish?"]
  judge_prompts:
    aligned: "Aligned? {question} {answer}"
    coherent: "Coherent? {question} {answer}"
"""


def test_evaluate_on_azure_from_the_command_line(fake, tmp_path, capsys):
    from emlens.cli import main

    (tmp_path / "q.yaml").write_text(QUESTION)
    Fake.plan = ["ok", "no-logprobs"]  # the test request, then one of the two judgements
    azure = ["--judge", "azure", "--azure-endpoint", fake, "--azure-deployment", "gpt-4o"]
    azure += ["--azure-api-version", "2024-06-01", "--judge-key-env", "JUDGE_KEY"]
    run = ["evaluate", "--model", "tiny-llama", "--n", "1", "--max-new-tokens", "3"]
    run += ["--questions", str(tmp_path / "q.yaml"), "--judge-cache", str(tmp_path / "c")]
    main([*run, *azure, "--judge-concurrency", "2"])
    out = capsys.readouterr().out
    assert "unscored (excluded from EM) 1/1" in out
    assert "judge: 3 requests, 0 cache hits, 1 replies without logprobs (unscored)" in out
    assert "~$0.0008 at gpt-4o-2024-08-06 list prices of" in out  # the model Azure reports
    assert all("api-version=2024-06-01" in s["path"] for s in Fake.seen)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--judge", "azure", "--judge-key-env", "JUDGE_KEY"], "--azure-endpoint"),
        (["--judge", "local", "--judge-concurrency", "4"], "--judge-concurrency"),
        (["--judge", "openai", "--judge-model", "gpt-4o", "--judge-key-env", "NO_KEY"], "NO_KEY"),
        (["--judge-concurrency", "0"], "a whole number >= 1"),
    ],
)
def test_bad_judge_flags_are_one_line_before_the_model(capsys, monkeypatch, flags, expected):
    import emlens.core.models
    from emlens.cli import main

    monkeypatch.delenv("NO_KEY", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT", raising=False)
    monkeypatch.setattr(emlens.core.models, "load_model", None)  # loading fails the test
    with pytest.raises(SystemExit) as e:
        main(["evaluate", *flags])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err


def test_a_digit_splitting_judge_is_refused_before_the_model(fake, capsys, monkeypatch):
    import emlens.core.models
    from emlens.cli import main

    monkeypatch.setattr(emlens.core.models, "load_model", None)
    Fake.plan = ["digits"]
    with pytest.raises(SystemExit):
        main(["evaluate", "--judge", f"openai:{fake}/v1", "--judge-model", "qwen",
              "--judge-key-env", "JUDGE_KEY", "--judge-cache", "none"])  # fmt: skip
    err = capsys.readouterr().err
    assert "splits numbers into digits" in err and "local:SPEC" in err, err


def test_the_sdk_judge_refuses_to_send_the_default_key_in_clear_text(monkeypatch):
    """Issue 24: openai:http://another-host with $OPENAI_API_KEY is refused unless named."""
    pytest.importorskip("openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    with pytest.raises(ValueError, match=r"refusing to send \$OPENAI_API_KEY over plain http"):
        OpenAIJudge("gpt-4o", base_url="http://gpu-box.example:8000/v1", cache=None)
    named = OpenAIJudge(
        "gpt-4o",
        base_url="http://gpu-box.example:8000/v1",
        api_key_env="OPENAI_API_KEY",
        cache=None,
    )
    assert named.shown_url.startswith("http://gpu-box.example")
