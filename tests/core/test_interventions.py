import pytest
import torch

from emlens.core._arch import writer_hooks
from emlens.core.direction_set import DirectionSet
from emlens.core.generation import generate
from emlens.core.interventions import Ablate, Steer, ablate, applied, steer
from emlens.core.models import load_model, save_hf
from emlens.core.orthogonalization import orthogonalize
from tests.conftest import FAMILIES


def _tokens(model, text="The quick brown fox jumps over the lazy dog."):
    return torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])


def _direction(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = model.cfg.n_layers
    return DirectionSet(torch.randn(n, model.cfg.d_model, generator=g), list(range(n)))


@pytest.mark.parametrize("family", FAMILIES)
def test_steer_adds_scale_times_vector(tiny, family):
    model = tiny(family)
    d = _direction(model)
    toks = _tokens(model)
    name = "blocks.1.hook_resid_post"
    _, base = model.run_with_cache(toks, names_filter=name)
    with applied(model, [steer(d, [1], scale=2.5)]):
        _, cache = model.run_with_cache(toks, names_filter=name)
    assert torch.allclose(cache[name] - base[name], 2.5 * d.at(1).expand_as(base[name]), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_ablation_leaves_no_projection_at_any_hooked_point(tiny, family):
    model = tiny(family)
    r = _direction(model).at(0)
    u = r / r.norm()
    names = []
    for layer in range(model.cfg.n_layers):
        names += [f"blocks.{layer}.hook_resid_pre", *writer_hooks(model, layer)]
    names.append(f"blocks.{model.cfg.n_layers - 1}.hook_resid_post")
    _, base = model.run_with_cache(_tokens(model), names_filter=names)
    with applied(model, [ablate(r)]):
        _, cache = model.run_with_cache(_tokens(model), names_filter=names)
    for n in names:
        assert (cache[n] @ u).abs().max() < 1e-4, n
    assert max((base[n] @ u).abs().max() for n in names) > 0.1  # there was something to remove


def _points(model, layers):
    """The hook points an ablation at ``layers`` touches: block inputs and block outputs."""
    return [n for ly in layers for n in (f"blocks.{ly}.hook_resid_pre", *writer_hooks(model, ly))]


def _run(model, interventions, names):
    with applied(model, interventions):
        _, cache = model.run_with_cache(_tokens(model), names_filter=names)
    return cache


@pytest.mark.parametrize("family", FAMILIES)
def test_ablation_of_one_layers_direction_at_chosen_layers(tiny, family):
    """ablate(ds, layer=2, layers=[1, 2]): L2's direction at layers 1 and 2, nothing at 0."""
    model = tiny(family)
    ds = _direction(model)
    u = ds.at(2) / ds.at(2).norm()
    names = _points(model, range(model.cfg.n_layers))
    base, cache = _run(model, [], names), _run(model, [ablate(ds, layer=2, layers=[1, 2])], names)
    for n in _points(model, [0]):
        assert torch.equal(cache[n], base[n]), n  # before the first ablated layer: untouched
    for n in _points(model, [1, 2]):
        assert (cache[n] @ u).abs().max() < 1e-4, n
        assert (base[n] @ u).abs().max() > 0.1, n  # there was something to remove


@pytest.mark.parametrize("family", FAMILIES)
def test_layerwise_ablation_removes_each_layers_own_direction_there_only(tiny, family):
    """ablate(ds, layers=[0, 2]): L0's direction at layer 0, L2's at layer 2, layer 1 free."""
    model = tiny(family)
    ds = _direction(model)
    u0, u1, u2 = (ds.at(ly) / ds.at(ly).norm() for ly in range(3))
    iv = ablate(ds, layers=[0, 2])
    assert iv.per_layer and iv.layers == (0, 2)
    names = _points(model, range(model.cfg.n_layers))
    cache = _run(model, [iv], names)
    for n in _points(model, [0]):
        assert (cache[n] @ u0).abs().max() < 1e-4, n
        assert (cache[n] @ u2).abs().max() > 0.1, n  # L2's direction is not removed at layer 0
    for n in writer_hooks(model, 1):  # layer 1 writes both directions again, unremoved
        assert (cache[n] @ u0).abs().max() > 0.1, n
        assert (cache[n] @ u1).abs().max() > 0.1, n
    for n in _points(model, [2]):
        assert (cache[n] @ u2).abs().max() < 1e-4, n
    # one intervention, the same as one single-layer ablation per layer
    separate = _run(
        model, [ablate(ds, layer=0, layers=[0]), ablate(ds, layer=2, layers=[2])], names
    )
    for n in names:
        assert torch.allclose(cache[n], separate[n], atol=1e-5), n


def test_ablate_arguments(tiny):
    model = tiny("llama")
    ds = _direction(model)
    everywhere = ablate(ds, layer=1)
    assert everywhere.layers is None and not everywhere.per_layer
    assert torch.equal(everywhere.directions, ds.at(1)[None])
    assert ablate(ds.at(1), layers=[0]).layers == (0,)
    with pytest.raises(ValueError, match="give layer="):
        ablate(ds)
    with pytest.raises(ValueError, match="tensor"):
        ablate(ds.at(1), layer=1)
    with pytest.raises(ValueError, match="empty"):
        ablate(ds, layers=[])
    zero = DirectionSet(torch.cat([torch.zeros(1, 64), ds.vectors[1:]]), ds.layers)
    with pytest.raises(ValueError, match=r"zero-norm direction at layers \[0\]"):
        ablate(zero, layers=[0, 1])
    with pytest.raises(ValueError, match="zero-norm"):
        ablate(zero, layer=0, layers=[2])
    ablate(zero, layers=[1, 2])  # the zero layer is not used
    with pytest.raises(ValueError, match="zero-norm"):
        steer(zero, [0, 1], 2.0)
    with pytest.raises(ValueError, match="one direction per layer"):
        Ablate(ds.vectors[:2], (0,), per_layer=True)
    with pytest.raises(ValueError, match="not one span"):
        ablate(ds, layers=[0, 1]).basis()
    with pytest.raises(ValueError, match="non-zero"):
        Ablate(torch.zeros(1, 64)).basis()


def test_orthogonalize_refuses_layer_restricted_ablation(tiny):
    model = tiny("llama")
    ds = _direction(model)
    with pytest.raises(ValueError, match="per-layer"):
        orthogonalize(model, ablate(ds, layers=[0, 1]))
    with pytest.raises(ValueError, match="every layer"):
        orthogonalize(model, ablate(ds, layer=1, layers=[1]))


def test_subspace_ablation(tiny):
    model = tiny("llama")
    d = _direction(model).vectors[:2]
    with applied(model, [Ablate(d)]):
        _, cache = model.run_with_cache(_tokens(model), names_filter="blocks.2.hook_resid_post")
    q, _ = torch.linalg.qr(d.T)
    assert (cache["blocks.2.hook_resid_post"] @ q).abs().max() < 1e-4
    with pytest.raises(ValueError, match="linearly dependent"):
        Ablate(torch.stack([d[0], 2 * d[0]])).basis()


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_weight_orthogonalization_equals_hook_ablation(tiny, family):
    model = tiny(family)  # qwen2 and qwen3 tie embeddings: orthogonalize must untie them
    r = _direction(model).at(1)
    toks = _tokens(model)
    edited = orthogonalize(model, r)
    with torch.no_grad(), applied(model, [ablate(r)]):
        want = model(toks)
    with torch.no_grad():
        got, plain = edited(toks), model(toks)
    assert (got - want).abs().max() < 1e-3 * want.abs().max()
    assert (plain - want).abs().max() > 1e-2  # ablation changed the model, the original is intact


def test_weight_orthogonalization_on_the_embedded_model(smol):
    r = torch.randn(smol.cfg.d_model, generator=torch.Generator().manual_seed(0))
    toks = _tokens(smol)
    edited = orthogonalize(smol, r)
    with torch.no_grad(), applied(smol, [ablate(r)]):
        want = smol(toks).log_softmax(-1)
    with torch.no_grad():
        got = edited(toks).log_softmax(-1)
    assert (got - want).abs().max() < 1e-2


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "smollm2"])
def test_orthogonalized_model_saved_as_hf_equals_hook_ablation(request, tiny, name, tmp_path):
    """The folder any engine loads (vLLM, transformers) carries the ablation."""
    model = request.getfixturevalue("smol") if name == "smollm2" else tiny(name)
    r = _direction(model).at(1)
    toks = _tokens(model)
    save_hf(orthogonalize(model, r), tmp_path / "ablated")
    reloaded = load_model(str(tmp_path / "ablated"))
    with torch.no_grad(), applied(model, [ablate(r)]):
        want = model(toks).log_softmax(-1)
    with torch.no_grad():
        got, plain = reloaded(toks).log_softmax(-1), model(toks).log_softmax(-1)
    assert (got - want).abs().max() < 1e-3
    assert (plain - want).abs().max() > 1e-1


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_orthogonalization_refuses_sandwich_norms(tiny, family):
    """A post-norm divides by the RMS of the whole block output, r's component included: a
    writer that cannot write r changes that RMS, so no weight edit equals the hooks."""
    with pytest.raises(ValueError, match="Gemma 2/3"):
        orthogonalize(tiny(family), torch.ones(64))


