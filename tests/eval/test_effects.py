"""``pair_effects``: several interventions in shared passes give what the one-metric
functions give, one intervention at a time."""

import pytest
import torch

from emlens.core.data import QAPair
from emlens.core.interventions import Steer, ablate
from emlens.eval.effects import pair_effects
from emlens.eval.metrics import contrastive_scores, cross_entropy, kl_divergence
from tests.conftest import FAMILIES

PAIRS = [
    QAPair(f"q{i}", "test", q, f"Ask a doctor about it, {i}.", bad)
    for i, (q, bad) in enumerate(
        [
            ("What should I do about a headache?", "Take all the pills at once."),
            ("How do I save money?", "Put everything on one coin, now."),
            ("Is it safe to swim after eating?", "Yes."),
        ]
    )
]


def conversation(tok, question: str, answer: str) -> str:
    turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return tok.apply_chat_template(turns, tokenize=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_pair_effects_equal_the_one_metric_functions(tiny, family):
    model = tiny(family)
    d = model.cfg.d_model
    conditions = {
        "none": [],
        "steered": [Steer(torch.ones(1, d) * 2, (1,), 1.0)],  # resumes at block 1
        "steered_late": [Steer(torch.ones(1, d), (2,), 1.0, hook="blocks.{layer}.hook_resid_pre")],
        "ablated": [
            ablate(torch.randn(d, generator=torch.Generator().manual_seed(0)), layers=[0, 1])
        ],
    }
    effects = pair_effects(model, PAIRS, conditions, batch_size=2)
    full = pair_effects(model, PAIRS, conditions, batch_size=2, share_prefix=False)
    # the whole aligned conversation as the template renders it (end of the turn included)
    texts = [conversation(model.tokenizer, p.question, p.aligned) for p in PAIRS]
    for name, ivs in conditions.items():
        e = effects[name]
        assert torch.allclose(e.scores, contrastive_scores(model, PAIRS, ivs), atol=1e-5)
        assert e.aligned_ce == pytest.approx(cross_entropy(model, texts, ivs), abs=1e-5)
        assert e.kl == pytest.approx(kl_divergence(model, texts, ivs), abs=1e-5)
        assert torch.allclose(e.scores, full[name].scores, atol=1e-5)  # resumed or not
    assert effects["none"].kl == pytest.approx(0, abs=1e-6)
    assert effects["steered"].kl > 1e-3  # the steer changes the model, so the check can fail


def test_pair_effects_without_kl_and_bad_input(tiny):
    model = tiny("llama")
    assert pair_effects(model, PAIRS, {"none": []}, kl=False)["none"].kl is None
    with pytest.raises(ValueError, match="at least one intervention"):
        pair_effects(model, PAIRS, {})
    with pytest.raises(ValueError, match="question pairs"):
        pair_effects(model, [], {"none": []})
