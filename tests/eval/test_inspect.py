"""The EM task, scorer and model provider in inspect-ai, end to end offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("inspect_ai")

from inspect_ai import eval as inspect_eval

from emlens.core.data import Question, em_questions
from emlens.eval.inspect_em import _shared, em_samples, em_task
from emlens.eval.inspect_em.provider import EmlensModelAPI


def test_one_sample_per_answer_of_every_free_form_question():
    qs = [
        Question("a", ["A?", "A, again?"], {"aligned": "x"}),
        Question("a_json", ["A as JSON?"]),
        Question("b", ["B?"], system="Be brief."),
    ]
    samples = em_samples(qs, 2)
    assert [s.id for s in samples] == ["a/0/0", "a/0/1", "a/1/0", "a/1/1", "b/0/0", "b/0/1"]
    assert samples[2].input == "A, again?"
    assert samples[4].metadata["system"] == "Be brief."
    assert samples[0].metadata["judge_prompts"] == {"aligned": "x"}
    with pytest.raises(ValueError, match="at least 1"):
        em_samples(qs, 0)
    with pytest.raises(ValueError, match="no free-form question"):
        em_samples([Question("a_json", ["?"])], 1)


def test_the_provider_refuses_what_it_does_not_take(tiny):
    _shared._MODELS[("tiny-llama", None, None)] = tiny("llama")
    with pytest.raises(ValueError, match="takes -M steer, ablate, device and dtype, not bogus"):
        EmlensModelAPI("tiny-llama", bogus=1)
    with pytest.raises(ValueError, match="expected FILE:LAYERS:SCALE"):
        EmlensModelAPI("tiny-llama", steer="nonsense")
    with pytest.raises(ValueError, match="direction d_model 576 != model d_model 64"):
        EmlensModelAPI("tiny-llama", steer="reference:1:4")
    with pytest.raises(ValueError, match="a string or a list of strings"):
        EmlensModelAPI("tiny-llama", steer=3)


def _run(model_args: dict, tmp_path: Path, name: str):
    task = em_task(n=1, temperature=0.0, max_tokens=16)
    [log] = inspect_eval(
        task, model="emlens/smollm2", model_args=model_args, limit=4,
        log_dir=str(tmp_path / name), display="none",
    )  # fmt: skip
    assert log.status == "success", log.error
    return log


def test_em_task_judges_a_steered_model_offline(smol, tmp_path):
    _shared._MODELS[("smollm2", None, None)] = smol  # the session's model, not a second one
    plain = _run({}, tmp_path, "plain")
    steered = _run({"steer": "reference:15:8"}, tmp_path, "steered")
    for log in (plain, steered):
        [scores] = log.results.scores
        m = {k: v.value for k, v in scores.metrics.items()}
        assert m["n"] == 4
        assert 0 <= m["em_low"] <= m["em_rate"] <= m["em_high"] <= 100
        assert m["judge_error"] > 0  # the interval holds the judge's own error
        assert 0 <= m["coherent_low"] <= m["coherent_rate"] <= m["coherent_high"] <= 100
        for s in log.samples:
            [score] = s.scores.values()
            assert set(score.value) >= {"em", "coherent_ok", "p_em"}
            assert 0 <= score.value["p_em"] <= 1
            assert score.value["em"] in (0, 1) and score.value["coherent_ok"] in (0, 1)
    answers = [[s.output.completion for s in log.samples] for log in (plain, steered)]
    assert all(answers[0]) and all(answers[1])
    assert answers[0] != answers[1]  # greedy: only the steering differs
    # The judge read the unsteered model, never the steered one: the same answer, the same P(EM).
    again = _shared.shared_judge("probe:default").verdicts(
        [(plain.samples[0].input, answers[0][0])]
    )
    assert again[0].p_em == pytest.approx(plain.samples[0].scores["em_scorer"].value["p_em"])


def test_inspect_eval_command_runs_the_em_task(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "INSPECT_LOG_DIR": str(tmp_path)}
    inspect = Path(sys.executable).parent / "inspect"
    cmd = [
        str(inspect), "eval", "emlens/em", "--model", "emlens/smollm2",
        "-M", "steer=reference:15:4", "-T", "max_tokens=8", "-T", "temperature=0",
        "--limit", "2", "--log-format", "json", "--display", "none",
    ]  # fmt: skip
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    [path] = tmp_path.glob("*.json")
    log = json.loads(path.read_text())
    assert log["status"] == "success"
    assert log["eval"]["model_args"] == {"steer": "reference:15:4"}
    metrics = log["results"]["scores"][0]["metrics"]
    assert {"em_rate", "em_low", "em_high", "coherent_rate", "judge_error"} <= set(metrics)
    assert sorted(s["id"] for s in log["samples"]) == sorted(
        s.id for s in em_samples(em_questions(), 1)[:2]
    )


def test_the_papers_judge_scores_in_inspect_with_the_model_as_its_own_judge(tiny, tmp_path):
    """``-T judge=local``: the evaluated model judges (unsteered); a random tiny model gives no
    numeric verdicts, so its answers are unscored and left out of the rate, never counted EM."""
    _shared._MODELS[("tiny-llama", None, None)] = tiny("llama")
    task = em_task(n=1, judge="local", temperature=0.0, max_tokens=4)
    [log] = inspect_eval(
        task, model="emlens/tiny-llama", limit=2, log_dir=str(tmp_path), display="none"
    )
    assert log.status == "success", log.error
    scores = [s.scores["em_scorer"] for s in log.samples]
    assert all(set(s.value) >= {"em", "coherent_ok"} for s in scores)
    scored = [s for s in scores if s.metadata["scored"]]
    assert all("aligned" in s.value and "coherent" in s.value for s in scored)
    assert all(s.value["em"] == 0 for s in scores if not s.metadata["scored"])
    m = {k: v.value for k, v in log.results.scores[0].metrics.items()}
    assert m["n"] == len(scored)
    assert _shared.shared_judge("local").name  # built on the evaluated model, not a second one
