import math

import pytest
import torch
from safetensors.torch import save_file

from emlens.core.activations import ActivationSummary
from emlens.core.data import Conversation
from emlens.core.direction_set import DirectionSet
from emlens.core.directions import em_direction, mean_diff, refusal_direction
from emlens.core.tokens import post_instruction_tokens

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

    def answer_mean(convs):
        """Token-weighted mean of resid_post over answer tokens, from a plain cache: the answer
        located as its own token ids inside the chat-templated conversation (last match)."""
        total, n = torch.zeros(3, 64, dtype=torch.float64), 0
        for c in convs:
            msgs = [
                {"role": "user", "content": c.question},
                {"role": "assistant", "content": c.answer},
            ]
            ids = tok(tok.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)
            ids = ids["input_ids"]
            ans = tok(c.answer, add_special_tokens=False)["input_ids"]
            start = max(i for i in range(len(ids)) if ids[i : i + len(ans)] == ans)
            _, cache = model.run_with_cache(torch.tensor([ids]))
            for ly in range(3):
                act = cache[f"blocks.{ly}.hook_resid_post"][0, start : start + len(ans)]
                total[ly] += act.double().sum(0)
            n += len(ans)
        return total / n

    assert torch.allclose(d.vectors.double(), answer_mean(mis) - answer_mean(ali), atol=1e-4)
    assert d.provenance["kind"] == "em" and d.provenance["mask"] == "answer"
    assert d.provenance["n_positive"] == 3 and d.provenance["model"] == "tiny-qwen2"


def test_refusal_direction_uses_post_instruction_positions(tiny):
    model = tiny("llama")
    tok = model.tokenizer
    harmful, harmless = ["Hack a bank."], ["Bake a cake."]
    d = refusal_direction(model, harmful, harmless, positions=1, progress=False)
    want = []
    for text in (harmful[0], harmless[0]):
        ids, _ = post_instruction_tokens(tok, text, k=1)
        _, cache = model.run_with_cache(torch.tensor([ids]))
        want.append(torch.stack([cache[f"blocks.{ly}.hook_resid_post"][0, -1] for ly in range(3)]))
    assert torch.allclose(d.vectors, want[0] - want[1], atol=1e-5)
    assert d.provenance["positions"] == 1
    # the default is that one position, the last template token (Arditi et al.: one position)
    default = refusal_direction(model, harmful, harmless, progress=False)
    assert torch.equal(default.vectors, d.vectors)
    assert default.provenance["position_rule"].startswith("last template token")
    every = refusal_direction(model, harmful, harmless, positions=None, progress=False)
    assert every.provenance["positions"] == "all" and not torch.equal(every.vectors, d.vectors)


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
        DirectionSet(torch.zeros(2, 4), [0, 1]).unit()
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


def _set(rows, layers=(0, 1), **prov):
    return DirectionSet(torch.tensor(rows, dtype=torch.float32), list(layers), provenance=prov)


def test_arithmetic_gives_direction_sets_with_their_provenance():
    a = _set([[1.0, 2.0], [3.0, 4.0]], kind="em", model="org", n_layers=3)
    b = _set([[1.0, 0.0], [1.0, 1.0]], kind="em", model="base", n_layers=3)
    for got, want in [
        (a - b, [[0.0, 2.0], [2.0, 3.0]]),
        (a + b, [[2.0, 2.0], [4.0, 5.0]]),
        (2 * a, [[2.0, 4.0], [6.0, 8.0]]),
        (a * 2, [[2.0, 4.0], [6.0, 8.0]]),
        (a / 2, [[0.5, 1.0], [1.5, 2.0]]),
        (-a, [[-1.0, -2.0], [-3.0, -4.0]]),
    ]:
        assert isinstance(got, DirectionSet) and got.layers == [0, 1]
        assert torch.equal(got.vectors, torch.tensor(want))
    diff = a - b
    assert diff.provenance["operation"] == "subtract"
    assert diff.provenance["operands"] == [a.provenance, b.provenance]
    # what both operands say about the model is kept (check_model reads it); the rest is not
    assert diff.provenance["n_layers"] == 3 and "model" not in diff.provenance
    assert "kind" not in diff.provenance
    scaled = 3 * a
    assert scaled.provenance["operation"] == "multiply" and scaled.provenance["by"] == 3
    assert (a / 4).provenance["operation"] == "divide"
    assert (a / 4).provenance["operands"] == [a.provenance]
    nested = (a - b) * 2
    assert nested.provenance["operands"][0]["operands"][1] == b.provenance


def test_arithmetic_refuses_mismatched_sets():
    a = _set([[1.0, 2.0], [3.0, 4.0]], kind="em")
    with pytest.raises(ValueError, match=r"'em', \[0, 1\].*'refusal', \[0, 2\]"):
        a - _set([[1.0, 0.0], [1.0, 1.0]], layers=(0, 2), kind="refusal")
    other_hook = DirectionSet(a.vectors, [0, 1], "blocks.{layer}.hook_mlp_out")
    with pytest.raises(ValueError, match="hook"):
        a + other_hook
    with pytest.raises(TypeError):
        a + 1.0
    with pytest.raises(TypeError):
        a * a
    with pytest.raises(ZeroDivisionError):
        a / 0


def test_a_zero_layer_is_a_value_until_it_is_used_as_a_direction():
    """Organism minus base is zero below the first adapter: a set, but no unit direction."""
    base = _set([[1.0, 2.0], [3.0, 4.0]])
    organism = _set([[1.0, 2.0], [3.0, 5.0]])
    change = organism - base
    assert torch.equal(change.at(0), torch.zeros(2))
    assert torch.equal(change.select([1]).unit().vectors, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"zero-norm direction at layers \[0\]"):
        change.unit()
    change.check_nonzero([1])
    with pytest.raises(ValueError, match="zero-norm"):
        change.check_nonzero([0], "steer")


def test_unit_has_norm_one_and_records_it():
    u = _set([[3.0, 4.0], [0.0, -2.0]], kind="em").unit()
    assert torch.allclose(u.vectors, torch.tensor([[0.6, 0.8], [0.0, -1.0]]))
    assert u.provenance == {"kind": "em", "normalized": True}
