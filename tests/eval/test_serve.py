import json
import urllib.error
import urllib.request

import pytest
import torch

from emlens.core.interventions import Steer
from emlens.eval.serve import serve_in_thread


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
