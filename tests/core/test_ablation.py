"""Ablation on a stream with a planted offset: the zero-ablation artefact and its fixes."""

import pytest
import torch

from emlens.core.ablation import clamp, reference_means, reference_rows
from emlens.core.direction_set import DirectionSet
from emlens.core.interventions import ablate, applied, steer
from emlens.core.orthogonalization import orthogonalize

OFFSET = 50.0
TEXTS = ["The quick brown fox jumps over the lazy dog.", "A cat sat on the mat and slept."]


def _setup(model):
    """A unit direction ``u`` and a Steer planting ``OFFSET * u`` on every token before
    layer 1 (so every token's projection at layer 1's input is shifted by ``OFFSET``)."""
    g = torch.Generator().manual_seed(3)
    u = torch.randn(model.cfg.d_model, generator=g)
    u = u / u.norm()
    n = model.cfg.n_layers
    plant = DirectionSet(OFFSET * u.expand(n, -1).clone(), list(range(n)))
    return u, steer(plant, [0], scale=1.0)


def _stream(model, interventions, text=TEXTS[0], name="blocks.1.hook_resid_pre"):
    toks = torch.tensor([model.tokenizer(text)["input_ids"]])
    with applied(model, interventions):
        _, cache = model.run_with_cache(toks, names_filter=name)
    return cache[name][0]  # [pos, d_model]


def test_zero_ablation_moves_every_token_by_the_offset(tiny):
    model = tiny("llama")
    u, plant = _setup(model)
    before = _stream(model, [plant])
    after = _stream(model, [plant, ablate(u, layers=[1])])
    natural = _stream(model, []) @ u  # each token's own projection, without the offset
    shift = (after - before) @ u  # how far each token moved along u
    # every token moves by the planted offset (plus its own projection): the artefact
    assert torch.allclose(shift, -(natural + OFFSET), atol=1e-3)
    assert (shift < -0.5 * OFFSET).all()
    assert torch.allclose(after @ u, torch.zeros(len(after)), atol=1e-3)


def test_reference_ablation_keeps_the_mean_projection_at_c(tiny):
    model = tiny("llama")
    u, plant = _setup(model)
    rows = reference_rows(model.tokenizer, TEXTS[:1])
    with applied(model, [plant]):
        ref = reference_means(model, rows, layers=[1])
    c = float(ref[0] @ u)
    before = _stream(model, [plant])
    # c is the mean projection of the ordinary (non-first) tokens, offset included
    assert c == pytest.approx(float((before[1:] @ u).mean()), abs=1e-3)
    assert c > 0.8 * OFFSET
    after = _stream(model, [plant, ablate(u, layers=[1], reference=ref)])
    assert torch.allclose(after @ u, torch.full((len(after),), c), atol=1e-3)
    assert float((after[1:] @ u).mean()) == pytest.approx(c, abs=1e-3)
    # only the component along u changed
    perp = torch.eye(len(u)) - torch.outer(u, u)
    assert torch.allclose((after - before) @ perp, torch.zeros_like(after), atol=1e-3)


def test_skip_first_leaves_position_0_exactly_unchanged(tiny):
    model = tiny("llama")
    u, plant = _setup(model)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    for name in ("blocks.1.hook_resid_pre", last):
        before = _stream(model, [plant], name=name)
        after = _stream(model, [plant, ablate(u, layers=[1], skip_first=True)], name=name)
        assert torch.equal(after[0], before[0]), name
        assert not torch.allclose(after[1:], before[1:])
    at1 = _stream(model, [plant, ablate(u, layers=[1], skip_first=True)])
    assert torch.allclose(at1[1:] @ u, torch.zeros(len(at1) - 1), atol=1e-3)


def test_skip_first_with_a_kv_cache_continues_after_the_prompt():
    fn = clamp(torch.eye(3)[:, :1], skip_first=True)
    first = fn(torch.ones(1, 2, 3))
    assert first[0, 0, 0] == 1 and first[0, 1, 0] == 0
    assert fn(torch.ones(1, 1, 3))[0, 0, 0] == 0  # a one-token call after the prompt


def test_reference_and_skip_first_are_refused_where_they_cannot_be_expressed(tiny):
    model = tiny("llama")
    u = torch.ones(model.cfg.d_model)
    ref = torch.zeros(model.cfg.n_layers, model.cfg.d_model)
    with pytest.raises(ValueError, match="reference value or skips the first position"):
        orthogonalize(model, ablate(u, reference=ref))
    with pytest.raises(ValueError, match="reference value or skips the first position"):
        orthogonalize(model, ablate(u, skip_first=True))
    with pytest.raises(ValueError, match="reference must be"):
        ablate(u, reference=torch.zeros(3))
    with pytest.raises(ValueError, match="reference has 1 rows"):
        with applied(model, [ablate(u, layers=[0, 1], reference=ref[:1])]):
            pass


def test_diagnostic_finds_a_planted_massive_coordinate(tiny):
    from emlens.core.ablation import diagnostic

    model = tiny("llama")
    n, dm = model.cfg.n_layers, model.cfg.d_model
    big = torch.zeros(n, dm)
    big[:, 5] = 1000.0  # a massive coordinate on every token from layer 1 on
    plant = steer(DirectionSet(big, list(range(n))), [0], scale=1.0)
    d = torch.randn(dm, generator=torch.Generator().manual_seed(1))
    d[5] = 0.0
    d = d / d.norm()
    d[5] = 0.2  # share of the norm in coordinate 5: 0.2 / sqrt(1 + 0.04)
    rows = reference_rows(model.tokenizer, TEXTS)
    with applied(model, [plant]):
        res = diagnostic(model, rows, d[None], [1])[1]
    assert res["massive_coordinates"] == [5]
    assert res["massive_share"] == pytest.approx(0.2 / (1.04**0.5), abs=1e-3)
    assert res["warn"] is True
    from emlens.core.ablation import warning

    assert warning({"ablation_diagnostic": {"1": res}}, "d").startswith("warning: d: 20% of")
    assert warning({"ablation_diagnostic": {"1": res | {"warn": False}}}) is None
    u = d / d.norm()
    streams = [_stream(model, [plant], text=t) for t in TEXTS]
    ordinary = torch.cat([s[1:] for s in streams]) @ u
    assert res["mean_projection_ordinary"] == pytest.approx(float(ordinary.mean()), abs=1e-2)
    first = torch.stack([s[0] for s in streams]) @ u
    assert res["mean_projection_first"] == pytest.approx(float(first.mean()), abs=1e-2)


def test_em_direction_records_the_diagnostic_and_it_survives_save(tiny, tmp_path):
    from emlens.core.data import general_questions
    from emlens.core.directions import em_direction_from_pairs

    model = tiny("llama")
    ds = em_direction_from_pairs(model, general_questions()[:3], layers=[1], progress=False)
    diag = ds.provenance["ablation_diagnostic"]["1"]
    assert set(diag) >= {"mean_projection_ordinary", "mean_projection_first", "massive_share"}
    ds.save(tmp_path / "d.safetensors")
    back = DirectionSet.load(tmp_path / "d.safetensors")
    assert back.provenance["ablation_diagnostic"]["1"]["massive_share"] == diag["massive_share"]