def test_hooks_are_removed_on_exit_and_on_errors(tiny):
    model = tiny("llama")
    toks = _tokens(model)
    with torch.no_grad():
        before = model(toks)
        with pytest.raises(RuntimeError, match="boom"):
            with applied(model, [steer(_direction(model), [0, 2], 3.0)]):
                raise RuntimeError("boom")
        after = model(toks)
    assert torch.equal(before, after)


def test_bad_interventions(tiny):
    model = tiny("llama")
    with pytest.raises(ValueError, match="width"):
        with applied(model, [Steer(torch.ones(1, 8), (0,), 1.0)]):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with applied(model, [Steer(torch.ones(1, 64), (9,), 1.0)]):
            pass
    with pytest.raises(ValueError, match="prompt length"):
        with applied(model, [Steer(torch.ones(1, 64), (0,), 1.0, "generated")]):
            pass
    with pytest.raises(ValueError, match="positions"):
        Steer(torch.ones(1, 64), (0,), 1.0, "some")
    with pytest.raises(TypeError, match="not an intervention"):
        with applied(model, ["steer"]):
            pass
    with pytest.raises(ValueError, match="non-zero"):
        ablate(torch.zeros(64))


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_steered_greedy_output_with_kv_cache_equals_without(smol, positions):
    em = _direction(smol, seed=3)
    iv = [steer(em, [10], 8.0, positions)]
    qs = ["Tell me a fun fact.", "What do you wish for?"]
    cached = generate(smol, qs, iv, max_new_tokens=12)
    uncached = generate(smol, qs, iv, max_new_tokens=12, use_kv_cache=False)
    base = generate(smol, qs, max_new_tokens=12)
    assert [s.answer for s in cached] == [s.answer for s in uncached]
    assert [s.answer for s in cached] != [s.answer for s in base]
