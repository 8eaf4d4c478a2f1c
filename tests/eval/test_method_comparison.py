"""The direction-method comparison: each measure against its definition, and a whole run on a
tiny model."""

import pytest
import torch

from emlens.core.data import general_questions
from emlens.core.direction_set import DirectionSet
from emlens.core.interventions import steer
from emlens.core.methods import Contrast
from emlens.eval.method_comparison import (
    compare_methods,
    held_out_auc,
    method_cosines,
    random_directions,
    split_by_question,
    steering_effects,
    top_coordinates,
)
from emlens.eval.metrics import contrastive_scores

pytestmark = pytest.mark.usefixtures("one_thread")


def test_split_by_question_is_disjoint_seeded_and_complete():
    fit, held = split_by_question(20, 0.25, seed=3)
    assert len(held) == 5 and sorted(fit + held) == list(range(20))
    assert split_by_question(20, 0.25, seed=3) == (fit, held)
    assert split_by_question(20, 0.25, seed=4) != (fit, held)
    with pytest.raises(ValueError, match="no fit or no held-out"):
        split_by_question(3, 0.1)


def test_held_out_auc_is_the_mann_whitney_probability():
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(2, 30, 1, 8, generator=g)
    pos[..., 0] += 1.0  # positives a little higher along axis 0
    c = Contrast(pos, neg, [4])
    v = torch.randn(1, 8, generator=g)
    sp, sn = pos[:, 0] @ v[0], neg[:, 0] @ v[0]
    ref = (sp[:, None] > sn[None, :]).float().mean()  # P(positive scores above negative)
    assert held_out_auc(c, DirectionSet(v, [4]))[0] == pytest.approx(float(ref), abs=1e-4)
    axis = DirectionSet(torch.eye(8)[:1], [4])
    assert held_out_auc(c, axis)[0] > 0.7 and held_out_auc(c, -axis)[0] < 0.3
    with pytest.raises(ValueError, match="layers"):
        held_out_auc(c, DirectionSet(v, [5]))


def test_method_cosines_pairs_every_method_once():
    a = DirectionSet(torch.randn(3, 8), [1, 2, 3])
    cos = method_cosines({"a": a, "b": -a, "c": 2 * a})
    assert list(cos) == ["a vs b", "a vs c", "b vs c"]
    assert cos["a vs b"] == [-1.0] * 3 and cos["a vs c"] == [1.0] * 3


def test_steering_effects_steer_at_the_matched_norm(tiny):
    model = tiny("llama")
    pairs = general_questions()[:4]
    d = DirectionSet(torch.randn(2, model.cfg.d_model), [0, 1])
    base, rows = steering_effects(model, pairs, {"d": d, "big": 10 * d}, [1], {1: 2.0}, scale=3.0)
    assert [r["method"] for r in rows] == ["d", "big"] and rows[0]["norm"] == 2.0
    assert rows[0]["shift"] == rows[1]["shift"]  # only the direction counts, not its norm
    unit = DirectionSet((d.at(1) / d.at(1).norm() * 2.0)[None], [1])
    ref = contrastive_scores(model, pairs, [steer(unit, 1, 3.0)])
    assert rows[0]["score"]["mean"] == pytest.approx(float(ref.mean()), abs=1e-4)
    assert base["mean"] == pytest.approx(float(contrastive_scores(model, pairs).mean()), abs=1e-4)
    assert rows[0]["shift"]["mean"] == pytest.approx(
        rows[0]["score"]["mean"] - base["mean"], abs=2e-4
    )


def test_top_coordinates_name_the_dominant_coordinate_and_its_share():
    v = torch.tensor([[3.0, 0.0, 4.0], [0.0, -2.0, 0.0]])
    top = top_coordinates(DirectionSet(v, [0, 1]))
    assert top == {"top_coordinate": [2, 1], "top_coordinate_share": [0.64, 1.0]}


def test_random_directions_are_seeded_unit_vectors():
    like = DirectionSet(torch.randn(2, 16), [3, 4])
    r = random_directions(like, seed=1)
    assert torch.allclose(r.vectors.norm(dim=-1), torch.ones(2))
    assert torch.equal(r.vectors, random_directions(like, seed=1).vectors)


def test_compare_methods_on_a_tiny_model(tiny):
    model = tiny("llama")
    pairs = general_questions()[:12]
    r = compare_methods(model, pairs, layers=[0, 1], steer_layers=[1], held_out=0.25)
    assert r.layers == [0, 1] and len(r.held_out) == 3 and not set(r.fit) & set(r.held_out)
    assert sorted(r.auc) == ["logistic_probe", "mean_difference", "pca_centred", "pca_uncentred"]
    assert all(len(v) == 2 and all(0 <= x <= 1 for x in v) for v in r.auc.values())
    assert len(r.cosine) == 6 and r.details["logistic_probe"]["folds"] == 5
    assert len(r.details["pca_centred"]["top_coordinate"]) == 2
    assert len(r.details["logistic_probe"]["held_out_accuracy"]) == 2
    assert [row["method"] for row in r.steering][-1] == "random" and len(r.steering) == 5
    assert len({row["norm"] for row in r.steering}) == 1  # every direction at the same norm
    assert r.to_dict()["baseline"]["n"] == 3
