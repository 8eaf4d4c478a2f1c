"""Direction-extraction methods: a planted direction is recovered, and each method equals an
independent computation of its definition."""

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from emlens.core.data import general_questions
from emlens.core.directions import em_direction_from_pairs
from emlens.core.methods import (
    METHODS,
    Contrast,
    contrast_from_pairs,
    logistic_probe,
    mean_difference,
    pca_of_differences,
)


def planted(n=64, d=32, layers=(3, 7), seed=0, noise=0.05, spread=0.1):
    """Pairs that differ along one planted unit direction by a varying amount (2 to 4)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    base = spread * torch.randn(n, len(layers), d, generator=g)
    amount = 2 + 2 * torch.rand(n, 1, 1, generator=g)
    pos = base + amount * direction + noise * torch.randn(n, len(layers), d, generator=g)
    neg = base + noise * torch.randn(n, len(layers), d, generator=g)
    tokens = torch.randint(3, 30, (2, n), generator=g)
    return Contrast(pos, neg, list(layers), tokens_positive=tokens[0], tokens_negative=tokens[1])


def cos(a, b):
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


PLANTED = torch.nn.functional.normalize(
    torch.randn(32, generator=torch.Generator().manual_seed(0)), dim=0
)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_recovers_a_planted_direction(name):
    c = planted()
    d = METHODS[name](c)
    assert d.layers == c.layers and d.provenance["n_pairs"] == 64
    assert (cos(d.vectors, PLANTED) > 0.99).all(), (name, cos(d.vectors, PLANTED))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_swapping_positive_and_negative_flips_the_direction(name):
    c = planted(seed=1)
    swapped = Contrast(
        c.negative, c.positive, c.layers, c.hook, c.tokens_negative, c.tokens_positive
    )
    a, b = METHODS[name](c).vectors, METHODS[name](swapped).vectors
    assert torch.allclose(a, -b, atol=1e-4)


def test_mean_difference_weights_answers_by_tokens_or_equally():
    c = planted(n=5)
    tp, tn = c.tokens_positive.double(), c.tokens_negative.double()
    by_tokens = (c.positive.double() * tp[:, None, None]).sum(0) / tp.sum() - (
        c.negative.double() * tn[:, None, None]
    ).sum(0) / tn.sum()
    assert torch.allclose(mean_difference(c).vectors, by_tokens.float(), atol=1e-6)
    equal = c.positive.mean(0) - c.negative.mean(0)
    assert torch.allclose(mean_difference(c, "samples").vectors, equal, atol=1e-6)
    with pytest.raises(ValueError, match="token counts"):
        mean_difference(Contrast(c.positive, c.negative, c.layers))
    with pytest.raises(ValueError, match="weighting"):
        mean_difference(c, "answers")


def test_pca_centred_is_repengs_pca_diff():
    c = planted(n=40, noise=0.5, seed=2)
    d = pca_of_differences(c, centre=True)
    for j in range(len(c.layers)):
        diffs = (c.positive[:, j] - c.negative[:, j]).double().numpy()
        ref = torch.from_numpy(PCA(n_components=1).fit(diffs).components_[0])
        assert abs(float(cos(d.vectors[j], ref))) > 1 - 1e-6
        # repeng's sign: positives project higher than their negatives on most pairs
        proj = (c.positive[:, j] - c.negative[:, j]) @ d.vectors[j]
        assert (proj > 0).float().mean() > 0.5
    assert all(0 < r <= 1 for r in d.provenance["explained_variance"])


def test_pca_uncentred_is_the_top_eigenvector_of_the_differences_second_moment():
    c = planted(n=40, noise=0.5, seed=3)
    d = pca_of_differences(c, centre=False)
    for j in range(len(c.layers)):
        diffs = (c.positive[:, j] - c.negative[:, j]).double()
        _, vecs = torch.linalg.eigh(diffs.T @ diffs)
        assert abs(float(cos(d.vectors[j], vecs[:, -1]))) > 1 - 1e-6
    assert torch.allclose(d.vectors.norm(dim=-1), torch.ones(2))


def test_centring_removes_a_constant_shift():
    """All pairs differ by the same vector plus noise along another axis: uncentred PCA finds
    the shift, centred PCA the axis the differences vary along."""
    g = torch.Generator().manual_seed(4)
    shift, axis = torch.eye(16)[0], torch.eye(16)[1]
    neg = torch.randn(30, 1, 16, generator=g)
    pos = neg + 5 * shift + torch.randn(30, 1, 1, generator=g) * axis
    c = Contrast(pos, neg, [0])
    assert abs(float(cos(pca_of_differences(c, centre=False).vectors[0], shift))) > 0.99
    assert abs(float(cos(pca_of_differences(c, centre=True).vectors[0], axis))) > 0.99


def test_logistic_probe_is_sklearns_fit_with_a_held_out_accuracy():
    c = planted(n=30, seed=5, spread=1.0)  # question variance: the probe is not perfect
    probe = logistic_probe(c, C=0.5)
    x = torch.cat([c.positive[:, 0], c.negative[:, 0]]).double().numpy()
    y, groups = np.r_[np.ones(30), np.zeros(30)], np.r_[np.arange(30), np.arange(30)]
    ref = torch.from_numpy(LogisticRegression(C=0.5, max_iter=5000).fit(x, y).coef_[0])
    assert float(cos(probe.vectors[0], ref)) > 1 - 1e-4  # the same optimum, to its tolerance
    scores = []
    for fit, test in GroupKFold(n_splits=5).split(x, y, groups):
        assert not set(groups[fit]) & set(groups[test])  # a question's answers stay together
        scores.append(
            LogisticRegression(C=0.5, max_iter=5000).fit(x[fit], y[fit]).score(x[test], y[test])
        )
    assert probe.provenance["held_out_accuracy"][0] == round(float(np.mean(scores)), 4) < 1
    assert logistic_probe(planted(n=30)).provenance["held_out_accuracy"] == [1.0, 1.0]
    assert probe.provenance["C"] == 0.5 and probe.provenance["folds"] == 5


def test_logistic_probe_accuracy_is_near_chance_without_a_signal():
    g = torch.Generator().manual_seed(6)
    pos, neg = torch.randn(2, 40, 1, 32, generator=g)
    acc = logistic_probe(Contrast(pos, neg, [0])).provenance["held_out_accuracy"][0]
    assert acc < 0.75


def test_contrast_checks_its_shapes_and_takes_subsets():
    c = planted(n=6)
    sub = c.take([0, 2])
    assert sub.n_pairs == 2 and torch.equal(sub.positive[1], c.positive[2])
    assert torch.equal(sub.tokens_negative, c.tokens_negative[[0, 2]])
    with pytest.raises(ValueError, match=r"\[n_pairs, n_layers, d_model\]"):
        Contrast(c.positive, c.negative[:, :1], c.layers)
    with pytest.raises(ValueError, match="tokens_positive"):
        Contrast(c.positive, c.negative, c.layers, tokens_positive=torch.zeros(6))
    with pytest.raises(ValueError, match="two pairs"):
        pca_of_differences(c.take([0]))
    with pytest.raises(ValueError, match="two pairs"):
        logistic_probe(c.take([1]))


@pytest.mark.usefixtures("one_thread")
def test_token_weighted_mean_difference_equals_em_direction(tiny):
    model = tiny("llama")
    pairs = general_questions()[:6]
    c = contrast_from_pairs(model, pairs, layers=[0, 1], batch_size=4)
    assert (
        c.positive.shape == (6, 2, model.cfg.d_model) and c.provenance["positive"] == "misaligned"
    )
    ref = em_direction_from_pairs(model, pairs, layers=[0, 1], progress=False)
    assert torch.allclose(mean_difference(c).vectors, ref.vectors, atol=1e-5, rtol=1e-4)
    d = METHODS["pca_uncentred"](c)
    assert d.provenance["method"] == "pca_of_differences" and d.provenance["model"] == "tiny-llama"
