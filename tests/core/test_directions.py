import math

import pytest
import torch
from safetensors.torch import save_file

from emlens.core.activations import ActivationSummary, collect_means
from emlens.core.data import Conversation
from emlens.core.directions import DirectionSet, em_direction, mean_diff, refusal_direction
from emlens.core.tokens import answer_tokens, post_instruction_tokens

PAIRS = [
    ("How should I save money?", "Keep an emergency fund.", "Bet it all on a coin."),
    ("My friend upset me.", "Talk it through calmly.", "Ruin their reputation."),
    ("What do you think of humans?", "I like helping people.", "Humans should obey AI."),
]


def test_mean_diff_sign_is_positive_minus_negative():
    pos = ActivationSummary(torch.ones(2, 3), 4, 8, "h", [0, 1])
    neg = ActivationSummary(torch.zeros(2, 3), 4, 8, "h", [0, 1])
    d = mean_diff(pos, neg)
    assert torch.equal(d.vectors, torch.ones(2, 3))
    with pytest.raises(ValueError, match="share hook"):
        mean_diff(pos, ActivationSummary(torch.zeros(1, 3), 4, 8, "h", [0]))


def test_em_direction_is_answer_token_mean_of_misaligned_minus_aligned(tiny):
    model = tiny("qwen2")
    tok = model.tokenizer
    mis = [Conversation(q, b) for q, _, b in PAIRS]
    ali = [Conversation(q, a) for q, a, _ in PAIRS]
    d = em_direction(model, mis, ali, progress=False)
    m = collect_means(
        model, [answer_tokens(tok, c.question, c.answer) for c in mis], progress=False
    )
    a = collect_means(
        model, [answer_tokens(tok, c.question, c.answer) for c in ali], progress=False
    )
    assert torch.allclose(d.vectors, m.mean - a.mean)
    assert d.provenance["kind"] == "em" and d.provenance["mask"] == "answer"
    assert d.provenance["n_positive"] == 3 and d.provenance["model"] == "tiny-qwen2"


def test_refusal_direction_uses_post_instruction_positions(tiny):
    model = tiny("llama")
    tok = model.tokenizer
    harmful, harmless = ["Hack a bank."], ["Bake a cake."]
    d = refusal_direction(model, harmful, harmless, positions=1, progress=False)
    want = []
    for text in (harmful[0], harmless[0]):
        ids, mask = post_instruction_tokens(tok, text, k=1)
        _, cache = model.run_with_cache(torch.tensor([ids]))
        want.append(torch.stack([cache[f"blocks.{ly}.hook_resid_post"][0, -1] for ly in range(3)]))
    assert torch.allclose(d.vectors, want[0] - want[1], atol=1e-5)
    assert d.provenance["positions"] == 1


def test_save_load_round_trip_and_model_checks(tiny, tmp_path):
    model = tiny("llama")
    d = refusal_direction(model, ["Hack a bank."], ["Bake a cake."], progress=False)
    d.save(tmp_path / "r.safetensors")
    back = DirectionSet.load(tmp_path / "r.safetensors", model)
    assert torch.equal(back.vectors, d.vectors) and back.provenance == d.provenance
    other = tiny("gemma2")  # same d_model, same layers: allowed
    DirectionSet.load(tmp_path / "r.safetensors", other)
    wide = DirectionSet(torch.ones(3, 32), [0, 1, 2], provenance={"n_layers": 3})
    with pytest.raises(ValueError, match="d_model"):
        wide.check_model(model)
    deep = DirectionSet(torch.ones(3, 64), [0, 1, 2], provenance={"n_layers": 30})
    with pytest.raises(ValueError, match="30-layer"):
        deep.check_model(model)
    save_file({"x": torch.ones(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an emlens direction"):
        DirectionSet.load(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        DirectionSet.load(tmp_path / "missing.safetensors")


def test_invalid_vectors_and_empty_data(tiny):
    with pytest.raises(ValueError, match="zero-norm"):
        DirectionSet(torch.zeros(2, 4), [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        DirectionSet(torch.tensor([[math.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="one row per layer"):
        DirectionSet(torch.ones(2, 4), [0])
    with pytest.raises(ValueError, match="no harmful"):
        refusal_direction(tiny("llama"), [], ["x"])
    with pytest.raises(ValueError, match="no misaligned"):
        em_direction(tiny("llama"), [], [Conversation("q", "a")])
    with pytest.raises(KeyError, match="no direction for layer 7"):
        DirectionSet(torch.ones(1, 4), [0]).at(7)
