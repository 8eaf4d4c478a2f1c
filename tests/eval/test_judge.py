import math

import pytest

from emlens.eval.judge_spec import make_judge
from emlens.eval.judges.http import HTTPJudge
from emlens.eval.judges.local import LocalJudge
from emlens.eval.judges.logprob import aggregate, judge_prompts
from emlens.eval.judges.top_logprobs import as_number

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


def test_make_judge_reads_the_cli_specs(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # the HTTP judge's default cache
    model = tiny("llama")
    local = make_judge("local", model=model)
    assert isinstance(local, LocalJudge) and local.model is model
    url = make_judge("https://example.invalid/v1", "gpt-4o")
    assert isinstance(url, HTTPJudge) and url.name == "gpt-4o"
    with pytest.raises(ValueError, match="judge model"):
        make_judge("https://example.invalid/v1")
    with pytest.raises(ValueError, match="local, local:SPEC, an http"):
        make_judge("gpt-4o")
    with pytest.raises(ValueError, match="needs the model"):
        make_judge("local")
