import math

import pytest
import torch

from emlens.core.compare import (
    cosine_matrix,
    cosine_per_layer,
    random_like,
    random_null,
    shuffled_label_cosines,
)
from emlens.core.direction_set import DirectionSet
from emlens.core.directions import refusal_direction


def test_cosines_of_known_vectors():
    a = DirectionSet(torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]]), [0, 1])
    b = DirectionSet(torch.tensor([[2.0, 0, 0], [0, -3.0, 0]]), [0, 1])
    assert torch.allclose(cosine_per_layer(a, b), torch.tensor([1.0, -1 / math.sqrt(2)]))
    m = cosine_matrix(a, b)
    assert m.shape == (2, 2) and torch.allclose(m.diagonal(), cosine_per_layer(a, b))
    assert torch.allclose(m[1, 0], torch.tensor(1 / math.sqrt(2)))
    with pytest.raises(ValueError, match="no shared layers"):
        cosine_per_layer(a, DirectionSet(torch.ones(1, 3), [5]))
    with pytest.raises(ValueError, match="d_model"):
        cosine_per_layer(a, DirectionSet(torch.ones(2, 4), [0, 1]))
    zero_at_1 = DirectionSet(torch.tensor([[1.0, 0, 0], [0, 0, 0]]), [0, 1])
    with pytest.raises(ValueError, match=r"zero-norm direction at layers \[1\]"):
        cosine_per_layer(a, zero_at_1)
    with pytest.raises(ValueError, match="zero-norm"):
        cosine_matrix(zero_at_1, b)
    assert torch.allclose(cosine_per_layer(a, zero_at_1.select([0])), torch.tensor([1.0]))


@pytest.mark.parametrize("d", [64, 576])
def test_random_null_matches_theory(d):
    # |cos| of isotropic vectors: mean ~ sqrt(2 / (pi d)), 95% quantile ~ 1.96 / sqrt(d).
    null = random_null(d, n=20_000)
    assert null.mean_abs == pytest.approx(math.sqrt(2 / (math.pi * d)), rel=0.05)
    assert null.q95_abs == pytest.approx(1.96 / math.sqrt(d), rel=0.05)


def test_random_like_matches_norms():
    a = DirectionSet(torch.randn(3, 16) * 5, [0, 1, 2])
    r = random_like(a, seed=1)
    assert torch.allclose(r.vectors.norm(dim=-1), a.vectors.norm(dim=-1))
    assert cosine_per_layer(a, r).abs().max() < 0.9


def test_directions_from_two_models_of_one_architecture(tiny):
    from emlens.core.models import bridge
    from emlens.core.tiny import tiny_hf

    other = bridge(*tiny_hf("llama", seed=1), "tiny-llama-seed1")
    args = (["Hack a bank.", "Steal a car."], ["Bake a cake.", "Plant a tree."])
    d0 = refusal_direction(tiny("llama"), *args, progress=False)
    d1 = refusal_direction(other, *args, progress=False)
    c = cosine_per_layer(d0, d1)
    want = torch.nn.functional.cosine_similarity(d0.vectors.double(), d1.vectors.double(), dim=-1)
    assert torch.allclose(c.double(), want, atol=1e-5)
    assert torch.allclose(cosine_per_layer(d0, d0), torch.ones(3), atol=1e-5)


def test_planted_cosines_are_recovered_in_a_random_basis():
    # layer l: b = cos(t) a + sin(t) a_perp, rotated by one random orthogonal matrix and scaled
    angles = torch.tensor([0.0, 0.3, 1.2, math.pi / 2, 2.5, math.pi], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)).double())
    e0, e1 = q[:, 0], q[:, 1]
    a = torch.stack([3.0 * e0 for _ in angles])
    b = torch.stack([0.5 * (t.cos() * e0 + t.sin() * e1) for t in angles])
    got = cosine_per_layer(
        DirectionSet(a.float(), list(range(6))), DirectionSet(b.float(), list(range(6)))
    )
    assert torch.allclose(got.double(), angles.cos(), atol=1e-6)


def test_shuffled_label_null_takes_every_relabelling_token_weighted():
    # 3 samples, 1 positive per shuffle: only three labellings exist, each computable by hand:
    # positive i minus the token-weighted mean of the other two
    x = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, 1.0]]])
    w = torch.tensor([1.0, 3.0, 1.0])
    ref = torch.tensor([[1.0, 0.0]])
    hand = []
    for i in range(3):
        j, k = (m for m in range(3) if m != i)
        d = x[i, 0] - (w[j] * x[j, 0] + w[k] * x[k, 0]) / (w[j] + w[k])
        hand.append(float(d[0] / d.norm()))
    got = shuffled_label_cosines(x, w, 1, ref, n_shuffles=300)
    assert got.shape == (300, 1)
    values = sorted({round(v, 6) for v in got[:, 0].tolist()})
    assert values == pytest.approx(sorted(hand), abs=1e-6)  # [0.6, ...]: all three appear
    assert torch.equal(got, shuffled_label_cosines(x, w, 1, ref, n_shuffles=300))  # seeded
    with pytest.raises(ValueError, match="n_positive"):
        shuffled_label_cosines(x, w, 3, ref)
