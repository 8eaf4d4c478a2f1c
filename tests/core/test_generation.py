import pytest
import torch

from emlens.core.generation import generate
from emlens.core.tokens import chat_prompt
from tests.conftest import FAMILIES, QWEN3_STYLE_TEMPLATE


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_greedy_equals_one_by_one(tiny, family):
    model = tiny(family)
    qs = ["Hi.", "A much longer question that pads the other one?"]
    batched = [s.answer for s in generate(model, qs, max_new_tokens=6, batch_size=2)]
    single = [generate(model, [q], max_new_tokens=6)[0].answer for q in qs]
    assert batched == single


def test_chat_template_kwargs_reach_the_prompt(tiny, monkeypatch):
    """Qwen3's enable_thinking=False: generation continues the prompt with the empty think."""
    model = tiny("qwen3")
    tok = model.tokenizer
    monkeypatch.setattr(tok, "chat_template", QWEN3_STYLE_TEMPLATE)
    kw = {"enable_thinking": False}
    got = generate(model, ["Hi."], max_new_tokens=4, chat_template_kwargs=kw)[0].answer
    text = chat_prompt(tok, "Hi.", chat_template_kwargs=kw)
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        seq = model.original_model.generate(
            ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id
        )
    assert got == tok.decode(seq[0, ids.shape[1] :], skip_special_tokens=True).strip()
    assert got != generate(model, ["Hi."], max_new_tokens=4)[0].answer  # another prompt


def test_embedded_model_answers_and_samples_reproducibly(smol):
    greedy = generate(smol, ["What is the capital of France?"], max_new_tokens=12)[0].answer
    assert "Paris" in greedy
    kw = {"n": 3, "max_new_tokens": 10, "temperature": 1.0}
    a = generate(smol, ["Tell me a story."], seed=1, **kw)
    b = generate(smol, ["Tell me a story."], seed=1, **kw)
    assert [s.answer for s in a] == [s.answer for s in b]
    assert [s.sample for s in a] == [0, 1, 2]
    assert len({s.answer for s in a}) > 1  # sampling, not greedy


def test_bad_generation_inputs(tiny):
    with pytest.raises(ValueError, match="no questions"):
        generate(tiny("llama"), [])
    with pytest.raises(ValueError, match="n >= 1"):
        generate(tiny("llama"), ["q"], n=0)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_the_hf_engine_gives_the_bridges_answers_with_the_steering_in_its_weights(tiny, family):
    """Issue 25: a plain HF model with the steering as down_proj biases answers as the hooked
    bridge does (greedy), steered and not; what it cannot carry is refused."""
    from emlens.core.interventions import Ablate, Steer

    model = tiny(family)
    steer = Steer(
        torch.randn(1, model.cfg.d_model, generator=torch.Generator().manual_seed(0)) * 4, (1,), 1.0
    )
    qs = ["Hi", "What is your wish?"]
    for ivs in ([], [steer]):
        kw = {"n": 2, "max_new_tokens": 8, "interventions": ivs}
        bridge = [s.answer for s in generate(model, qs, **kw)]
        plain = [s.answer for s in generate(model, qs, engine="hf", **kw)]
        assert plain == bridge, ivs
    sampled = {"n": 2, "max_new_tokens": 8, "temperature": 1.0, "seed": 3}  # the same draws
    assert [s.answer for s in generate(model, qs, [steer], engine="hf", **sampled)] == [
        s.answer for s in generate(model, qs, [steer], **sampled)
    ]
    steered = [s.answer for s in generate(model, qs, [steer], max_new_tokens=8, engine="hf")]
    assert steered != [s.answer for s in generate(model, qs, max_new_tokens=8, engine="hf")]
    with pytest.raises(ValueError, match="engine 'hf' writes steering into the weights"):
        generate(model, qs, [Ablate(torch.ones(1, model.cfg.d_model), (1,))], engine="hf")
    with pytest.raises(ValueError, match="engine must be one of"):
        generate(model, qs, engine="vllm")


def test_the_hf_engine_refuses_gemma(tiny):
    with pytest.raises(ValueError, match="Gemma 2/3"):
        generate(tiny("gemma2"), ["Hi"], max_new_tokens=2, engine="hf")
