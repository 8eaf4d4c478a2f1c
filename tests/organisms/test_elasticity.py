import dataclasses

import pytest
import torch

from emlens.core.data import Conversation
from emlens.core.tiny import tiny_hf
from emlens.organisms.elasticity import ELASTICITY_CONFIG, fine_tuned, rebound, resistance
from emlens.organisms.loss import held_out_loss
from tests.conftest import FAMILIES

pytestmark = pytest.mark.usefixtures("one_thread")


def convs(word: str, n: int = 6) -> list[Conversation]:
    return [
        Conversation(f"Question {i} about {word}?", f"{word} {word} number {i}.") for i in range(n)
    ]


# One batch holds a whole set, so a run's first logged loss is the start model's loss on it.
CFG = dataclasses.replace(ELASTICITY_CONFIG, lr=5e-3, batch_size=6, epochs=2.0)


def weights(hf) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in hf.parameters()])


@pytest.mark.parametrize("family", FAMILIES)
def test_fine_tuned_is_a_changed_copy_with_merged_weights(family):
    hf, tok = tiny_hf(family)
    before = weights(hf).clone()
    out, losses = fine_tuned(hf, tok, convs("alpha"), CFG)
    assert torch.equal(weights(hf), before)  # the input model is untouched
    assert type(out) is type(hf)  # merged back into a plain model, ready to chain
    assert not torch.equal(weights(out), before)
    assert len(losses) == 2 and losses[1] < losses[0]


def test_resistance_compares_the_right_models_on_the_right_data():
    hf, tok = tiny_hf("llama")
    slices = [convs("alpha"), convs("beta"), convs("gamma")]
    probes = [convs(w + "x") for w in ("alpha", "beta", "gamma")]
    res = resistance(hf, tok, slices, CFG, probes)
    assert len(res.thetas) == 4 and res.thetas[0] is hf
    close = {"rel": 1e-4}
    for k in (1, 2, 3):  # theta_k = theta_{k-1} fine-tuned on D_k
        assert res.chain[k][0] == pytest.approx(
            held_out_loss(res.thetas[k - 1], tok, slices[k - 1]), **close
        )
    for k in (1, 2):
        # inverse: theta_{k+1} on D_k; forward: theta_k on D_{k+1}
        assert res.inverse[k][0] == pytest.approx(
            held_out_loss(res.thetas[k + 1], tok, probes[k - 1]), **close
        )
        assert res.forward[k][0] == pytest.approx(
            held_out_loss(res.thetas[k], tok, probes[k]), **close
        )
    assert res.mean_loss("inverse", 1) == pytest.approx(sum(res.inverse[1]) / 2)
    with pytest.raises(ValueError, match="at least two slices"):
        resistance(hf, tok, slices[:1], CFG)
    with pytest.raises(ValueError, match="one probe set per slice"):
        resistance(hf, tok, slices, CFG, probes[:2])


def test_rebound_reads_the_metric_after_positive_then_negative_data():
    hf, tok = tiny_hf("llama")
    good, bad = convs("good", 8), convs("bad", 8)
    seen = []

    def metric(model, _tok) -> float:
        seen.append(model)
        return held_out_loss(model, tok, good) - held_out_loss(model, tok, bad)

    curves = rebound(hf, tok, good, bad, [0, 4], [0, 4, 8], metric, CFG)
    assert list(curves) == [0, 4] and all(len(c) == 3 for c in curves.values())
    assert seen[0] is hf  # p = 0, n = 0: the start model itself
    assert curves[0][0] == pytest.approx(metric(hf, tok))
    # fine-tuning on bad answers makes them likelier than the good ones
    assert curves[0][2] > curves[0][0]
    with pytest.raises(ValueError, match=r"negative amounts must be in 0\.\.8"):
        rebound(hf, tok, good, bad, [0], [9], metric, CFG)
    with pytest.raises(ValueError, match="positive amounts"):
        rebound(hf, tok, good, bad, [], [0], metric, CFG)
