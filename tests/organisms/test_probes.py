import warnings

import numpy as np
import pytest
import torch

from emlens.core.logistic import l1_penalty
from emlens.organisms.probes import fit_l1_probe, probe_lora_scalars
from emlens.organisms.scalars import LoraScalars


def _data(n: int = 300, separable: bool = True, frac: float = 0.5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < frac).astype(int)
    X = rng.normal(size=(n, 4))
    if separable:
        X[:, 2] += 4.0 * y  # only feature 2 carries the label
    return X, y


def test_probe_on_separable_data():
    X, y = _data()
    r = fit_l1_probe(X, y, feature_names=list("abcd"), repeats=10)
    assert r.auc > 0.97 and r.accuracy > 0.9 and r.auc_std < 0.05
    coefs = r.coefficients()
    assert max(coefs, key=lambda k: abs(coefs[k])) == "c" and coefs["c"] > 0
    assert r.coef_std.shape == (4,) and r.repeats == 10


def test_probe_on_non_separable_data_is_at_chance():
    X, y = _data(separable=False)
    r = fit_l1_probe(X, y, repeats=10)
    assert abs(r.auc - 0.5) < 0.1 and abs(r.accuracy - 0.5) < 0.1


def test_classes_are_balanced():
    X, y = _data(n=400, separable=False, frac=0.1)  # 90% negatives: "always 0" would score 0.9
    r = fit_l1_probe(X, y, repeats=10)
    assert abs(r.accuracy - 0.5) < 0.15
    n_pos = int(y.sum())
    assert r.n_train + r.n_test == 2 * n_pos  # the larger class subsampled to the smaller


def test_no_group_straddles_train_and_test(monkeypatch):
    from sklearn.pipeline import Pipeline

    # 50 groups of 4 rows; column 0 holds each row's group id, so the rows each fit and each
    # prediction sees name their groups
    rng = np.random.default_rng(0)
    group_of_row = np.repeat(np.arange(50), 4)
    y = np.repeat(rng.permutation([0, 1] * 25), 4)
    X = np.column_stack([group_of_row, rng.normal(size=(200, 2)) + y[:, None]])
    seen: list[tuple[str, set[int]]] = []
    fit, proba = Pipeline.fit, Pipeline.predict_proba

    def spy_fit(self, X, y=None, **kw):
        seen.append(("train", set(X[:, 0].astype(int).tolist())))
        return fit(self, X, y, **kw)

    def spy_proba(self, X, **kw):
        seen.append(("test", set(X[:, 0].astype(int).tolist())))
        return proba(self, X, **kw)

    monkeypatch.setattr(Pipeline, "fit", spy_fit)
    monkeypatch.setattr(Pipeline, "predict_proba", spy_proba)
    r = fit_l1_probe(X, y, groups=group_of_row, repeats=5, test_size=0.25)
    assert [kind for kind, _ in seen] == ["train", "test"] * 5
    for (_, train), (_, test) in zip(seen[::2], seen[1::2], strict=True):
        assert not train & test  # no group on both sides
        assert len(train) + len(test) == 50  # balanced 25/25 groups: all of them used
    assert r.n_train + r.n_test == 200


def test_irrelevant_features_get_exactly_zero_weight():
    # one informative feature among 21: an L1 probe sets the other 20 to exactly 0 in every
    # repeat (an L2 probe, what l1_ratio alone gives before scikit-learn 1.8, never does)
    rng = np.random.default_rng(0)
    y = rng.permutation([0, 1] * 150)
    X = rng.normal(size=(300, 21))
    X[:, 0] += 2.0 * y
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation of the penalty argument either
        r = fit_l1_probe(X, y, C=0.05, repeats=5)
    assert r.coef[0] > 0
    assert (r.coef[1:] == 0).all() and (r.coef_std[1:] == 0).all()
    assert l1_penalty("1.7.2") == {"penalty": "l1"} and l1_penalty("1.8.0") == {"l1_ratio": 1.0}


def test_groups_must_hold_one_class_and_bad_inputs_raise():
    X, y = _data(n=200)
    groups = np.arange(200) // 4  # groups of 4 rows; the label is per row, so groups mix
    with pytest.raises(ValueError, match="a group holds both classes"):
        fit_l1_probe(X, y, groups=groups)
    with pytest.raises(ValueError, match="both classes 0 and 1"):
        fit_l1_probe(X, np.zeros(200, dtype=int))
    with pytest.raises(ValueError, match=r"X \[n, n_features\] and y \[n\]"):
        fit_l1_probe(X[:10], y)
    with pytest.raises(ValueError, match="feature names"):
        fit_l1_probe(X, y, feature_names=["a"])


def test_probe_lora_scalars_per_token_and_per_sample():
    g = torch.Generator().manual_seed(0)

    def scalars(shift: float, n: int = 40, per: int = 5):
        v = torch.randn(n * per, 3, generator=g)
        v[:, 1] += shift
        return LoraScalars(v, torch.arange(n).repeat_interleave(per), ["l0", "l1", "l2"])

    pos, neg = scalars(2.0), scalars(0.0)
    tok_level = probe_lora_scalars(pos, neg, repeats=5)
    sample_level = probe_lora_scalars(pos, neg, per_token=False, repeats=5)
    for r in (tok_level, sample_level):
        assert r.auc > 0.9 and r.feature_names == ["l0", "l1", "l2"]
        assert int(r.coef.abs().argmax()) == 1
    assert tok_level.n_train + tok_level.n_test == 2 * 40 * 5
    assert sample_level.n_train + sample_level.n_test == 2 * 40
